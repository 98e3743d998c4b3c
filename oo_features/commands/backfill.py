"""`oo-features backfill FILE.jsonl`: features of an event log, written through the store code."""

from __future__ import annotations

import argparse

from oo_features.errors import CommandError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "backfill",
        help="compute features from an event-log file with the same code as the stream",
        description="Fold an event log (canonical JSON, one event per line) in file order and "
        "write the features to the store (OO_STORE_URL).",
    )
    p.add_argument("file", help="event log, canonical protobuf JSON, one event per line")
    p.add_argument("--store-url", help="override OO_STORE_URL")
    p.add_argument("--key-prefix", help="override OO_KEY_PREFIX")
    p.add_argument("--rejects", help="where rejected lines go (default FILE.rejects.jsonl)")
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="split users across N processes (same store as one process; default 1)",
    )


def run(args: argparse.Namespace) -> int:
    from connectors.exceptions import ConnectorError
    from connectors.jsonl import rejects_path_for
    from connectors.store import open_store
    from flows.backfill_processes import BackfillProcessError, backfill_processes
    from flows.runtime import tune_gc
    from oo_features.commands import settings_from
    from oo_features.progress import line_progress

    if args.processes < 1:
        raise CommandError(f"--processes must be >= 1; got {args.processes}")
    tune_gc()
    settings = settings_from(args)
    url = settings.store_url
    try:
        store = open_store(url, key_prefix=settings.key_prefix)
        store.ping()
    except ConnectorError as exc:
        raise CommandError(f"store {url} unreachable: {exc}") from exc
    if settings.kafka_bootstrap is not None:
        # ADR 0008: deletions made through the API stay deleted through a backfill.
        from oo_features.commands.refill import restore_tombstones

        try:
            restore_tombstones(
                store,
                bootstrap=settings.kafka_bootstrap,
                topic_prefix=settings.topic_prefix,
                partitions=settings.partitions,
                timeout_s=settings.kafka_timeout_s,
            )
        except ConnectorError as exc:
            store.close()
            raise CommandError(f"tombstones not read: {exc}") from exc
    key_prefix = settings.key_prefix
    try:
        with line_progress(args.file, "backfill") as advance:
            # One process too runs in a forked child (ADR 0051): the child exits without
            # freeing its run's states, which in the parent cost about 7 % of the run.
            store.close()
            try:
                report = backfill_processes(
                    args.file,
                    url,
                    key_prefix=key_prefix,
                    processes=args.processes,
                    rejects_path=args.rejects,
                    progress=advance,
                )
            except BackfillProcessError as exc:
                raise CommandError(str(exc)) from exc
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from exc
    finally:
        store.close()
    rejects = rejects_path_for(args.file, args.rejects)
    print(
        f"backfilled {report.accepted} events of {report.users} users into {url}; "
        f"rejected {report.rejected}" + (f" (see {rejects})" if report.rejected else "")
    )
    return 1 if report.rejected else 0
