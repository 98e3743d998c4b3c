"""Recovery: a flow stopped and resumed from its recovery directory ends where one run would.

The second run must resume from the snapshotted offsets and state: its result equals the
reference over the whole log, and it reads only what came after the snapshot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connectors import topics
from connectors.codec import from_json
from connectors.kafka import EventProducer
from connectors.store import open_store
from oo_features.generate import generate_lines
from tests.cli import oo_features
from tests.compare import differences
from tests.fixtures_services import service_env
from tests.reference import reference_features


def truncate_topics(bootstrap: str, prefix: str) -> None:
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "truncate"})
    ends = []
    for name in (prefix + topics.SIGNALS, prefix + topics.FEEDBACK):
        for partition in admin.list_topics(name, timeout=10).topics[name].partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=10)
            ends.append(TopicPartition(name, partition, high))
    consumer.close()
    for future in admin.delete_records(ends).values():
        future.result(timeout=30)


def test_resume_from_the_recovery_directory(
    services: Any, topic_prefix: str, key_prefix: str, tmp_path: Path
) -> None:
    events = [from_json(line) for line in generate_lines(40, 12, 31)]
    half = len(events) // 2
    env = service_env(services, topic_prefix, key_prefix)
    recovery = tmp_path / "recovery"
    producer = EventProducer(bootstrap=services.kafka_bootstrap, topic_prefix=topic_prefix)
    for event in events[:half]:
        producer.publish(event)
    assert producer.flush(30).published == half
    flags = ["flow", "--stop-at-end", "--recovery-dir", str(recovery)]
    oo_features(*flags, env=env)
    assert any(recovery.glob("*.sqlite3")), "no recovery partitions were written"
    # Truncate what the first run read: only a flow that resumes from its snapshot (state and
    # offsets) can still know the first half. One that started over would lose it.
    truncate_topics(services.kafka_bootstrap, topic_prefix)

    for event in events[half:]:
        producer.publish(event)
    assert producer.flush(30).published == len(events) - half
    producer.close()
    second = oo_features(*flags, env=env)
    assert second.returncode == 0

    expected = reference_features(events)
    store = open_store(services.redis_url, key_prefix=key_prefix)
    problems: list[str] = []
    for user_id, ref in sorted(expected.items()):
        user = store.read_user(user_id)
        if ref.deleted or not ref.params:
            continue
        assert user is not None, user_id
        problems += differences(
            {a: s.params for a, s in user.agents.items()}, ref.params, where=f"user {user_id}"
        )
        problems += differences(
            {"feedback": user.feedback}, {"feedback": ref.feedback}, where=f"user {user_id}"
        )
    store.close()
    assert not problems, "\n".join(problems[:10])


def test_a_flow_killed_while_creating_its_recovery_directory_starts_again(
    services: Any, topic_prefix: str, key_prefix: str, tmp_path: Path
) -> None:
    """A kill while Bytewax wrote the partition files left some of them, and every restart
    failed with `MissingPartitionsError` (found by `test_crash_e2e.py`)."""
    from bytewax.recovery import init_db_dir

    events = [from_json(line) for line in generate_lines(5, 3, 7)]
    producer = EventProducer(bootstrap=services.kafka_bootstrap, topic_prefix=topic_prefix)
    for event in events:
        producer.publish(event)
    assert producer.flush(30).published == len(events)
    producer.close()
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 64)
    for n in range(40, 64):  # what the killed process had not written yet
        (recovery / f"part-{n}.sqlite3").unlink()
    env = service_env(services, topic_prefix, key_prefix)
    oo_features("flow", "--stop-at-end", "--recovery-dir", str(recovery), env=env)
    assert len(list(recovery.glob("part-*.sqlite3"))) == 64
    store = open_store(services.redis_url, key_prefix=key_prefix)
    assert store.user_ids(), "the restarted flow wrote nothing"
    store.close()
