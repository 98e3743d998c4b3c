"""End-to-end benchmark of the streaming feature flow on a real Kafka and Redis (loopback).

Throughput (default). A fresh topic pair is pre-loaded with `--events` generator events
(`oo_features.generate.generate_events`, `--users` users, first N in delivery order) by
`EventProducer`; then, over the same topics and in this order:

  (a) bare   - one confluent-kafka consumer: consume batches of 5000 (the flow's --batch-size) + `parse_and_check`
               (decode + validate) of each value: the Python ceiling of any consumer;
  (b) plain  - one process, no Bytewax: consume 5000, decode exactly as the flow
               (`kafka_source.decode_messages`), group per user, `fold_batch` per user, one
               `RedisStore.write_batch` per batch (what the flow does, minus the dataflow);
  flow       - `python -m oo_features.cli flow --stop-at-end` (1 process, 1 worker) in a
               subprocess, timed from spawn to exit (every write has landed when it exits).
               The same command over empty topics gives the fixed startup/shutdown cost,
               reported separately ("net" excludes it).

Freshness (`--freshness`). The flow runs in tail mode in a subprocess; a child process
produces generator events at a steady `--rate` (occurred_at rewritten to "now", Kafka
timestamp set explicitly at produce time, linger.ms=5); every `--sample-every`-th event
after `--warmup` seconds is a sample (user, Kafka timestamp). This process polls Redis
(one pipeline of `HGET <kp>:{user}:meta newest_ingest_ms` over every pending sample, every
`--poll-interval` = 2 ms) and records, for each sample, (time the reply showing newest_ingest_ms >= the
sample's timestamp came back) - (Kafka timestamp): an upper bound of "feature visible in
Redis - Kafka timestamp", too high by at most one poll cycle (reported).

    .venv/bin/python bench/flow.py                         # 1,000,000 events, 10,000 users
    .venv/bin/python bench/flow.py --events 50000 --users 2000   # smoke check
    .venv/bin/python bench/flow.py --profile               # + cProfile of the plain loop (b)
    .venv/bin/python bench/flow.py --freshness             # freshness only

Kafka/Redis: `--bootstrap`/`--store-url`, else $OO_KAFKA_BOOTSTRAP/$OO_STORE_URL, else the
local services (`oo_features.services`, started if needed). Topics and keys use unique
prefixes and are deleted afterwards (unless `--keep`).
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import math
import multiprocessing as mp
import os
import pstats
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition  # noqa: E402

from connectors import codec, topics  # noqa: E402
from connectors.batching import KAFKA_BATCH_SIZE  # noqa: E402
from connectors.kafka import EventProducer, ensure_topics, producer_config  # noqa: E402
from connectors.kafka_config import client_config  # noqa: E402
from connectors.kafka_source import decode_messages  # noqa: E402
from connectors.records import Accepted  # noqa: E402
from connectors.store import open_store  # noqa: E402
from features.state import UserState  # noqa: E402
from flows.coalescing import (  # noqa: E402
    CATCHUP_FLUSH_INTERVAL_S,
    FLUSH_INTERVAL_S,
    flush_delay_s,
)
from flows.folding import HistoryStart, Pending, Written, build_write  # noqa: E402
from oo_features.services import delete_keys, delete_topics  # noqa: E402

BATCH = KAFKA_BATCH_SIZE
EVENTS_PER_USER_DAY = 10  # the generator's average
THROUGHPUT_TARGET = 50_000
RATIO_TARGET = 0.6
P99_TARGET_MS = 500


# ------------------------------------------------------------------------------- plumbing


def _endpoints(args: argparse.Namespace) -> tuple[str, str]:
    bootstrap = args.bootstrap or os.environ.get("OO_KAFKA_BOOTSTRAP")
    store_url = args.store_url or os.environ.get("OO_STORE_URL")
    if not bootstrap or not store_url or not store_url.startswith("redis"):
        from oo_features import services as oo_services

        found = oo_services.running_endpoints() or oo_services.up(echo=print)
        bootstrap = bootstrap or found.kafka_bootstrap
        if not store_url or not store_url.startswith("redis"):
            store_url = found.redis_url
    return bootstrap, store_url


def _events(n: int, users: int, seed: int) -> Iterator[Any]:
    from oo_features.generate import generate_events

    days = math.ceil(n / (users * EVENTS_PER_USER_DAY)) + 2
    return itertools.islice(generate_events(users, days, seed), n)


def _consumer(bootstrap: str, prefix: str) -> tuple[Consumer, int]:
    """One consumer assigned to every partition of both event topics, from the beginning."""
    consumer = Consumer(
        client_config(
            None,
            "consumer",
            {
                "group.id": "oo-bench-ignored",  # assign() only: no group, no commits
                "enable.partition.eof": True,
                # the same fetch settings the flow's source uses
                "fetch.min.bytes": "1",
                "queued.max.messages.kbytes": "65536",
            },
            bootstrap=bootstrap,
        )
    )
    meta = consumer.list_topics(timeout=10).topics
    parts = [
        TopicPartition(name, p, OFFSET_BEGINNING)
        for name in (prefix + topics.SIGNALS, prefix + topics.FEEDBACK)
        for p in meta[name].partitions
    ]
    consumer.assign(parts)
    return consumer, len(parts)


def _batches(bootstrap: str, prefix: str, size: int = BATCH) -> Iterator[list[Any]]:
    """Batches of up to `size` messages until every partition reported its end."""
    consumer, n_parts = _consumer(bootstrap, prefix)
    eof = 0
    try:
        while eof < n_parts:
            msgs = consumer.consume(size, 0.01)
            batch = []
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eof += 1
                        continue
                    raise RuntimeError(f"kafka error: {err}")
                batch.append(msg)
            if batch:
                yield batch
    finally:
        consumer.close()


def bare_loop(bootstrap: str, prefix: str) -> int:
    """(a) consume + decode/validate each value; nothing else."""
    count = 0
    parse = codec.parse_and_check
    for batch in _batches(bootstrap, prefix):
        now_s = time.time()
        for msg in batch:
            parse(msg.value(), now_s=now_s)
        count += len(batch)
    return count


def plain_loop(
    bootstrap: str,
    prefix: str,
    store_url: str,
    key_prefix: str,
    size: int = BATCH,
    flush_s: float = FLUSH_INTERVAL_S,
    catchup_s: float = CATCHUP_FLUSH_INTERVAL_S,
) -> int:
    """(b) what the flow does, without Bytewax: the same decode, fold, write coalescing and writes.

    Each user's changes are coalesced exactly as the flow's `fold_user_state` step does
    (`flush_s`, or `catchup_s` while reading a backlog), then written in one batch per pass.
    """
    store = open_store(store_url, key_prefix=key_prefix)
    states: dict[str, UserState] = {}
    pending: dict[str, Pending] = {}
    histories: dict[str, HistoryStart] = {}  # each user's history marker
    written: dict[str, Written] = {}  # each user's write dedupe, as the flow's writer keeps it
    due: dict[str, float] = {}
    count = rejected = 0

    def flush(users: list[str]) -> None:
        writes = []
        for user_id in users:
            write = build_write(
                states[user_id], pending.pop(user_id), written=written.setdefault(user_id, {})
            )
            due.pop(user_id, None)
            if write is not None:
                writes.append(write)
        store.write_batch(writes)

    for batch in _batches(bootstrap, prefix, size):
        # decoded exactly as the flow's Kafka source decodes a batch
        per_user: dict[str, list[Accepted]] = {}
        for user_id, record in decode_messages(batch, time.time()).records:
            if record.__class__ is Accepted:
                per_user.setdefault(user_id, []).append(record)  # type: ignore[arg-type]
            else:
                rejected += 1
        now = time.time()
        for user_id, values in per_user.items():
            state = states.get(user_id)
            if state is None:
                state = states[user_id] = UserState(user_id)
            acc = pending.get(user_id)
            if acc is None:
                history = histories.get(user_id)
                if history is None:
                    history = histories[user_id] = HistoryStart()
                acc = pending[user_id] = Pending(history=history)
            acc.fold(state, values)
            if user_id not in due:
                behind = now - max(v.ingest_ms for v in values) / 1000
                due[user_id] = now + flush_delay_s(behind, flush_s=flush_s, catchup_max_s=catchup_s)
        ready = [u for u, t in due.items() if t <= now]
        if ready:
            flush(ready)
        count += len(batch)
    flush(list(pending))
    store.close()
    if rejected:
        print(f"  warning: plain loop rejected {rejected} records")
    return count


def _flow_cmd(
    bootstrap: str,
    store_url: str,
    topic_prefix: str,
    key_prefix: str,
    *,
    stop: bool,
    extra: list[str],
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "oo_features.cli",
        "flow",
        "--bootstrap",
        bootstrap,
        "--store-url",
        store_url,
        "--topic-prefix",
        topic_prefix,
        "--key-prefix",
        key_prefix,
        *extra,
    ]
    return [*cmd, "--stop-at-end"] if stop else cmd


def run_flow(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run the flow to completion; (wall seconds from spawn to exit, child CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with log.open("wb") as out:
        code = subprocess.call(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        raise SystemExit(f"flow exited {code}; log:\n{log.read_text()[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _redis(store_url: str) -> Any:
    import redis

    return redis.Redis.from_url(store_url)


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_usec(store_url: str) -> int:
    """Total microseconds Redis spent executing commands so far (INFO commandstats)."""
    stats = _redis(store_url).info("commandstats")
    return sum(int(v.get("usec", 0)) for v in stats.values() if isinstance(v, dict))


def _user_count(store_url: str, key_prefix: str) -> int:
    return int(_redis(store_url).zcard(f"{key_prefix}:users"))


def _compare(store_url: str, kp_a: str, kp_b: str, users: list[str]) -> tuple[int, int]:
    """Users whose stored agent parameters are the same under both prefixes."""
    a, b = open_store(store_url, key_prefix=kp_a), open_store(store_url, key_prefix=kp_b)
    same = 0
    for uid in users:
        ua, ub = a.read_user(uid), b.read_user(uid)
        if ua is None or ub is None:
            same += ua is None and ub is None
            continue
        # Parameters and extras only: event_time/computed_at stamp *when* a value was written,
        # which depends on how writes were coalesced, not on what the features are.
        pa = {k: (v.version, v.params, v.extras) for k, v in ua.agents.items()}
        pb_ = {k: (v.version, v.params, v.extras) for k, v in ub.agents.items()}
        same += pa == pb_
    return same, len(users)


def cleanup(bootstrap: str, store_url: str, prefix: str) -> None:
    """Delete the run's topics and keys: all of them start with `prefix`."""
    delete_topics(bootstrap, prefix, timeout_s=30)
    delete_keys(store_url, prefix)


