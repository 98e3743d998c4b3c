"""Poison messages and lines (issue 10): every shape that once stopped the flow or a file reader.

Shared by the unit tests (decoding, validation, readers) and the end-to-end acceptance tests
(Kafka topics and event-log files with these between good events). Each shape is built from a
good event so it differs from one only where it is meant to.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from connectors.codec import from_json, to_json
from proto import events_pb2 as pb

YEAR_10000_S = 253_402_300_800  # 10000-01-01T00:00:00Z: no longer a JSON-mappable timestamp
BEFORE_YEAR_1_S = -62_135_596_800 - 86_400


def good_event(user_id: str, n: int, *, day: int = 1) -> pb.Event:
    """A task completion of `user_id` on 2026-05-`day` (every agent that reads tasks folds it)."""
    return from_json(
        f'{{"eventId":"{user_id}-g{n}","userId":"{user_id}",'
        f'"occurredAt":"2026-05-{day:02d}T{6 + n % 12:02d}:{n % 60:02d}:00Z","utcOffsetMinutes":120,'
        f'"taskCompleted":{{"taskId":"t{n}","projectId":"p{n % 3}","dueAt":"2026-04-30T00:00:00Z"}}}}'
    )


def _event(user_id: str, name: str) -> pb.Event:
    event = pb.Event(event_id=f"{user_id}-{name}", user_id=user_id, source="poison")
    event.occurred_at.FromJsonString("2026-05-01T08:00:00Z")
    return event


def beyond_year_9999(user_id: str) -> pb.Event:
    event = _event(user_id, "y10000")
    event.mood_logged.score = 3
    event.occurred_at.seconds = YEAR_10000_S + 3600
    return event


def before_year_1(user_id: str) -> pb.Event:
    event = _event(user_id, "y0")
    event.mood_logged.score = 3
    event.occurred_at.seconds = BEFORE_YEAR_1_S
    return event


def deep_preference(user_id: str, depth: int = 1000) -> pb.Event:
    event = _event(user_id, "deep")
    event.preference_set.agent_id = "overdue-task"
    event.preference_set.param = "lateness_tolerance_days"
    event.preference_set.value_json = "[" * depth + "]" * depth
    return event


def preference(user_id: str, value_json: str, name: str) -> pb.Event:
    event = _event(user_id, name)
    event.preference_set.agent_id = "overdue-task"
    event.preference_set.param = "lateness_tolerance_days"
    event.preference_set.value_json = value_json
    return event


def huge_due_at(user_id: str) -> pb.Event:
    event = _event(user_id, "due62")
    event.task_completed.task_id = "t-overflow"
    event.task_completed.project_id = "p1"
    event.task_completed.due_at.seconds = 2**62
    return event


@dataclass(frozen=True)
class Shape:
    name: str
    value: bytes | None
    key: bytes | None
    """None: publish without a key."""
    why: str
    """A word the dead letter's reason must contain."""


def kafka_shapes(user_id: str, *, seed: int = 11) -> list[Shape]:
    """Every bad message of the acceptance test, as raw Kafka values and keys."""
    rng = random.Random(seed)
    key = user_id.encode()
    good = good_event(user_id, 999).SerializeToString()
    return [
        Shape("year 10000", beyond_year_9999(user_id).SerializeToString(), key, "occurred_at"),
        Shape("year 0", before_year_1(user_id).SerializeToString(), key, "occurred_at"),
        Shape("deep json", deep_preference(user_id).SerializeToString(), key, "value_json"),
        Shape("nan", preference(user_id, "NaN", "nan").SerializeToString(), key, "value_json"),
        Shape("1e999", preference(user_id, "1e999", "inf").SerializeToString(), key, "value_json"),
        Shape("due_at 2**62", huge_due_at(user_id).SerializeToString(), key, "due_at"),
        Shape("3 MB compressible", b"\x00" * 3_000_000, key, "parse"),
        Shape("random bytes", rng.randbytes(300), key, "read_events"),
        Shape("truncated protobuf", good[: len(good) - 7], key, "read_events"),
        Shape("null key", good_event(user_id, 998).SerializeToString(), None, "no key"),
        Shape("foreign key", good_event(user_id, 997).SerializeToString(), b"intruder", "key"),
        Shape("2 MB random", rng.randbytes(2_000_000), key, "read_events"),
    ]


def file_lines(user_id: str) -> list[tuple[str, bytes, str]]:
    """(name, line bytes without newline, a word the reject's reason must contain)."""
    return [
        ("deep json line", b"[" * 5000 + b"]" * 5000, "line"),
        ("deep value_json", to_json(deep_preference(user_id)).encode(), "value_json"),
        (
            "year 10000",
            b'{"eventId":"x1","userId":"%s","occurredAt":"10000-01-01T00:00:00Z",'
            b'"moodLogged":{"score":3}}' % user_id.encode(),
            "line",
        ),
        (
            "due_at year 10000",
            b'{"eventId":"x3","userId":"%s","occurredAt":"2026-05-01T08:00:00Z",'
            b'"taskCompleted":{"taskId":"t","dueAt":"10000-01-01T00:00:00Z"}}' % user_id.encode(),
            "line",
        ),
        ("nan", to_json(preference(user_id, "NaN", "nan")).encode(), "value_json"),
        ("not utf-8", b'{"eventId":"\xff\xfe","userId":"u"}', "UTF-8"),
        (
            "huge number",
            b'{"eventId":"x2","userId":"%s","occurredAt":"2026-05-01T08:00:00Z",'
            b'"moodLogged":{"score":1e999}}' % user_id.encode(),
            "line",
        ),
        ("not json", b"{{{ nope", "line"),
        ("over 64 KiB serialized", _big_line(user_id, 100_000), "bytes serialized"),
        ("over 1 MiB", _big_line(user_id, 1_100_000), "characters long"),
    ]


def _big_line(user_id: str, size: int) -> bytes:
    """A valid-looking completion whose project id makes the event `size` bytes or more."""
    event = good_event(user_id, 500)
    event.event_id = f"{user_id}-big{size}"
    event.task_completed.project_id = "p" * size
    return to_json(event).encode()
