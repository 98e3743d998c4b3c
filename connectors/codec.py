"""The event codec: protobuf bytes and canonical JSON <-> `oo.events.v1.Event`, and validation.

Parsing and validation are separate so a caller can say exactly what was wrong:
`DecodeError` for input that is not an Event at all, `ValidationError` (naming
the field) for an Event that breaks a contract rule. Nothing here does I/O.
"""

from __future__ import annotations

import json
import math
import re
import time
import zoneinfo
from collections.abc import Callable
from functools import lru_cache
from operator import attrgetter
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError as _PbDecodeError

from connectors.exceptions import DecodeError, ValidationError
from proto import events_pb2 as pb

USER_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
_USER_ID_RE = re.compile(USER_ID_PATTERN)
MIN_OCCURRED_AT_S = 946_684_800  # 2000-01-01T00:00:00Z
MAX_FUTURE_S = 86_400
MAX_OFFSET_MINUTES = 18 * 60
# What protobuf's JSON mapping can write (RFC 3339, years 0001-9999): every timestamp of an
# event stays within it, so wording, serialising and folding it never fail (ADR 0011).
MIN_TIMESTAMP_S = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_TIMESTAMP_S = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_NANOS = 999_999_999
MAX_EVENT_BYTES = 64 * 1024
"""Largest serialized event: bounds every string and list of an event at once."""
MAX_VALUE_JSON_CHARS = 16 * 1024
MAX_JSON_DEPTH = 32
MAX_JSON_INT = 2**53
"""Integers beyond this lose precision as JSON doubles elsewhere: refused."""
# Timestamps inside payloads (occurred_at is checked apart, with tighter bounds).
PAYLOAD_TIMESTAMPS: dict[str, tuple[str, ...]] = {
    "task_created": ("due_at",),
    "task_updated": ("due_at",),
    "task_completed": ("due_at",),
    "calendar_event_observed": ("starts_at", "ends_at"),
}


@lru_cache(maxsize=1)
def known_time_zones() -> frozenset[str]:
    """Every IANA zone name this machine knows (system tzdata or the `tzdata` package)."""
    return frozenset(zoneinfo.available_timezones())


_PARSE = pb.Event.FromString
_PARSE_ERRORS = (_PbDecodeError, RuntimeError, ValueError, RecursionError, MemoryError)


def decode(data: bytes) -> pb.Event:
    """Parse serialized protobuf bytes into an Event (not yet validated)."""
    try:
        event = _PARSE(data)
    except _PARSE_ERRORS as exc:
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
    except RecursionError as exc:  # json.loads of a deeply nested line, before json_format
        raise DecodeError(
            "expected an oo.events.v1.Event in canonical JSON; nested too deeply"
        ) from exc
    except (ValueError, TypeError, OverflowError) as exc:  # anything else json_format lets out
        raise DecodeError(
            f"expected an oo.events.v1.Event in canonical JSON; {type(exc).__name__}: {exc!s:.200}"
        ) from exc
    return event


def timestamp_text(ts: Any) -> str:
    """A Timestamp as RFC 3339 text when it is one; else its raw fields. Never raises."""
    try:
        return str(ts.ToJsonString())
    except Exception:
        return f"seconds={ts.seconds} nanos={ts.nanos} (not a representable timestamp)"


def _check_timestamp(field: str, ts: Any) -> None:
    if not MIN_TIMESTAMP_S <= ts.seconds <= MAX_TIMESTAMP_S or not 0 <= ts.nanos <= MAX_NANOS:
        raise ValidationError(
            field,
            "expected a timestamp within 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999999Z; "
            f"got {timestamp_text(ts)}",
        )


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


