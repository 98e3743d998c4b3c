"""Retention (issue 10, point 5): history that retention dropped is never recomputed from a fragment.

A log is produced and run through the flow to the end (the uninterrupted reference). Then the
older half of every partition of both topics is deleted (`AdminClient.delete_records` up to
the middle offset, what retention does) and the flow restarts without state
(`--stop-at-end`, no `--recovery-dir`): it starts over from what is left. Every user whose
history was cut must keep exactly the features stored before (the restart refuses to write
them, ADR 0009); every user whose whole history is still in the topics is written again, with
the same values. Both stores: Redis and SQLite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors import topics
from connectors.codec import from_json
from connectors.kafka import EventProducer
from connectors.store import open_store
from connectors.store.base import StoredUser
from oo_features.generate import generate_lines
from proto import events_pb2 as pb
from tests.cli import oo_features
from tests.fixtures_services import service_env

NOW = 4_000_000_000_000  # one fixed read time (ms): snippets compare without expiring between reads


def _partitions(bootstrap: str, prefix: str) -> list[TopicPartition]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    out = []
    for name in (prefix + topics.SIGNALS, prefix + topics.FEEDBACK):
        for partition in sorted(admin.list_topics(name, timeout=30).topics[name].partitions):
            out.append(TopicPartition(name, partition))
    return out


Source = tuple[str, int]


def _first_offsets(
    bootstrap: str, prefix: str
) -> tuple[dict[str, dict[Source, int]], dict[str, list[tuple[Source, int]]]]:
    """user -> (topic, partition) -> offset of the user's first message there; and
    user -> positions of the user's deletions."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "retention-test",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    parts = _partitions(bootstrap, prefix)
    consumer.assign([TopicPartition(p.topic, p.partition, OFFSET_BEGINNING) for p in parts])
    first: dict[str, dict[Source, int]] = {}
    deletions: dict[str, list[tuple[Source, int]]] = {}
    ended: set[Source] = set()
    while len(ended) < len(parts):
        for msg in consumer.consume(500, 5.0):
            err = msg.error()
            if err is not None:
                assert err.code() == KafkaError._PARTITION_EOF, err
                ended.add((msg.topic(), msg.partition()))
                continue
            user = msg.key().decode()
            source = (msg.topic(), msg.partition())
            first.setdefault(user, {}).setdefault(source, msg.offset())
            if pb.Event.FromString(msg.value()).WhichOneof("payload") == "user_deleted":
                deletions.setdefault(user, []).append((source, msg.offset()))
    consumer.close()
    return first, deletions


def _cut_users(
    first: dict[str, dict[Source, int]],
    deletions: dict[str, list[tuple[Source, int]]],
    cut: dict[Source, int],
) -> tuple[set[str], set[str]]:
    """Users whose history lost its start; and those of them with a deletion still in the
    topics (a deletion ends a history: what follows it is whole, and is written again)."""
    was_cut = {u for u, starts in first.items() if any(o < cut[s] for s, o in starts.items())}
    restarted = {u for u in was_cut if any(o >= cut[s] for s, o in deletions.get(u, []))}
    return was_cut, restarted


