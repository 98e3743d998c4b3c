"""The event codec: protobuf bytes and canonical JSON <-> `oo.events.v1.Event`, and validation.

Parsing and validation are separate so a caller can say exactly what was wrong:
`DecodeError` for input that is not an Event at all, `ValidationError` (naming
the field) for an Event that breaks a contract rule. Nothing here does I/O.
"""

from __future__ import annotations

import json
import re
import time
import zoneinfo
from functools import lru_cache

from google.protobuf import json_format
from google.protobuf.message import DecodeError as _PbDecodeError

from connectors.exceptions import DecodeError, ValidationError
from proto import events_pb2 as pb

USER_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
_USER_ID_RE = re.compile(USER_ID_PATTERN)
MIN_OCCURRED_AT_S = 946_684_800  # 2000-01-01T00:00:00Z
MAX_FUTURE_S = 86_400
MAX_OFFSET_MINUTES = 18 * 60


@lru_cache(maxsize=1)
def known_time_zones() -> frozenset[str]:
    """Every IANA zone name this machine knows (system tzdata or the `tzdata` package)."""
    return frozenset(zoneinfo.available_timezones())


_PARSE = pb.Event.FromString


def decode(data: bytes) -> pb.Event:
    """Parse serialized protobuf bytes into an Event (not yet validated)."""
    try:
        event = _PARSE(data)
    except (_PbDecodeError, RuntimeError, ValueError) as exc:
        raise DecodeError(
            f"expected an oo.events.v1.Event; got {len(data)} bytes that do not parse"
        ) from exc
    return event


def from_json(line: str | bytes) -> pb.Event:
    """Parse one line of canonical protobuf JSON into an Event (not yet validated)."""
    event = pb.Event()
    try:
        json_format.Parse(line, event)
    except json_format.ParseError as exc:
        raise DecodeError(f"expected an oo.events.v1.Event in canonical JSON; {exc}") from exc
    return event


def to_json(event: pb.Event) -> str:
    """One line of canonical protobuf JSON (camelCase, no insignificant whitespace)."""
    return json_format.MessageToJson(event, indent=None)


def validate(event: pb.Event, *, now_s: float | None = None) -> pb.Event:
    """Check the contract rules beyond parsing; return the event or raise `ValidationError`.

    >>> e = from_json('{"eventId":"e1","userId":"u1","occurredAt":"2026-05-01T06:30:00Z",'
    ...               '"moodLogged":{"score":9}}')
    >>> validate(e, now_s=1_780_000_000)
    Traceback (most recent call last):
    ...
    connectors.exceptions.ValidationError: field 'mood_logged.score': expected 1-5; got 9
    """
    check(event, now_s=now_s)
    return event


def check(event: pb.Event, *, now_s: float | None = None) -> tuple[str, int]:
    """`validate`, returning what it read on the way: (payload kind, occurred_at in ms).

    The flow hands both to `UserState.apply`, which would otherwise read them again.
    """
    if not event.event_id:
        raise ValidationError("event_id", "must not be empty")
    user_id = event.user_id
    # fullmatch: `$` alone would let a trailing newline through.
    if not _USER_ID_RE.fullmatch(user_id):
        raise ValidationError(
            "user_id", f"expected to match {USER_ID_PATTERN}; got {user_id!r:.150}"
        )
    occurred_at = event.occurred_at
    seconds = occurred_at.seconds
    if seconds < MIN_OCCURRED_AT_S:
        if not event.HasField("occurred_at"):
            raise ValidationError("occurred_at", "must be set")
        raise ValidationError(
            "occurred_at", f"must not be before 2000-01-01; got {occurred_at.ToJsonString()}"
        )
    now = time.time() if now_s is None else now_s
    if seconds > now + MAX_FUTURE_S:
        raise ValidationError(
            "occurred_at",
            f"must not be more than 1 day in the future; got {occurred_at.ToJsonString()}",
        )
    offset = event.utc_offset_minutes  # 0 when unset
    if offset and abs(offset) > MAX_OFFSET_MINUTES:
        raise ValidationError("utc_offset_minutes", f"expected within ±1080 (18 h); got {offset}")
    kind = event.WhichOneof("payload")
    if kind is None:
        raise ValidationError("payload", "exactly one payload must be set; got none")
    if kind in _PAYLOAD_RULES:
        _validate_payload(event, kind)
    return kind, seconds * 1000 + occurred_at.nanos // 1_000_000


_PAYLOAD_RULES = frozenset({"profile_updated", "preference_set", "mood_logged"})


def _validate_payload(event: pb.Event, kind: str) -> None:
    if kind == "profile_updated" and event.profile_updated.tz not in known_time_zones():
        raise ValidationError(
            "profile_updated.tz",
            f"expected a known IANA time zone; got {event.profile_updated.tz!r:.80}",
        )
    if kind == "preference_set" and event.preference_set.value_json:
        try:
            json.loads(event.preference_set.value_json)
        except ValueError:
            raise ValidationError(
                "preference_set.value_json",
                f"expected JSON or empty (clears); got {event.preference_set.value_json!r:.80}",
            ) from None
    if kind == "mood_logged" and not 1 <= event.mood_logged.score <= 5:
        raise ValidationError("mood_logged.score", f"expected 1-5; got {event.mood_logged.score}")


def parse_and_validate(data: bytes, *, now_s: float | None = None) -> pb.Event:
    """`decode` then `validate`: the whole check a consumer applies to a Kafka value."""
    return validate(decode(data), now_s=now_s)


def parse_and_check(data: bytes, *, now_s: float | None = None) -> tuple[pb.Event, str, int]:
    """`decode` then `check`: (event, payload kind, occurred_at in ms)."""
    event = decode(data)
    kind, occurred_ms = check(event, now_s=now_s)
    return event, kind, occurred_ms
