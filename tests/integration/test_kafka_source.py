"""The flow's Kafka source on the real local Kafka: every message once, decoded, in time order
across topics, resumable."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import REGISTRY

from connectors import topics
from connectors.codec import from_json
from connectors.kafka import EventProducer, ensure_topics
from connectors.kafka_source import KafkaEventSource, Keyed
from connectors.records import Accepted, Rejected
from proto import events_pb2 as pb
from tests.fixtures_services import Services


def _event(user: str, i: int, payload: str = '"habitChecked":{"habitId":"h"}') -> pb.Event:
    return from_json(
        f'{{"eventId":"{user}-{i}","userId":"{user}","occurredAt":"2026-05-01T06:{i % 60:02d}:00Z",'
        f"{payload}}}"
    )


def _drain(
    source: KafkaEventSource, resume: dict[str, Any] | None = None
) -> tuple[list[Keyed], dict[str, Any]]:
    """Read every partition to its end, as the flow with --stop-at-end does."""
    records: list[Keyed] = []
    offsets: dict[str, Any] = {}
    for name in source.list_parts():
        part = source.build_part("read_events", name, (resume or {}).get(name))
        try:
            while True:
                try:
                    records.extend(part.next_batch())
                except StopIteration:
                    break
            offsets[name] = part.snapshot()
        finally:
            part.close()
    return records, offsets


def test_reads_every_message_once_decoded_keyed_and_resumes_from_its_snapshot(
    services: Services, topic_prefix: str
) -> None:
    signals = topic_prefix + topics.SIGNALS
    feedback = topic_prefix + topics.FEEDBACK
    ensure_topics(services.kafka_bootstrap, [signals, feedback], partitions=3)
    sent = [_event(f"u{i % 7}", i) for i in range(500)]
    with EventProducer(
        bootstrap=services.kafka_bootstrap, topic_prefix=topic_prefix, partitions=3
    ) as producer:
        for event in sent:
            producer.publish(event)
        assert producer.flush().published == len(sent)
    raw = Producer({"bootstrap.servers": services.kafka_bootstrap})
    raw.produce(signals, value=b"\x00\xffgarbage", key=b"u1", partition=1)
    raw.flush(10)

    source = KafkaEventSource(
        services.kafka_bootstrap, [signals, feedback], tail=False, batch_size=64
    )
    assert source.list_parts() == ["0", "1", "2"]
    records, offsets = _drain(source)

    accepted = [(k, r) for k, r in records if isinstance(r, Accepted)]
    rejected = [r for _, r in records if isinstance(r, Rejected)]
    assert sorted(r.event.event_id for _, r in accepted) == sorted(e.event_id for e in sent)
    assert all(k == r.event.user_id and r.ingest_ms > 0 for k, r in accepted)
    # Per user, the order they were published in.
    for user in {e.user_id for e in sent}:
        got = [r.event.event_id for k, r in accepted if k == user]
        assert got == [e.event_id for e in sent if e.user_id == user]
    [bad] = rejected
    assert (bad.origin, bad.partition, bad.raw, bad.key) == (signals, 1, b"\x00\xffgarbage", b"u1")
    # Resume state: the next offset of each topic in the partition (untouched: from the start).
    assert sum(o for part in offsets.values() for o in part.values() if o >= 0) == len(sent) + 1

    again, offsets_again = _drain(source, resume=offsets)
    assert again == [] and offsets_again == offsets

    lag = REGISTRY.get_sample_value(
        "oo_flow_kafka_consumer_lag", {"topic": signals, "partition": "1"}
    )
    assert lag == 0


def test_a_users_events_come_out_in_timestamp_order_across_topics(
    services: Services, topic_prefix: str
) -> None:
    """Feedback produced first but stamped later waits for the older signals, whatever the
    batch size: one order per user across topics."""
    signals = topic_prefix + topics.SIGNALS
    feedback = topic_prefix + topics.FEEDBACK
    ensure_topics(services.kafka_bootstrap, [signals, feedback], partitions=1)
    # A new topic's leader can refuse the first request: without idempotence and with many
    # requests in flight, its retry can land after later ones: the topic out of order
    # (the likely cause of one failure at load 4-9: "batch size 7", index 1). See ADR 0048.
    raw = Producer(
        {
            "bootstrap.servers": services.kafka_bootstrap,
            "enable.idempotence": True,
            "max.in.flight.requests.per.connection": 1,
        }
    )
    base = 1_777_000_000_000
    shown = '"tipShown":{"tipId":"t","agentIds":["momentum"]}'
    # Odd stamps on feedback, even on signals; all feedback is produced before any signal.
    for i in range(1, 200, 2):
        raw.produce(feedback, _event("u1", i, shown).SerializeToString(), b"u1", timestamp=base + i)
    raw.flush(10)
    for i in range(0, 200, 2):
        raw.produce(signals, _event("u1", i).SerializeToString(), b"u1", timestamp=base + i)
    raw.flush(10)
    for batch_size in (7, 5000):
        source = KafkaEventSource(
            services.kafka_bootstrap, [signals, feedback], tail=False, batch_size=batch_size
        )
        records, _ = _drain(source)
        stamps = [r.ingest_ms for _, r in records if isinstance(r, Accepted)]
        assert stamps == [base + i for i in range(200)], f"batch size {batch_size}"


def test_topics_with_different_partition_counts_are_refused(
    services: Services, topic_prefix: str
) -> None:
    admin = AdminClient({"bootstrap.servers": services.kafka_bootstrap})
    names = {topic_prefix + topics.SIGNALS: 2, topic_prefix + topics.FEEDBACK: 3}
    for future in admin.create_topics(
        [NewTopic(name, num_partitions=n) for name, n in names.items()]
    ).values():
        future.result(10)
    source = KafkaEventSource(services.kafka_bootstrap, list(names), tail=False)
    with pytest.raises(RuntimeError, match="same number of partitions"):
        source.list_parts()


def test_a_missing_topic_is_named(services: Services, topic_prefix: str) -> None:
    source = KafkaEventSource(services.kafka_bootstrap, [topic_prefix + "nope"], tail=False)
    with pytest.raises(RuntimeError, match=f"{topic_prefix}nope"):
        source.list_parts()
