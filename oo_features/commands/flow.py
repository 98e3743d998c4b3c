"""`oo-features flow`: run the streaming feature flow (Kafka or an event-log file -> store)."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys

from connectors.batching import KAFKA_BATCH_SIZE
from flows.coalescing import CATCHUP_FLUSH_INTERVAL_S, FLUSH_INTERVAL_S
from oo_features.errors import CommandError

RECOVERY_PARTITIONS = 64
"""About 1,500 users a partition at 100,000 users: resume stays within seconds (ADR 0007)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "flow",
        help="run the Bytewax feature flow",
        description="Consume oo.signals.v1 and oo.feedback.v1 (or an event-log file with --from), "
        "keep every user's features current in the store; bad events go to oo.deadletter.v1 "
        "(or a rejects file).",
    )
    p.add_argument(
        "--from", dest="event_log", metavar="FILE", help="read an event-log file instead of Kafka"
    )
    p.add_argument("--rejects", help="rejects file for --from (default FILE.rejects.jsonl)")
    p.add_argument("--bootstrap", help="override OO_KAFKA_BOOTSTRAP")
    p.add_argument("--store-url", help="override OO_STORE_URL")
    p.add_argument("--topic-prefix", help="override OO_TOPIC_PREFIX")
    p.add_argument("--key-prefix", help="override OO_KEY_PREFIX")
    p.add_argument("-w", "--workers", type=int, default=1, help="worker threads per process")
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="start this many local processes as one Bytewax cluster (loopback addresses)",
    )
    p.add_argument("-i", "--process-id", type=int, help="this process's index in --addresses")
    p.add_argument(
        "-a", "--addresses", help="semicolon-separated host:port of every cluster process"
    )
    p.add_argument("--recovery-dir", help="Bytewax recovery directory (snapshots, resume offsets)")
    p.add_argument(
        "--recovery-partitions",
        type=int,
        default=RECOVERY_PARTITIONS,
        help="SQLite partitions of a new --recovery-dir (fixed once created; an existing "
        "directory keeps its own). Bytewax's resume reads each partition's snapshots in pages "
        "with a query whose cost grows with the square of the users it holds: more partitions, "
        "faster resume (BENCHMARKS.md, Resume). Default %(default)s",
    )
    p.add_argument(
        "--epoch-interval",
        type=float,
        default=30.0,
        help="seconds between snapshots of every touched user (recovery replays at most this)",
    )
    p.add_argument(
        "--stop-at-end",
        action="store_true",
        help="consume what is in the topics now, write everything, then exit (1 if anything "
        "was rejected, like backfill)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=KAFKA_BATCH_SIZE,
        help="Kafka messages read at most per partition and read",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics on this port (process i uses port + i); "
        "default OO_FLOW_METRICS_PORT, unset: off",
    )
    p.add_argument(
        "--no-freshness",
        action="store_true",
        help="leave out the freshness bookkeeping on writes (to measure its cost)",
    )
    p.add_argument(
        "--flush-interval",
        type=float,
        default=FLUSH_INTERVAL_S,
        help="seconds a user's changes are coalesced before one write (0: write every batch)",
    )
    p.add_argument(
        "--catchup-flush-interval",
        type=float,
        default=CATCHUP_FLUSH_INTERVAL_S,
        help="upper bound of the coalescing while catching up on a backlog (events read over "
        "1 s after they arrived): a quarter of how far behind, at most this",
    )


def _free_ports(n: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _spawn_cluster(args: argparse.Namespace) -> int:
    addresses = ";".join(f"127.0.0.1:{port}" for port in _free_ports(args.processes))
    argv = [a for a in sys.argv[1:]]
    cleaned: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        if token == "--processes":
            skip = True
            continue
        if token.startswith("--processes="):
            continue
        cleaned.append(token)
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "oo_features.cli", *cleaned, "-i", str(i), "-a", addresses],
            env=os.environ.copy(),
        )
        for i in range(args.processes)
    ]
    codes = [child.wait() for child in children]
    return max(codes)


