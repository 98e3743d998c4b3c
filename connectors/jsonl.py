"""Event-log files: JSONL (one canonical-JSON `oo.events.v1.Event` per line) read line by line.

`read_events` turns a file or stdin into ``(line_no, Event | LineError)`` pairs:
every line is parsed and validated, a bad line becomes a `LineError` carrying
its text and the reason, never an exception, so a caller can publish the good
ones and report the bad ones with their line numbers.

Parsing has a fast path. `google.protobuf.json_format.Parse` costs ~30 us a
line; `parse_fast` does `json.loads` and builds the message by hand from tables
derived from the Event descriptor, for the shapes integrations actually write
(camelCase names, plain types, UTC timestamps ending in ``Z``). Anything else
(snake_case names, nulls, numbers as strings, offsets in timestamps, unknown
fields, duplicate keys, bad JSON) falls back to `codec.from_json`, so every
error message is json_format's own and the result is the same whichever path
ran (the unit tests check this for every payload type).

This module reads; it never writes Kafka or the store.
"""

from __future__ import annotations

import datetime as _dt
import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
from google.protobuf.descriptor import FieldDescriptor

from connectors import codec
from connectors.codec import MAX_EVENT_BYTES
from connectors.exceptions import ConnectorError, DecodeError, ValidationError
from proto import events_pb2 as pb

__all__ = [
    "MAX_LINE_CHARS",
    "LineError",
    "open_source",
    "parse_event",
    "parse_fast",
    "read_events",
    "read_line",
    "rejects_path_for",
    "without_bom",
]

MAX_LINE_CHARS = 1024 * 1024
"""A longer line is refused before parsing (a valid event is at most `codec.MAX_EVENT_BYTES`
serialized; its JSON form is rarely more than a few times that)."""


@dataclass(frozen=True, slots=True)
class LineError:
    """A line that is not a valid Event: where it was, what it said, and why it was refused."""

    line_no: int
    text: str
    error: ConnectorError

    @property
    def reason(self) -> str:
        return str(self.error)

    @property
    def field(self) -> str | None:
        """The offending field for a validation error; None when the line did not parse."""
        return self.error.field if isinstance(self.error, ValidationError) else None


# --- fast path ---------------------------------------------------------------------------

# Kinds of payload field the fast path builds; a payload field of any other kind is left to
# json_format.
_STRING, _INT32, _BOOL, _TIMESTAMP, _STRING_LIST, _ENUM = range(6)
# Envelope fields, by JSON name (any other top-level key is a payload or goes to json_format).
_EVENT_ID, _USER_ID, _OCCURRED_AT, _UTC_OFFSET, _SOURCE = range(5)
_ENVELOPE = {
    "eventId": _EVENT_ID,
    "userId": _USER_ID,
    "occurredAt": _OCCURRED_AT,
    "utcOffsetMinutes": _UTC_OFFSET,
    "source": _SOURCE,
}
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_loads = orjson.loads
_Event = pb.Event
_now = time.time

# payload JSON name -> (proto name, its fields: JSON name -> (proto name, kind, extra)); extra
# is the enum's names -> numbers for an enum field, else None.
_PayloadTable = dict[str, tuple[str, dict[str, tuple[str, int, Any]]]]


def _field_kind(field: Any) -> int | None:
    repeated = field.is_repeated
    if field.type == FieldDescriptor.TYPE_STRING:
        return _STRING_LIST if repeated else _STRING
    if repeated:
        return None
    if field.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32):
        return _INT32
    if field.type == FieldDescriptor.TYPE_BOOL:
        return _BOOL
    if field.type == FieldDescriptor.TYPE_ENUM:
        return _ENUM
    if (
        field.type == FieldDescriptor.TYPE_MESSAGE
        and field.message_type is not None
        and field.message_type.full_name == "google.protobuf.Timestamp"
    ):
        return _TIMESTAMP
    return None


def _payload_table() -> _PayloadTable:
    table: _PayloadTable = {}
    for payload in pb.Event.DESCRIPTOR.oneofs_by_name["payload"].fields:
        assert payload.message_type is not None
        fields: dict[str, tuple[str, int, Any]] = {}
        for field in payload.message_type.fields:
            kind = _field_kind(field)
            if kind is None:
                continue  # not built by hand: a line using it goes through json_format
            extra: Any = None
            if kind == _ENUM and field.enum_type is not None:
                extra = {v.name: v.number for v in field.enum_type.values}
            fields[field.json_name] = (field.name, kind, extra)
        table[payload.json_name] = (payload.name, fields)
    return table