def _timed(label: str, n_expected: int, func: Callable[..., int], *args: Any) -> float:
    cpu0, t0 = time.process_time(), time.perf_counter()
    n = func(*args)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if n != n_expected:
        print(f"  warning: {label} saw {n:,} messages, expected {n_expected:,}")
    print(
        f"  {label:<28} {n:>10,} events {wall:7.2f} s {n / wall:>9,.0f} ev/s  (CPU {cpu / wall:.2f} cores)"
    )
    return n / wall


# ------------------------------------------------------------------------------- profile


def profile_plain(bootstrap: str, prefix: str, store_url: str, key_prefix: str, top: int) -> None:
    prof = cProfile.Profile()
    server0 = _server_usec(store_url)
    t0 = time.perf_counter()
    prof.enable()
    n = plain_loop(bootstrap, prefix, store_url, key_prefix)
    prof.disable()
    wall = time.perf_counter() - t0
    server = _server_usec(store_url) - server0
    st = pstats.Stats(prof)
    stats = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values())  # sum of tottime = profiled time

    def cum(file_part: str, func: str) -> float:
        return sum(v[3] for (f, _, name), v in stats.items() if name == func and file_part in f)

    rows = [
        ("kafka consume (confluent)", cum("", "<method 'consume' of 'cimpl.Consumer' objects>")),
        ("decode: parse_and_check", cum("connectors/codec.py", "parse_and_check")),
        ("decode_messages (total)", cum("connectors/kafka_source.py", "decode_messages")),
        ("fold_batch (total)", cum("flows/folding.py", "fold_batch")),
        ("  UserState.apply", cum("features/state.py", "apply")),
        ("  UserState.outputs", cum("features/state.py", "outputs")),
        ("  UserState.__init__", cum("features/state.py", "__init__")),
        ("RedisStore.write_batch (total)", cum("connectors/store/redis_store.py", "write_batch")),
        ("  _write_call (args, JSON)", cum("connectors/store/redis_store.py", "_write_call")),
        ("  pipeline execute (total)", cum("redis/client.py", "execute")),
        ("    command packing (pure Python)", cum("redis/connection.py", "pack")),
        (
            "    socket recv (waits on Redis)",
            cum("", "<method 'recv' of '_socket.socket' objects>"),
        ),
    ]
    print(
        f"\ncProfile of the plain loop (b): {n:,} events, {wall:.1f} s under the profiler "
        f"({n / wall:,.0f} ev/s); profiled time {total:.1f} s"
    )
    for label, secs in rows:
        print(
            f"  {label:<32} {secs:7.2f} s  {100 * secs / total:5.1f} %  {1e6 * secs / n:6.1f} us/event"
        )
    print(
        f"  {'Redis server: commands (Lua etc.)':<32} {server / 1e6:7.2f} s  {'(server CPU, not in the profile)':>7}"
        f"  {server / n:6.1f} us/event"
    )
    print(f"\ntop {top} functions by own time:")
    st.sort_stats("tottime").print_stats(top)