def check(
    event: pb.Event, *, now_s: float | None = None, encoded_size: int | None = None
) -> tuple[str, int]:
    """`validate`, returning what it read on the way: (payload kind, occurred_at in ms).

    The flow hands both to `UserState.apply`, which would otherwise read them again.
    `encoded_size` is the length of what the event was parsed from (protobuf bytes or a JSON
    line): only beyond `MAX_EVENT_BYTES` is the event's own serialized size computed.

    Once per event in the flow, so the common case is a few integer compares: every bound is
    checked in one expression and only a failure goes on to `_refuse`, which runs the rules
    in their documented order and words the first that fails (ADR 0037).
    """
    if encoded_size is not None and encoded_size > MAX_EVENT_BYTES:
        size = event.ByteSize()
        if size > MAX_EVENT_BYTES:
            raise ValidationError(
                "event", f"expected at most {MAX_EVENT_BYTES} bytes serialized; got {size}"
            )
    user_id = event.user_id
    occurred_at = event.occurred_at
    seconds = occurred_at.seconds
    nanos = occurred_at.nanos
    offset = event.utc_offset_minutes  # 0 when unset
    now = time.time() if now_s is None else now_s
    if (
        not event.event_id
        or (user_id not in _GOOD_USER_IDS and not _good_user_id(user_id))
        or not MIN_OCCURRED_AT_S <= seconds <= now + MAX_FUTURE_S
        or not 0 <= nanos <= MAX_NANOS
        or not -MAX_OFFSET_MINUTES <= offset <= MAX_OFFSET_MINUTES
    ):
        _refuse(event, now)
    kind = event.WhichOneof("payload")
    rule = _PAYLOAD_CHECKS.get(kind)  # type: ignore[arg-type]
    if rule is not None:
        rule(event)
    elif kind is None:
        raise ValidationError("payload", "exactly one payload must be set; got none")
    return kind, seconds * 1000 + nanos // 1_000_000


_GOOD_USER_IDS: set[str] = set()
"""User ids already seen to match `USER_ID_PATTERN` (a user sends many events): a set lookup
instead of the regular expression. Emptied when full."""
_GOOD_USER_IDS_KEPT = 100_000


def _good_user_id(user_id: str) -> bool:
    # fullmatch: `$` alone would let a trailing newline through.
    if _USER_ID_RE.fullmatch(user_id) is None:
        return False
    if len(_GOOD_USER_IDS) >= _GOOD_USER_IDS_KEPT:
        _GOOD_USER_IDS.clear()
    _GOOD_USER_IDS.add(user_id)
    return True


def _refuse(event: pb.Event, now: float) -> None:
    """The envelope's rules in order, each worded: raises `ValidationError` for the first
    that fails (`check` calls it only when one does)."""
    if not event.event_id:
        raise ValidationError("event_id", "must not be empty")
    user_id = event.user_id
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
            "occurred_at", f"must not be before 2000-01-01; got {timestamp_text(occurred_at)}"
        )
    if seconds > now + MAX_FUTURE_S:
        raise ValidationError(
            "occurred_at",
            f"must not be more than 1 day in the future; got {timestamp_text(occurred_at)}",
        )
    nanos = occurred_at.nanos
    if nanos < 0 or nanos > MAX_NANOS:
        raise ValidationError("occurred_at", f"expected nanos within 0..{MAX_NANOS}; got {nanos}")
    offset = event.utc_offset_minutes
    if offset and abs(offset) > MAX_OFFSET_MINUTES:
        raise ValidationError("utc_offset_minutes", f"expected within ±1080 (18 h); got {offset}")


def _check_profile(event: pb.Event) -> None:
    if event.profile_updated.tz not in known_time_zones():
        raise ValidationError(
            "profile_updated.tz",
            f"expected a known IANA time zone; got {event.profile_updated.tz!r:.80}",
        )


def _check_preference(event: pb.Event) -> None:
    if event.preference_set.value_json:
        check_json_value("preference_set.value_json", event.preference_set.value_json)


def _check_mood(event: pb.Event) -> None:
    if not 1 <= event.mood_logged.score <= 5:
        raise ValidationError("mood_logged.score", f"expected 1-5; got {event.mood_logged.score}")


