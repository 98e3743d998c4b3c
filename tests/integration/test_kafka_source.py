"""The flow's Kafka source on the real local Kafka: every message once, decoded, resumable."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer
from prometheus_client import REGISTRY

from connectors import topics
from connectors.codec import from_json
from connectors.kafka import EventProducer, ensure_topics
from connectors.kafka_source import KafkaEventSource, Keyed
from connectors.records import Accepted, Rejected
from proto import events_pb2 as pb
from tests.fixtures_services import Services


def _event(user: str, i: int) -> pb.Event:
    return from_json(
        f'{{"eventId":"{user}-{i}","userId":"{user}","occurredAt":"2026-05-01T06:{i % 60:02d}:00Z",'
        f'"habitChecked":{{"habitId":"h{i}"}}}}'
    )


def _drain(
    source: KafkaEventSource, resume: dict[str, int] | None = None
) -> tuple[list[Keyed], dict[str, int]]:
    """Read every partition to its end, as the flow with --stop-at-end does."""
    records: list[Keyed] = []
    offsets: dict[str, int] = {}
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
    assert sorted(source.list_parts()) == sorted(
        [f"{p}-{signals}" for p in range(3)] + [f"{p}-{feedback}" for p in range(3)]
    )
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
    # Next offset to read per partition; an empty partition still starts from the beginning.
    assert sum(o for o in offsets.values() if o >= 0) == len(sent) + 1

    again, offsets_again = _drain(source, resume=offsets)
    assert again == [] and offsets_again == offsets

    lag = REGISTRY.get_sample_value(
        "oo_flow_kafka_consumer_lag", {"topic": signals, "partition": "1"}
    )
    assert lag == 0


def test_a_missing_topic_is_named(services: Services, topic_prefix: str) -> None:
    source = KafkaEventSource(services.kafka_bootstrap, [topic_prefix + "nope"], tail=False)
    with pytest.raises(RuntimeError, match=f"{topic_prefix}nope"):
        source.list_parts()
