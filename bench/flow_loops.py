"""`bench/flow.py`'s in-process loops over the pre-loaded topics: the generator's events,
(a) the bare consumer, (b) the plain no-Bytewax loop, and its cProfile breakdown."""

from __future__ import annotations

import cProfile
import itertools
import math
import pstats
import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from bench.flow_run import BATCH, EVENTS_PER_USER_DAY, _server_usec
from connectors import codec, topics
from connectors.kafka_config import client_config
from connectors.kafka_source import decode_messages
from connectors.records import Accepted
from connectors.store import open_store
from features.state import UserState
from flows.coalescing import (
    CATCHUP_FLUSH_INTERVAL_S,
    FLUSH_INTERVAL_S,
    flush_delay_s,
)
from flows.folding import HistoryStart, Pending, Written, build_write


def _events(n: int, users: int, seed: int) -> Iterator[Any]:
    from oo_features.generate import generate_events

    days = math.ceil(n / (users * EVENTS_PER_USER_DAY)) + 2
    return itertools.islice(generate_events(users, days, seed), n)


def preload(bootstrap: str, prefix: str, n: int, users: int, seed: int) -> None:
    """Publish `n` generator events of `users` users to the topics under `prefix` (checked
    to be all published) and create its dead-letter topic: the input of a flow A/B run."""
    from connectors.kafka import EventProducer, ensure_topics

    producer = EventProducer(bootstrap=bootstrap, topic_prefix=prefix)
    for event in _events(n, users, seed):
        producer.publish(event, validate=False)
    assert producer.flush().published == n
    producer.close()
    ensure_topics(bootstrap, [prefix + topics.DEADLETTER], 4)


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
        for name in topics.event_topics(prefix)
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