def _stamps_checker(kind: str, names: tuple[str, ...]) -> Callable[[pb.Event], None]:
    """The check of `kind`'s timestamps: integer compares on the raw fields (an unset one
    reads as 0 s 0 ns, within the bounds), the worded check only when one is out of them."""
    stamps = tuple((f"{kind}.{name}", attrgetter(f"{kind}.{name}")) for name in names)
    if len(stamps) == 1:  # the task kinds: half of all events, no loop
        [(field, read)] = stamps

        def check_stamp(event: pb.Event) -> None:
            ts = read(event)
            if not (
                MIN_TIMESTAMP_S <= ts.seconds <= MAX_TIMESTAMP_S and 0 <= ts.nanos <= MAX_NANOS
            ):
                _check_timestamp(field, ts)

        return check_stamp

    def check_stamps(event: pb.Event) -> None:
        for field, read in stamps:
            ts = read(event)
            if not (
                MIN_TIMESTAMP_S <= ts.seconds <= MAX_TIMESTAMP_S and 0 <= ts.nanos <= MAX_NANOS
            ):
                _check_timestamp(field, ts)

    return check_stamps


_PAYLOAD_CHECKS: dict[str, Callable[[pb.Event], None]] = {
    "profile_updated": _check_profile,
    "preference_set": _check_preference,
    "mood_logged": _check_mood,
    **{kind: _stamps_checker(kind, names) for kind, names in PAYLOAD_TIMESTAMPS.items()},
}
"""Payload kind -> its own contract rules (kinds without any have none here)."""


PAYLOAD_RULES: dict[str, Callable[[pb.Event], None]] = _PAYLOAD_CHECKS
"""Payload kind -> its own contract rules, for a caller that has checked the envelope as
`check` does (the Kafka source's inline check, `connectors.kafka_source.decode_messages`)."""
ONE_STAMP_READS: dict[str, Callable[[pb.Event], Any]] = {
    kind: attrgetter(f"{kind}.{name}")
    for kind, (name, *more) in PAYLOAD_TIMESTAMPS.items()
    if not more
}
"""Payload kind -> the reader of its one timestamp, for kinds whose only own rule is that
timestamp's bounds (the task kinds, half of all events): the Kafka source compares its raw
seconds and nanos inline and leaves an out-of-bounds one to `PAYLOAD_RULES`, which words it."""
RULELESS_KINDS: frozenset[str] = frozenset(
    field.name for field in pb.Event.DESCRIPTOR.oneofs_by_name["payload"].fields
) - frozenset(_PAYLOAD_CHECKS)
"""Payload kinds with no rule of their own (their events are checked by the envelope's)."""


def check_payload(event: pb.Event, kind: str) -> None:
    """The payload's own contract rules (`check` runs them; so does the JSONL reader's fast
    path); raises `ValidationError` naming the field. `kind` is the event's payload name."""
    rule = _PAYLOAD_CHECKS.get(kind)
    if rule is not None:
        rule(event)


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def _json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text` (strings skipped), without recursion."""
    depth = deepest = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is not a finite number")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > 20:
        raise ValueError(f"integer {text[:40]}... is beyond ±2**53")
    value = int(text)
    if abs(value) > MAX_JSON_INT:
        raise ValueError(f"integer {value} is beyond ±2**53")
    return value


def check_json_value(field: str, text: str) -> Any:
    """Parse a JSON value of an event, bounded: size, nesting depth, finite numbers only.

    Raises `ValidationError` naming `field`; the parser never recurses past the bound.
    """
    if len(text) > MAX_VALUE_JSON_CHARS:
        raise ValidationError(
            field, f"expected at most {MAX_VALUE_JSON_CHARS} characters of JSON; got {len(text)}"
        )
    depth = _json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise ValidationError(
            field, f"expected JSON nested at most {MAX_JSON_DEPTH} deep; got {depth} levels"
        )
    try:
        return json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
        )
    except (ValueError, RecursionError) as exc:
        raise ValidationError(
            field, f"expected JSON or empty (clears); {exc!s:.120}; got {text!r:.80}"
        ) from None


def parse_and_check(data: bytes, *, now_s: float | None = None) -> tuple[pb.Event, str, int]:
    """`decode` then `check`: (event, payload kind, occurred_at in ms).

    The Kafka source checks its usual message inline and comes here for the rest, whose
    refusal this words (ADR 0049); the benches time it as the flow's validation.
    """
    event = decode(data)
    kind, occurred_ms = check(event, now_s=now_s, encoded_size=len(data))
    return event, kind, occurred_ms
