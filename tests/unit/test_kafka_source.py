"""The Kafka source's decoding: one pass from client messages to keyed records, nothing lost."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, Message

from connectors import codec, kafka_source
from connectors.codec import from_json
from connectors.exceptions import ConnectorError
from connectors.kafka_source import decode_messages
from connectors.records import Accepted, Rejected
from proto import events_pb2 as pb
from tests.poison import good_event, kafka_shapes
from tests.unit.test_codec import SAMPLES

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


# --- the source's inline check against `parse_and_check` (ADR 0049) ---------------------------


def _reference(value: bytes | None, key: bytes | None, now_s: float) -> tuple[object, ...]:
    """What the source made of a message before its inline check: `parse_and_check`, then the
    key against the user id."""
    try:
        event, kind, occurred_ms = codec.parse_and_check(value or b"", now_s=now_s)
    except ConnectorError as exc:
        return ("refused", f"in step 'read_events': {exc}")
    except Exception as exc:
        return ("refused", f"in step 'read_events': {type(exc).__name__}: {exc!s:.200}")
    if key != event.user_id.encode():
        return ("refused", "key")
    return (event, kind, occurred_ms)


def _decoded(value: bytes | None, key: bytes | None, now_s: float) -> tuple[object, ...]:
    [(user_id, record)] = decode_messages([msg(value, 0, key=key)], now_s).records
    if isinstance(record, Rejected):
        assert user_id == "" and record.raw == (value or b"") and record.key == key
        key_refused = "does not match user_id" in record.reason or "has no key" in record.reason
        return ("refused", "key" if key_refused else record.reason)
    assert user_id == record.event.user_id
    return (record.event, record.kind, record.occurred_ms)


@pytest.mark.parametrize("seen", [False, True], ids=["user-not-seen", "user-seen-valid"])
def test_the_inline_check_answers_as_parse_and_check_for_every_poison_and_sample(
    seen: bool,
) -> None:
    now_s = 1_780_000_000
    user_id = "u-poison"
    kafka_source._USER_KEYS.clear()
    if seen:
        assert (
            decode_messages(
                [msg(good_event(user_id, 1).SerializeToString(), 0, key=b"u-poison")], now_s
            ).rejected
            == 0
        )
    cases: list[tuple[bytes | None, bytes | None]] = [
        (s.value, s.key) for s in kafka_shapes(user_id)
    ]
    for sample in SAMPLES.values():
        event = pb.Event()
        event.CopyFrom(sample)
        event.user_id = user_id
        cases.append((event.SerializeToString(), user_id.encode()))
        cases.append((event.SerializeToString(), b"someone-else"))
    no_payload = pb.Event(event_id="e-none", user_id=user_id)
    no_payload.occurred_at.seconds = now_s - 60
    cases.append((no_payload.SerializeToString(), user_id.encode()))
    too_big = good_event(user_id, 2)
    too_big.task_completed.project_id = "p" * (codec.MAX_EVENT_BYTES + 1)
    cases.append((too_big.SerializeToString(), user_id.encode()))
    bad_user = good_event("u poison", 3)
    cases.append((bad_user.SerializeToString(), b"u poison"))
    cases.append((None, user_id.encode()))
    for value, key in cases:
        assert _decoded(value, key, now_s) == _reference(value, key, now_s), (value or b"")[:60]
    kafka_source._USER_KEYS.clear()


def test_a_user_seen_valid_lets_no_other_id_through_and_the_cache_is_bounded() -> None:
    now_s = 1_780_000_000
    kafka_source._USER_KEYS.clear()
    good = good_event("u1", 1)
    assert decode_messages([msg(good.SerializeToString(), 0)], now_s).rejected == 0
    assert kafka_source._USER_KEYS == {"u1": b"u1"}
    for bad in ("u1\n", "u1 ", " u1"):
        event = good_event("u1", 2)
        event.user_id = bad
        [(_, record)] = decode_messages(
            [msg(event.SerializeToString(), 1, key=bad.encode())], now_s
        ).records
        assert isinstance(record, Rejected) and "field 'user_id'" in record.reason
    # A valid user whose message carries another key is refused and not remembered.
    event = good_event("u2", 3)
    [(_, record)] = decode_messages([msg(event.SerializeToString(), 2, key=b"u1")], now_s).records
    assert isinstance(record, Rejected) and "does not match" in record.reason
    assert "u2" not in kafka_source._USER_KEYS
    kafka_source._USER_KEYS.update({f"x{i}": b"" for i in range(kafka_source._USER_KEYS_KEPT)})
    assert decode_messages([msg(event.SerializeToString(), 4, key=b"u2")], now_s).rejected == 0
    assert kafka_source._USER_KEYS == {"u2": b"u2"}
    kafka_source._USER_KEYS.clear()