_PAYLOADS: _PayloadTable = _payload_table()
# Payload kinds whose contract rules `_fast_line` leaves to `codec.check_payload` (their
# timestamps need no check: the only shape built by hand is always within the bounds).
_PAYLOAD_CHECKED = frozenset({"profile_updated", "preference_set", "mood_logged"})

# The one timestamp shape built by hand, ``YYYY-MM-DDTHH:MM`` + ``:SS[.f{1,9}]Z``, parsed
# as two memoised halves: events of a log fall in comparatively few minutes, and their
# second-and-fraction tails repeat. Each cache is emptied when full, so memory stays
# bounded and a stream's recent minutes stay cached. Years 0001-9999 and seconds 00-59
# only, so every such timestamp is within `codec`'s timestamp bounds.
_MINUTE_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]").fullmatch
_TAIL_SHAPE = re.compile(r":([0-5][0-9])(?:\.([0-9]{1,9}))?Z").fullmatch
_CACHE_SIZE = 100_000
_minute_starts: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM" -> epoch seconds
_tails: dict[str, tuple[int, int]] = {}  # ":SS.fffZ" -> (seconds, nanos)
# User ids already seen to match `codec.USER_ID_PATTERN` (a set lookup instead of a regex).
_good_user_ids: set[str] = set()
_user_id_ok = codec._USER_ID_RE.fullmatch


def _minute_start(prefix: str) -> int | None:
    if _MINUTE_SHAPE(prefix) is None:
        return None
    try:
        day = _dt.date(int(prefix[:4]), int(prefix[5:7]), int(prefix[8:10]))
    except ValueError:  # no such day, e.g. 2026-02-30
        return None
    start = (day.toordinal() - _EPOCH_ORDINAL) * 86_400
    start += int(prefix[11:13]) * 3600 + int(prefix[14:16]) * 60
    if len(_minute_starts) >= _CACHE_SIZE:
        _minute_starts.clear()
    _minute_starts[prefix] = start
    return start


def _tail(tail: str) -> tuple[int, int] | None:
    match = _TAIL_SHAPE(tail)
    if match is None:
        return None
    seconds, fraction = match.groups()
    # json_format's own rounding, so both paths agree to the nanosecond
    nanos = round(float("0." + fraction) * 1e9) if fraction else 0
    if len(_tails) >= _CACHE_SIZE:
        _tails.clear()
    parsed = _tails[tail] = (int(seconds), nanos)
    return parsed


def _timestamp(value: object) -> tuple[int, int] | None:
    """``YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`` as (seconds, nanos), exactly as json_format computes them.

    None for anything else (offsets, lowercase, leap seconds...): json_format decides those.
    """
    if type(value) is not str:
        return None
    minute = value[:16]
    start = _minute_starts.get(minute)
    if start is None:
        start = _minute_start(minute)
        if start is None:
            return None
    tail = value[16:]
    parsed = _tails.get(tail)
    if parsed is None:
        parsed = _tail(tail)
        if parsed is None:
            return None
    return start + parsed[0], parsed[1]


def _good_user_id(user_id: str) -> bool:
    if user_id in _good_user_ids:
        return True
    if _user_id_ok(user_id) is None:
        return False
    if len(_good_user_ids) >= _CACHE_SIZE:
        _good_user_ids.clear()
    _good_user_ids.add(user_id)
    return True