def run(args: argparse.Namespace) -> int:
    if args.processes > 1 and args.process_id is None:
        return _spawn_cluster(args)

    from datetime import timedelta
    from pathlib import Path

    from bytewax.recovery import RecoveryConfig
    from bytewax.run import cli_main

    from connectors import topics
    from connectors.exceptions import ConnectorError
    from connectors.jsonl import rejects_path_for
    from connectors.kafka import ensure_topics
    from connectors.store import open_store, safe_url
    from flows.features_flow import build_flow
    from flows.folding import dedupe_is_safe
    from flows.runtime import tune_gc
    from oo_features.commands import settings_from

    # Warnings of the engine's own modules (e.g. the store sink waiting for the store) to
    # stderr, one line each with time and origin.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = settings_from(args)
    store_url = settings.store_url
    key_prefix = settings.key_prefix
    topic_prefix = settings.topic_prefix
    bootstrap = None if args.event_log else settings.kafka_bootstrap
    if args.event_log is None and bootstrap is None:
        raise CommandError("no Kafka configured: set OO_KAFKA_BOOTSTRAP or pass --from FILE")
    if args.event_log is not None and not Path(args.event_log).is_file():
        what = "is a directory, not a file" if Path(args.event_log).is_dir() else "does not exist"
        raise CommandError(f"event log {args.event_log} {what}")
    try:
        store = open_store(store_url, key_prefix=key_prefix, ledger_url=settings.ledger_store_url)
        store.ping()
        # Before anything of this run is written: an empty store has only this run as writer,
        # unless recovery state exists: then the store lost its data and a refill (another
        # writer) fills it first (ADR 0007, ADR 0008).
        resuming = bool(args.recovery_dir) and any(Path(args.recovery_dir).glob("*.sqlite3"))
        dedupe = not resuming and dedupe_is_safe(store)
        store.close()
        if bootstrap is not None:
            ensure_topics(
                bootstrap,
                topics.engine_topics(topic_prefix),
                partitions=settings.partitions,
                timeout_s=settings.kafka_timeout_s,
                settings=settings,
            )
    except ConnectorError as exc:
        raise CommandError(str(exc)) from exc

    # ADR 0008: tombstones restored and a store that lost its data refilled before any write;
    # in a cluster, process 0 does it while the others wait for it to join.
    from oo_features.commands import refill

    identity_id = None
    if not args.process_id:
        try:
            identity_id = refill.prepare_flow_store(
                store_url=store_url,
                key_prefix=key_prefix,
                bootstrap=bootstrap,
                topic_prefix=topic_prefix,
                recovery_dir=args.recovery_dir,
                workers=args.workers,
                partitions=settings.partitions,
                timeout_s=settings.kafka_timeout_s,
                tombstones_bootstrap=settings.kafka_bootstrap,
            )
        except ConnectorError as exc:
            raise CommandError(str(exc)) from exc

    recovery = None
    if args.recovery_dir:
        from flows.recovery_dir import RecoveryDirError, prepare

        db_dir = Path(args.recovery_dir)
        parts = max(args.recovery_partitions, args.workers * max(args.processes, 1))
        try:
            prepare(db_dir, parts)  # whole or not at all, even if killed meanwhile
        except RecoveryDirError as exc:
            raise CommandError(str(exc)) from exc
        recovery = RecoveryConfig(db_dir)

    flow = build_flow(
        store_url=store_url,
        ledger_store_url=settings.ledger_store_url,
        key_prefix=key_prefix,
        kafka_bootstrap=bootstrap,
        topic_prefix=topic_prefix,
        event_log=args.event_log,
        rejects_path=args.rejects,
        stop_at_end=args.stop_at_end or args.event_log is not None,
        batch_size=args.batch_size,
        flush_interval=timedelta(seconds=args.flush_interval),
        catchup_interval=timedelta(seconds=max(args.catchup_flush_interval, args.flush_interval)),
        freshness=not args.no_freshness,
        recovery=recovery is not None,
        dedupe_writes=dedupe,
    )
    metrics_port = settings.flow_metrics_port
    if metrics_port is not None:
        from flows import metrics

        metrics.serve(metrics_port + (args.process_id or 0), settings.flow_metrics_host)
    tune_gc()
    if identity_id is not None and bootstrap is not None:
        refill.StoreWatchdog(store_url, key_prefix=key_prefix, identity_id=identity_id).start()
    addresses = args.addresses.split(";") if args.addresses else None
    from connectors import flow_metrics as run_metrics

    try:
        cli_main(
            flow,
            workers_per_process=args.workers,
            process_id=args.process_id,
            addresses=addresses,
            epoch_interval=timedelta(seconds=args.epoch_interval),
            recovery_config=recovery,
        )
    finally:
        # Like backfill: what was read, written and rejected, also when interrupted.
        summary = run_metrics.run_summary()
        where = (
            f"see {rejects_path_for(args.event_log, args.rejects)}"
            if args.event_log
            else f"dead-lettered to {topic_prefix + topics.DEADLETTER}"
        )
        print(
            f"flow: read {summary['events']} events, {summary['accepted']} accepted; "
            f"wrote features of {summary['users']} users into {safe_url(store_url)}; "
            f"rejected {summary['rejected']}" + (f" ({where})" if summary["rejected"] else "")
        )
    return 1 if summary["rejected"] else 0