# ------------------------------------------------------------------------------- throughput


def throughput(args: argparse.Namespace, bootstrap: str, store_url: str) -> int:
    run = uuid.uuid4().hex[:8]
    prefix = f"bflow{run}."
    kp_plain, kp_flow, kp_prof, kp_empty = (f"bflow{run}{s}" for s in ("p", "f", "x", "e"))
    empty_prefix = f"bflow{run}empty."
    log_dir = Path(tempfile.mkdtemp(prefix="oo-bench-flow-"))
    print(
        f"run {run}: {args.events:,} events over {args.users:,} users, topics {prefix}*, "
        f"{args.partitions} partitions per topic; CPUs: {os.cpu_count()}"
    )
    try:
        t0 = time.perf_counter()
        producer = EventProducer(
            bootstrap=bootstrap, topic_prefix=prefix, partitions=args.partitions
        )
        produced_users: set[str] = set()
        for event in _events(args.events, args.users, args.seed):
            produced_users.add(event.user_id)
            producer.publish(event, validate=False)
        report = producer.flush()
        producer.close()
        if report.failed or report.published != args.events:
            raise SystemExit(
                f"pre-load failed: {report.published} published, {len(report.failed)} failed"
            )
        ensure_topics(bootstrap, [prefix + topics.DEADLETTER], args.partitions)
        print(
            f"  pre-loaded {report.published:,} events ({len(produced_users):,} users) "
            f"in {time.perf_counter() - t0:.1f} s (generate + produce)"
        )
        n = args.events

        bare = _timed("(a) bare consume+decode", n, bare_loop, bootstrap, prefix)
        plain = _timed(
            "(b) plain loop -> Redis",
            n,
            plain_loop,
            bootstrap,
            prefix,
            store_url,
            kp_plain,
            BATCH,
            args.flush_interval,
            args.catchup_flush_interval,
        )
        if args.plain_batch != BATCH:
            _timed(
                f"(b') plain, batch {args.plain_batch}",
                n,
                plain_loop,
                bootstrap,
                prefix,
                store_url,
                kp_prof + "b",
                args.plain_batch,
            )

        extra = [
            "--epoch-interval",
            str(args.epoch_interval),
            "--flush-interval",
            str(args.flush_interval),
            "--catchup-flush-interval",
            str(args.catchup_flush_interval),
        ]
        # Several runs over the same topics, each into its own keys: this 2-core machine is
        # shared with Kafka and Redis, so one run can be several percent off; the median is the
        # figure, and every run is printed.
        runs = []
        for i in range(args.flow_runs):
            kp = kp_flow if i == 0 else f"{kp_flow}{i}"
            runs.append(
                run_flow(
                    _flow_cmd(bootstrap, store_url, prefix, kp, stop=True, extra=extra),
                    log_dir / f"flow-{i}.log",
                )
            )
        flow_wall, _flow_cpu = sorted(runs)[len(runs) // 2]
        empty_wall, _empty_cpu = run_flow(
            _flow_cmd(bootstrap, store_url, empty_prefix, kp_empty, stop=True, extra=extra),
            log_dir / "empty.log",
        )
        flow = n / flow_wall
        net = n / max(flow_wall - empty_wall, 1e-9)
        for i, (wall, cpu) in enumerate(runs):
            print(
                f"  {f'flow run {i + 1} (spawn -> exit)':<28} {n:>10,} events {wall:7.2f} s "
                f"{n / wall:>9,.0f} ev/s  (child CPU {cpu / wall:.2f} cores)"
            )
        print(
            f"  {f'flow, median of {len(runs)}':<28} {n:>10,} events {flow_wall:7.2f} s {flow:>9,.0f} ev/s"
        )
        print(f"  {'flow startup+shutdown':<28} {'(empty)':>10} {'':7}{empty_wall:7.2f} s")
        print(
            f"  {'flow net of startup':<28} {n:>10,} events {flow_wall - empty_wall:7.2f} s {net:>9,.0f} ev/s"
        )

        flow_users, plain_users = _user_count(store_url, kp_flow), _user_count(store_url, kp_plain)
        sample = sorted(produced_users)[:: max(1, len(produced_users) // 200)]
        same, total = _compare(store_url, kp_plain, kp_flow, sample)
        print(
            f"  users in store: flow {flow_users:,}, plain {plain_users:,} (produced {len(produced_users):,}); "
            f"same agent params in plain vs flow: {same}/{total} sampled users"
        )

        print()
        print(
            f"throughput: flow {flow:,.0f} events/s end to end (net of startup {net:,.0f}); "
            f"target {THROUGHPUT_TARGET:,}: {'met' if flow >= THROUGHPUT_TARGET else 'MISSED'}"
        )
        print(
            f"ratio flow/(b) plain: {flow / plain:.2f} (net {net / plain:.2f}); target {RATIO_TARGET}: "
            f"{'met' if flow / plain >= RATIO_TARGET else 'MISSED'}"
        )
        print(f"ratio (b)/(a): {plain / bare:.2f}; flow/(a): {flow / bare:.2f}")

        if args.freshness_overhead:
            # The same flow without the freshness bookkeeping (reflected users, lag samples),
            # interleaved with more runs with it, so drift on this shared machine hits both.
            walls: dict[bool, list[float]] = {True: [runs[-1][0]], False: []}
            order = [i % 2 == 1 for i in range(2 * args.overhead_pairs - 1)]  # without, with, ...
            for i, with_freshness in enumerate(order):
                flags = [*extra] if with_freshness else [*extra, "--no-freshness"]
                wall, _ = run_flow(
                    _flow_cmd(
                        bootstrap, store_url, prefix, f"{kp_prof}o{i}", stop=True, extra=flags
                    ),
                    log_dir / f"flow-overhead-{i}.log",
                )
                walls[with_freshness].append(wall)
            with_wall = sum(walls[True]) / len(walls[True])
            without_wall = sum(walls[False]) / len(walls[False])
            cost = 1 - without_wall / with_wall
            print(
                f"freshness bookkeeping: flow {n / with_wall:,.0f} ev/s with (mean of "
                f"{len(walls[True])} runs: {', '.join(f'{n / w:,.0f}' for w in walls[True])}), "
                f"{n / without_wall:,.0f} ev/s without (runs: "
                f"{', '.join(f'{n / w:,.0f}' for w in walls[False])}); cost {100 * cost:.1f}% of "
                f"throughput (target at most 5%: {'met' if cost <= 0.05 else 'MISSED'})"
            )
        if args.profile:
            profile_plain(bootstrap, prefix, store_url, kp_prof, args.top)
        ok = flow >= THROUGHPUT_TARGET and flow / plain >= RATIO_TARGET
        return 0 if ok else 1
    finally:
        if not args.keep:
            # Every topic and key prefix of this run starts with bflow<run>.
            cleanup(bootstrap, store_url, f"bflow{run}")


# ------------------------------------------------------------------------------- freshness


def _paced_producer(
    bootstrap: str,
    prefix: str,
    payloads: list[bytes],
    rate: float,
    warmup_n: int,
    sample_every: int,
    queue: Any,
) -> None:
    """Child process: produce `payloads` at `rate`/s, occurred_at = now; report samples."""
    from proto import events_pb2 as pb

    producer = Producer(producer_config(bootstrap, extra={"linger.ms": 5}))
    signals, feedback = prefix + topics.SIGNALS, prefix + topics.FEEDBACK
    event = pb.Event()
    started = time.perf_counter()
    late_max = 0.0
    for i, raw in enumerate(payloads):
        due = started + i / rate
        wait = due - time.perf_counter()
        if wait > 0.0005:
            time.sleep(wait)
        else:
            late_max = max(late_max, -wait)
        event.ParseFromString(raw)
        now_ms = time.time_ns() // 1_000_000
        event.occurred_at.FromMilliseconds(now_ms)
        topic = feedback if event.WhichOneof("payload") in topics.FEEDBACK_PAYLOADS else signals
        producer.produce(topic, event.SerializeToString(), event.user_id.encode(), timestamp=now_ms)
        if i >= warmup_n and (i - warmup_n) % sample_every == 0:
            queue.put((event.user_id, now_ms))
        producer.poll(0)
    elapsed = time.perf_counter() - started
    left = producer.flush(30)
    queue.put(("__done__", len(payloads), elapsed, late_max, left))


def freshness(args: argparse.Namespace, bootstrap: str, store_url: str) -> int:
    run = uuid.uuid4().hex[:8]
    prefix, kp = f"bfresh{run}.", f"bfresh{run}"
    log = Path(tempfile.mkdtemp(prefix="oo-bench-fresh-")) / "flow.log"
    total_s = args.warmup + args.duration
    n = int(args.rate * total_s)
    warmup_n = int(args.rate * args.warmup)
    print(
        f"run {run}: {args.rate:,.0f} events/s for {args.warmup:g} s warm-up + {args.duration:g} s "
        f"measured ({n:,} events, {args.users:,} users), sample every {args.sample_every}th event"
    )
    payloads = [e.SerializeToString() for e in _events(n, args.users, args.seed)]
    ensure_topics(
        bootstrap,
        [prefix + t for t in (topics.SIGNALS, topics.FEEDBACK, topics.DEADLETTER)],
        args.partitions,
    )
    r = _redis(store_url)
    ctx = mp.get_context("spawn")
    flow = subprocess.Popen(
        _flow_cmd(
            bootstrap,
            store_url,
            prefix,
            kp,
            stop=False,
            extra=[
                "--epoch-interval",
                str(args.epoch_interval),
                "--flush-interval",
                str(args.flush_interval),
            ],
        ),
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        # readiness: one probe event must become visible before the paced run starts
        from proto import events_pb2 as pb

        probe = pb.Event()
        probe.ParseFromString(payloads[0])
        probe.user_id, probe.event_id = "probe", "probe-1"
        probe.occurred_at.FromMilliseconds(time.time_ns() // 1_000_000)
        p = Producer(producer_config(bootstrap))
        topic = prefix + (
            topics.FEEDBACK
            if probe.WhichOneof("payload") in topics.FEEDBACK_PAYLOADS
            else topics.SIGNALS
        )
        p.produce(topic, probe.SerializeToString(), b"probe")
        p.flush(10)
        t0 = time.perf_counter()
        while r.hget(f"{kp}:{{probe}}:meta", "newest_ingest_ms") is None:
            if flow.poll() is not None:
                raise SystemExit(f"flow exited {flow.returncode}:\n{log.read_text()[-3000:]}")
            if time.perf_counter() - t0 > 90:
                raise SystemExit("flow did not write the probe within 90 s")
            time.sleep(0.05)
        print(f"  flow ready (probe visible after {time.perf_counter() - t0:.1f} s)")

        queue = ctx.Queue()
        child = ctx.Process(
            target=_paced_producer,
            args=(bootstrap, prefix, payloads, args.rate, warmup_n, args.sample_every, queue),
        )
        child.start()
        pending: dict[str, list[int]] = {}
        flow_cpu = 0.0
        latencies: list[int] = []
        cycles: list[float] = []
        done: tuple[Any, ...] | None = None
        deadline = None
        cpu0, wall0 = _proc_cpu(flow.pid), time.perf_counter()
        next_poll = time.perf_counter()
        while True:
            pause = next_poll - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            next_poll = time.perf_counter() + args.poll_interval
            while True:
                try:
                    item = queue.get_nowait()
                except Exception:
                    break
                if item[0] == "__done__":
                    done = item
                    flow_cpu = (_proc_cpu(flow.pid) - cpu0) / (time.perf_counter() - wall0)
                    deadline = time.monotonic() + 30
                else:
                    pending.setdefault(item[0], []).append(item[1])
            if pending:
                users = list(pending)
                sent = time.perf_counter()
                pipe = r.pipeline(transaction=False)
                for uid in users:
                    pipe.hget(f"{kp}:{{{uid}}}:meta", "newest_ingest_ms")
                replies = pipe.execute()
                seen_ms = time.time_ns() // 1_000_000
                cycles.append(time.perf_counter() - sent)
                for uid, value in zip(users, replies, strict=True):
                    if value is None:
                        continue
                    stored = int(value)
                    waiting = pending[uid]
                    keep = [ts for ts in waiting if ts > stored]
                    latencies.extend(seen_ms - ts for ts in waiting if ts <= stored)
                    if keep:
                        pending[uid] = keep
                    else:
                        del pending[uid]
            if done is not None and (not pending or time.monotonic() > (deadline or 0)):
                break
            if flow.poll() is not None:
                raise SystemExit(f"flow exited {flow.returncode}:\n{log.read_text()[-3000:]}")
        child.join(10)
    finally:
        flow.send_signal(signal.SIGINT)
        try:
            flow.wait(15)
        except subprocess.TimeoutExpired:
            flow.kill()
            flow.wait()
        if not args.keep:
            cleanup(bootstrap, store_url, prefix.rstrip("."))

    assert done is not None
    _, produced, elapsed, late_max, left = done
    missing = sum(len(v) for v in pending.values())
    latencies.sort()

    def pct(q: float) -> float:
        return float(latencies[min(len(latencies) - 1, int(q * len(latencies)))])

    cycles.sort()
    print(
        f"  produced {produced:,} events in {elapsed:.1f} s = {produced / elapsed:,.0f}/s "
        f"(max pacing lag {1000 * late_max:.1f} ms; unflushed {left}); flow process used "
        f"{flow_cpu:.2f} cores meanwhile"
    )
    print(
        f"  samples: {len(latencies):,} measured, {missing} never seen within 30 s; "
        f"poll cycle median {1000 * cycles[len(cycles) // 2]:.2f} ms, "
        f"p99 {1000 * cycles[int(0.99 * len(cycles))]:.2f} ms"
    )
    if not latencies:
        print("freshness: no samples")
        return 1
    p50, p90, p99 = pct(0.50), pct(0.90), pct(0.99)
    print()
    print(
        f"freshness (visible in Redis - Kafka timestamp): p50 {p50:.0f} ms, p90 {p90:.0f} ms, "
        f"p99 {p99:.0f} ms, max {latencies[-1]:.0f} ms; target p99 < {P99_TARGET_MS} ms: "
        f"{'met' if p99 < P99_TARGET_MS and not missing else 'MISSED'}"
    )
    return 0 if p99 < P99_TARGET_MS and not missing else 1


def main(argv: list[str] | None = None) -> int:
    from flows.runtime import tune_gc

    tune_gc()  # the same process tuning as `oo-features flow`, so (b) and the flow compare fairly
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="events to pre-load (throughput)"
    )
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--partitions", type=int, default=4, help="partitions per event topic")
    parser.add_argument(
        "--bootstrap", help="Kafka bootstrap (default $OO_KAFKA_BOOTSTRAP or local services)"
    )
    parser.add_argument(
        "--store-url", help="redis:// URL (default $OO_STORE_URL or local services)"
    )
    parser.add_argument("--epoch-interval", type=float, default=30.0, help="passed to the flow")
    parser.add_argument(
        "--flush-interval",
        type=float,
        default=FLUSH_INTERVAL_S,
        help="passed to the flow (per-user write coalescing; default: the flow's)",
    )
    parser.add_argument(
        "--catchup-flush-interval",
        type=float,
        default=CATCHUP_FLUSH_INTERVAL_S,
        help="passed to the flow (backlog coalescing; default: the flow's)",
    )
    parser.add_argument(
        "--flow-runs",
        type=int,
        default=3,
        help="throughput: flow runs over the same topics (the median is the figure)",
    )
    parser.add_argument(
        "--freshness-overhead",
        action="store_true",
        help="also run the flow without freshness bookkeeping and print its cost",
    )
    parser.add_argument(
        "--overhead-pairs",
        type=int,
        default=3,
        help="with/without runs each for --freshness-overhead",
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile an extra pass of the plain loop"
    )
    parser.add_argument(
        "--plain-batch",
        type=int,
        default=BATCH,
        help="also time the plain loop with batches of this many messages",
    )
    parser.add_argument("--top", type=int, default=25, help="rows of the profile's own-time table")
    parser.add_argument(
        "--freshness", action="store_true", help="run the freshness measurement only"
    )
    parser.add_argument("--rate", type=float, default=5_000, help="freshness: events per second")
    parser.add_argument("--duration", type=float, default=20, help="freshness: measured seconds")
    parser.add_argument(
        "--warmup", type=float, default=5, help="freshness: unmeasured seconds first"
    )
    parser.add_argument(
        "--sample-every", type=int, default=50, help="freshness: sample 1 event in N"
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=0.002,
        help="freshness: seconds between Redis polls (the measurement's resolution)",
    )
    parser.add_argument("--keep", action="store_true", help="keep topics and keys afterwards")
    args = parser.parse_args(argv)
    bootstrap, store_url = _endpoints(args)
    print(
        f"kafka {bootstrap}, redis {store_url}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    if args.freshness:
        return freshness(args, bootstrap, store_url)
    return throughput(args, bootstrap, store_url)


if __name__ == "__main__":
    sys.exit(main())