def _drop_older_half(bootstrap: str, prefix: str) -> dict[tuple[str, int], int]:
    """What retention does to the older half: delete every partition up to its middle offset."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "retention-test"})
    cut: dict[tuple[str, int], int] = {}
    for tp in _partitions(bootstrap, prefix):
        low, high = consumer.get_watermark_offsets(tp, timeout=30)
        cut[(tp.topic, tp.partition)] = (low + high) // 2
    consumer.close()
    targets = [TopicPartition(t, p, offset) for (t, p), offset in cut.items()]
    for future in admin.delete_records(targets).values():
        future.result(timeout=30)
    return cut


def _read_all(url: str, key_prefix: str, users: list[str]) -> dict[str, StoredUser | None]:
    store = open_store(url, key_prefix=key_prefix)
    try:
        return {u: store.read_user(u, now_ms=NOW) for u in users}
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["redis", "sqlite"])
def test_restart_over_cut_topics_keeps_features_of_cut_histories(
    backend: str, services: Any, topic_prefix: str, key_prefix: str, tmp_path: Path
) -> None:
    # Users "u…" span the whole log; users "n…" publish only after all of them, so their
    # whole history stays in the topics when the older half of each partition is dropped.
    events = [from_json(line) for line in generate_lines(30, 21, 41)]
    late = [from_json(line) for line in generate_lines(6, 10, 43)]
    for event in late:
        event.user_id = "n" + event.user_id
    producer = EventProducer(bootstrap=services.kafka_bootstrap, topic_prefix=topic_prefix)
    for event in [*events, *late]:
        producer.publish(event)
    assert producer.flush(60).published == len(events) + len(late)
    producer.close()

    url = services.redis_url if backend == "redis" else f"sqlite:///{tmp_path}/features.db"
    env = service_env(services, topic_prefix, key_prefix, store_url=url)
    oo_features("flow", "--stop-at-end", env=env)
    first, deletions = _first_offsets(services.kafka_bootstrap, topic_prefix)
    users = sorted(first)
    before = _read_all(url, key_prefix, users)

    cut = _drop_older_half(services.kafka_bootstrap, topic_prefix)
    was_cut, restarted = _cut_users(first, deletions, cut)
    was_cut -= restarted
    whole = [u for u in users if u not in was_cut and before[u] is not None]
    assert len(was_cut) >= 20 and len(whole) >= 3, (len(was_cut), len(whole))

    second = oo_features("flow", "--stop-at-end", env=env)
    after = _read_all(url, key_prefix, users)

    overwritten = sorted(u for u in was_cut if after[u] != before[u])
    params_changed = [
        u
        for u in overwritten
        if before[u] is not None
        and after[u] is not None
        and {a: s.params for a, s in before[u].agents.items()}  # type: ignore[union-attr]
        != {a: s.params for a, s in after[u].agents.items()}  # type: ignore[union-attr]
    ]
    assert not overwritten, (
        f"{len(overwritten)} of {len(was_cut)} users whose history was cut were rewritten "
        f"from the fragment ({len(params_changed)} with other parameters), e.g. {overwritten[:5]}"
    )
    for u in whole:
        b, a = before[u], after[u]
        assert a is not None and b is not None, u
        assert {k: s.params for k, s in a.agents.items()} == {
            k: s.params for k, s in b.agents.items()
        }, u
        assert a.feedback == b.feedback, u
        rewritten = [
            k for k, s in a.agents.items() if s.computed_at_ms > b.agents[k].computed_at_ms
        ]
        assert rewritten, f"user {u} has its whole history in the topics but was not written again"
    # Reported: the refusal is logged for the operator, naming what to do.
    said = second.stderr + second.stdout
    assert "the store refused" in said and "--recovery-dir" in said, said[-2000:]


@pytest.mark.chaos
def test_retention_advancing_in_steps_with_two_workers(
    services: Any, topic_prefix: str, key_prefix: str
) -> None:
    """Retention takes a quarter, then half, then three quarters of every partition; after
    each step a flow with 2 workers restarts without state. Users cut at any step keep the
    reference's features; users whose history is whole equal it."""
    events = [from_json(line) for line in generate_lines(80, 40, 51)]
    late = [from_json(line) for line in generate_lines(10, 10, 53)]
    for event in late:
        event.user_id = "n" + event.user_id
    producer = EventProducer(bootstrap=services.kafka_bootstrap, topic_prefix=topic_prefix)
    for event in [*events, *late]:
        producer.publish(event)
    assert producer.flush(120).published == len(events) + len(late)
    producer.close()
    env = service_env(services, topic_prefix, key_prefix)
    flags = ("flow", "--stop-at-end", "--workers", "2")
    oo_features(*flags, env=env)
    first, deletions = _first_offsets(services.kafka_bootstrap, topic_prefix)
    users = sorted(first)
    reference = _read_all(services.redis_url, key_prefix, users)

    admin = AdminClient({"bootstrap.servers": services.kafka_bootstrap})
    consumer = Consumer({"bootstrap.servers": services.kafka_bootstrap, "group.id": "ret"})
    ranges = {
        (tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=30)
        for tp in _partitions(services.kafka_bootstrap, topic_prefix)
    }
    consumer.close()
    previous = reference
    for fraction in (0.25, 0.5, 0.75):
        cut = {s: low + int(fraction * (high - low)) for s, (low, high) in ranges.items()}
        targets = [TopicPartition(t, p, o) for (t, p), o in cut.items()]
        for future in admin.delete_records(targets).values():
            future.result(timeout=30)
        oo_features(*flags, env=env)
        after = _read_all(services.redis_url, key_prefix, users)
        was_cut, restarted = _cut_users(first, deletions, cut)
        was_cut -= restarted
        # A cut user is not written at all (untouched since the step before); every user's
        # parameters are the reference's.
        overwritten = sorted(u for u in was_cut if after[u] != previous[u])
        assert not overwritten, (fraction, len(overwritten), overwritten[:5])
        for u in users:
            a, r = after[u], reference[u]
            assert (a is None) == (r is None), (fraction, u)
            if a is not None and r is not None:
                assert {k: s.params for k, s in a.agents.items()} == {
                    k: s.params for k, s in r.agents.items()
                }, (fraction, u)
        previous = after