def _fast_line(
    line: bytes | str, now_s: float | None, validate: bool
) -> tuple[pb.Event, str, int] | None:
    """`read_line`'s answer for a good line in the usual shape, or None: then the slow path decides.

    The usual shape: at most `codec.MAX_EVENT_BYTES` long, no backslash (so no escape in any
    string), a JSON object of camelCase envelope fields and exactly one payload, plain types,
    timestamps as `_timestamp` reads them. The line is parsed by orjson (on the bytes: it
    checks UTF-8 itself) and the Event built by setting its fields. With `validate`, the
    contract rules of `codec.check` are checked on the values already at hand; a line that
    breaks any of them is left to the slow path, so every refusal is worded by `codec`.
    Returns only what `codec.from_json` + `codec.check` would return (the unit tests compare
    them on generated and hostile lines); never raises.
    """
    try:
        if len(line) > MAX_EVENT_BYTES:
            return None
        # Each JSON string brings two quote characters and, without escapes, no other: a line
        # with more quotes than its parsed strings account for has duplicate keys (json_format
        # refuses those, a JSON parser keeps the last).
        if type(line) is bytes:
            if b"\\" in line:
                return None
            quotes = line.count(b'"')
        else:
            if "\\" in line:
                return None
            quotes = line.count('"')  # type: ignore[arg-type]
        obj = _loads(line)
        if type(obj) is not dict:
            return None
        event = _Event()
        strings = len(obj)  # every key is a JSON string
        event_id = user_id = kind = ""
        seconds = nanos = -1
        offset = 0
        for key, value in obj.items():
            field = _ENVELOPE.get(key)
            if field is None:
                spec = _PAYLOADS.get(key)
                if spec is None or kind or type(value) is not dict:
                    return None
                kind, table = spec
                payload = getattr(event, kind)
                payload.SetInParent()
                strings += len(value)
                for name, item in value.items():
                    field_spec = table.get(name)
                    if field_spec is None:
                        return None
                    proto_name, field_kind, extra = field_spec
                    if field_kind == _STRING:
                        if type(item) is not str:
                            return None
                        setattr(payload, proto_name, item)
                        strings += 1
                    elif field_kind == _TIMESTAMP:
                        stamp = _timestamp(item)
                        if stamp is None:
                            return None
                        message = getattr(payload, proto_name)
                        message.seconds, message.nanos = stamp
                        strings += 1
                    elif field_kind == _INT32:
                        if type(item) is not int:  # json_format also takes 3.0 and "3"
                            return None
                        setattr(payload, proto_name, item)  # out of range: ValueError
                    elif field_kind == _BOOL:
                        if type(item) is not bool:  # protobuf would take 0 and 1
                            return None
                        setattr(payload, proto_name, item)
                    elif field_kind == _ENUM:
                        if type(item) is not str or item not in extra:
                            return None
                        setattr(payload, proto_name, extra[item])
                        strings += 1
                    else:  # _STRING_LIST
                        if type(item) is not list:
                            return None
                        getattr(payload, proto_name).extend(item)  # a non-string: TypeError
                        strings += len(item)
            elif field == _OCCURRED_AT:
                stamp = _timestamp(value)
                if stamp is None:
                    return None
                seconds, nanos = stamp
                occurred_at = event.occurred_at
                occurred_at.seconds = seconds
                occurred_at.nanos = nanos
                strings += 1
            elif field == _UTC_OFFSET:
                if type(value) is not int:
                    return None
                event.utc_offset_minutes = offset = value  # out of range: ValueError
            else:
                if type(value) is not str:
                    return None
                strings += 1
                if field == _EVENT_ID:
                    event.event_id = event_id = value
                elif field == _USER_ID:
                    event.user_id = user_id = value
                else:
                    event.source = value
        if quotes != 2 * strings or not kind:
            return None
        if not validate:
            return event, "", -1
        # codec.check's rules, on the values at hand
        if (
            not event_id
            or seconds < codec.MIN_OCCURRED_AT_S
            or seconds > (_now() if now_s is None else now_s) + codec.MAX_FUTURE_S
            or not -codec.MAX_OFFSET_MINUTES <= offset <= codec.MAX_OFFSET_MINUTES
            or not _good_user_id(user_id)
        ):
            return None
        if kind in _PAYLOAD_CHECKED:
            codec.check_payload(event, kind)  # ValidationError: the slow path words it
        return event, kind, seconds * 1000 + nanos // 1_000_000
    except Exception:  # anything unexpected: the slow path decides, and words the reason
        return None


def parse_fast(text: bytes | str) -> pb.Event | None:
    """The Event of one canonical-JSON line built by hand, or None when json_format must decide.

    Returns an Event only when `codec.from_json` would return an equal one.
    """
    got = _fast_line(text, None, False)
    return None if got is None else got[0]


def _not_utf8(exc: UnicodeDecodeError) -> DecodeError:
    return DecodeError(f"expected UTF-8 text; byte {exc.start} is not valid UTF-8 ({exc.reason})")


