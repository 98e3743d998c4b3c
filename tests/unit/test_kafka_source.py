"""The Kafka source's decoding: one pass from client messages to keyed records, nothing lost."""

from __future__ import annotations

import time

from confluent_kafka import KafkaError, Message

from connectors.codec import from_json
from connectors.kafka_source import decode_messages
from connectors.records import Accepted, Rejected

TOPIC = "unit.oo.signals.v1"
GOOD = from_json(
    '{"eventId":"e1","userId":"u1","occurredAt":"2026-05-01T06:30:00Z",'
    '"taskCompleted":{"taskId":"t1","projectId":"p1"}}'
)


def msg(
    value: bytes | None,
    offset: int,
    key: bytes | None = b"u1",
    ts: int = 1_777_000_000_000,
    error: KafkaError | None = None,
) -> Message:
    return Message(
        topic=TOPIC,
        partition=3,
        offset=offset,
        key=key,
        value=value,
        timestamp=(1, ts),
        error=error,
    )


def test_accepted_events_are_keyed_by_user_with_the_kafka_timestamp() -> None:
    decoded = decode_messages([msg(GOOD.SerializeToString(), 7)], time.time())
    assert decoded.rejected == 0
    [(user_id, record)] = decoded.records
    assert user_id == "u1" and isinstance(record, Accepted)
    assert record.event == GOOD and record.ingest_ms == 1_777_000_000_000


def test_a_message_without_a_timestamp_is_stamped_with_the_read_time() -> None:
    now_s = 1_780_000_000.25
    decoded = decode_messages([msg(GOOD.SerializeToString(), 0, ts=0)], now_s)
    [(_, record)] = decoded.records
    assert isinstance(record, Accepted) and record.ingest_ms == 1_780_000_000_250


def test_bad_messages_are_rejected_with_reason_origin_and_bytes_and_the_rest_go_on() -> None:
    wrong_key = msg(GOOD.SerializeToString(), 11, key=b"someone-else")
    decoded = decode_messages(
        [
            msg(b"\xff not an event", 10, key=b"k1"),
            wrong_key,
            msg(GOOD.SerializeToString(), 12),
        ],
        time.time(),
    )
    assert decoded.rejected == 2
    (k1, garbage), (k2, mismatch), (k3, good) = decoded.records
    assert (k1, k2, k3) == ("", "", "u1") and isinstance(good, Accepted)
    assert isinstance(garbage, Rejected) and isinstance(mismatch, Rejected)
    assert "in step 'read_events'" in garbage.reason and "do not parse" in garbage.reason
    assert (garbage.raw, garbage.origin, garbage.partition, garbage.offset, garbage.key) == (
        b"\xff not an event",
        TOPIC,
        3,
        10,
        b"k1",
    )
    assert "does not match user_id 'u1'" in mismatch.reason and mismatch.offset == 11


def test_an_invalid_event_names_the_field() -> None:
    bad = from_json(
        '{"eventId":"e2","userId":"u1","occurredAt":"2026-05-01T06:30:00Z","moodLogged":{"score":9}}'
    )
    [(_, record)] = decode_messages([msg(bad.SerializeToString(), 0)], 1_780_000_000).records
    assert isinstance(record, Rejected) and "mood_logged.score" in record.reason


def test_client_errors_become_rejects_and_the_end_of_a_partition_is_not_a_record() -> None:
    failed = msg(None, 4, key=None, error=KafkaError(KafkaError._MSG_TIMED_OUT))
    eof = msg(None, 5, key=None, error=KafkaError(KafkaError._PARTITION_EOF))
    decoded = decode_messages([failed, eof], time.time())
    assert decoded.rejected == 1 and len(decoded.records) == 1
    [(_, record)] = decoded.records
    assert isinstance(record, Rejected) and "kafka error" in record.reason
    assert record.raw == b"" and record.offset == 4


def test_nothing_read_decodes_to_nothing() -> None:
    decoded = decode_messages([], time.time())
    assert decoded.records == [] and decoded.rejected == 0