def parse_event(line: bytes | str) -> pb.Event:
    """One JSONL line as an Event (not yet validated); raises `DecodeError`."""
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
    except UnicodeDecodeError as exc:
        raise _not_utf8(exc) from exc
    event = parse_fast(text)
    return event if event is not None else codec.from_json(text)


# --- reading -----------------------------------------------------------------------------


def open_source(source: str | Path) -> IO[bytes]:
    """The bytes of `source`: a path, or ``-`` for stdin (closing it leaves stdin open)."""
    if str(source) == "-":
        return open(sys.stdin.fileno(), "rb", closefd=False)
    return open(source, "rb")


def rejects_path_for(
    source: str | Path, explicit: str | Path | None = None, *, stdin_name: str = "stdin"
) -> Path:
    """Where the rejects of reading `source` go, for every command: `explicit` when given,
    else ``<source>.rejects.jsonl`` beside it (``./<stdin_name>.rejects.jsonl`` for ``-``).

    >>> str(rejects_path_for("logs/events.jsonl")), str(rejects_path_for("-"))
    ('logs/events.jsonl.rejects.jsonl', 'stdin.rejects.jsonl')
    """
    if explicit:
        return Path(explicit)
    if str(source) == "-":
        return Path(f"{stdin_name}.rejects.jsonl")
    return Path(f"{source}.rejects.jsonl")


def without_bom(line: bytes | str) -> bytes | str:
    """The first line of a file without its byte-order mark (file framing, not event text)."""
    if isinstance(line, bytes):
        return line.removeprefix(b"\xef\xbb\xbf")
    return line.removeprefix("\ufeff")


def read_line(
    line_no: int, line: bytes | str, now_s: float | None = None, validate: bool = True
) -> tuple[pb.Event, str, int] | ConnectorError | None:
    """The one reader of an event-log line, for every command (`produce`, `backfill`, `flow --from`).

    ``(event, payload kind, occurred_at in ms)`` for a good line (kind "" and -1 without
    `validate`), a `ConnectorError` saying why a bad line is refused, None for a blank line.
    The rules: a byte-order mark before line 1 is file framing and is dropped; a line longer
    than `MAX_LINE_CHARS` is refused before parsing; UTF-8 only; the fast path, else
    json_format, so the reasons are json_format's; with `validate`, `codec.check` (the
    contract's bounds, the field named). Never raises for what a line holds: anything a
    parser lets out becomes the returned error.
    """
    if line_no == 1:
        line = without_bom(line)
    got = _fast_line(line, now_s, validate)
    if got is not None:
        return got
    try:
        if len(line) > MAX_LINE_CHARS:
            if not line.strip():
                return None
            raise DecodeError(f"line is {len(line)} characters long; at most {MAX_LINE_CHARS}")
        text = line.decode("utf-8") if type(line) is bytes else line
        if not text.strip():  # type: ignore[union-attr]
            return None
        event = codec.from_json(text)  # type: ignore[arg-type]
        if not validate:
            return event, "", -1
        kind, occurred_ms = codec.check(event, now_s=now_s, encoded_size=len(line))
    except UnicodeDecodeError as exc:
        return _not_utf8(exc)
    except ConnectorError as exc:
        return exc
    except Exception as exc:  # a parser's own failure: this line's reason, never a crash
        return DecodeError(f"{type(exc).__name__}: {exc!s:.200}")
    return event, kind, occurred_ms


def read_events(
    lines: Iterable[bytes | str], *, validate: bool = True, now_s: float | None = None
) -> Iterator[tuple[int, pb.Event | LineError]]:
    """``(line_no, Event | LineError)`` for every non-blank line; line numbers start at 1.

    Each line goes through `read_line` (the rules are there). With `validate`, an Event
    that parses but breaks a contract rule is a `LineError` naming the field. Blank lines
    are skipped (still numbered). Never raises for what a line holds.
    """
    read = read_line
    for line_no, line in enumerate(lines, start=1):
        got = read(line_no, line, now_s, validate)  # positional: this runs once a line
        if got.__class__ is tuple:
            yield line_no, got[0]  # type: ignore[index]
        elif got is not None:
            if line_no == 1:  # the text as read_line saw it
                line = without_bom(line)
            text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
            yield line_no, LineError(line_no, text.rstrip("\r\n"), got)  # type: ignore[arg-type]
