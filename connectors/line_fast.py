"""The line reader's fast path: one usual event-log line to (Event, kind, occurred_at ms), or None.

`fast_line` is what `jsonl.read_line` tries first; None means "not a line built here": the
slow path (`codec.from_json`, json_format, then `codec.check`) decides and words every
refusal. It answers only what that slow path would answer for the same line (ADR 0022;
tests/unit/test_line_reader_fast.py compares them on generated and hostile lines).

How (issues 12 and 13, "Speed"): orjson parses the line's bytes (it checks UTF-8 itself);
the Event is built by straight-line code generated once per line shape (the top-level keys
in order, the payload's keys in order) from the Event descriptor; `codec.check`'s rules are
checked on the values already parsed; timestamps are read through two memoised halves.
Nothing here does I/O; nothing raises.
"""

from __future__ import annotations

import datetime as _dt
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import orjson
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor

from connectors import codec
from connectors.codec import MAX_EVENT_BYTES
from proto import events_pb2 as pb

__all__ = ["PlainEvent", "PlainMessage", "fast_line", "fast_line_kept", "fast_line_plain"]

# Kinds of payload field the fast path builds; a payload field of any other kind is left to
# json_format.
_STRING, _INT32, _BOOL, _TIMESTAMP, _STRING_LIST, _ENUM = range(6)
# Envelope fields: JSON name -> proto name (any other top-level key is a payload or goes to
# json_format).
_ENVELOPE = {
    "eventId": "event_id",
    "userId": "user_id",
    "occurredAt": "occurred_at",
    "utcOffsetMinutes": "utc_offset_minutes",
    "source": "source",
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
# (payload proto name, field JSON name) -> the enum's names -> numbers
_ENUMS = {
    (kind, key): extra
    for kind, fields in _PAYLOADS.values()
    for key, (_, field_kind, extra) in fields.items()
    if field_kind == _ENUM
}
# Payload kinds whose contract rules `fast_line` leaves to `codec.check_payload` (their
# timestamps need no check: the only shape built by hand is always within the bounds).
_PAYLOAD_CHECKED = frozenset({"profile_updated", "preference_set", "mood_logged"})
# Kinds `fast_line_kept` builds for a user in `horizons` even after its horizon.
_KEPT_LATE = frozenset({"consent_changed", "user_deleted"})

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


# -- plain events ---------------------------------------------------------------------------
# The backfill's fold reads each event once and drops it: building the protobuf `Event` (one
# upb call a field, a wrapper a sub-message) and reading it back (the same again) cost more
# than the rest of the decode (ADR 0054). `fast_line_plain` builds instead a `PlainMessage`:
# plain Python objects generated from the same descriptors, which read as the messages do.


class PlainMessage:
    """A message as plain attributes, read-only by convention, for a reader that only reads.

    Reads as the protobuf message of `DESCRIPTOR` reads: every field (an unset one gives its
    default: "", 0, False, an empty sequence, or a shared unset message), `HasField` and
    `WhichOneof` (a field is present when it was set, even to its default, as for protobuf).
    Anything else a message offers goes through `to_proto()`, the protobuf message with the
    same fields set (`SerializeToString` is there too, for a dead letter). The classes are
    generated from the descriptors (`_plain_class`), so the fields follow the proto file.
    """

    DESCRIPTOR: ClassVar[Any]
    _PROTO: ClassVar[Any]
    _PRESENCE: ClassVar[frozenset[str]]
    _ONEOFS: ClassVar[dict[str, tuple[str, ...]]]

    def HasField(self, name: str) -> bool:
        if name in self._PRESENCE:
            return name in self.__dict__
        members = self._ONEOFS.get(name)
        if members is None:
            raise ValueError(f'{self.DESCRIPTOR.full_name} has no field "{name}" with presence')
        return any(member in self.__dict__ for member in members)

    def WhichOneof(self, name: str) -> str | None:
        members = self._ONEOFS.get(name)
        if members is None:
            raise ValueError(f'{self.DESCRIPTOR.full_name} has no oneof "{name}"')
        for member in members:
            if member in self.__dict__:
                return member
        return None

    def to_proto(self) -> Any:
        """The protobuf message with the same fields set."""
        message = self._PROTO()
        for name, value in vars(self).items():
            if isinstance(value, PlainMessage):
                field = getattr(message, name)
                field.SetInParent()
                field.MergeFrom(value.to_proto())
            elif isinstance(value, list):
                getattr(message, name).extend(value)
            else:
                setattr(message, name, value)
        return message

    def __reduce__(self) -> tuple[Any, tuple[str, bytes]]:
        # Unpickled as its protobuf message (which reads alike): the classes are generated.
        return _proto_from_string, (self.DESCRIPTOR.full_name, self.SerializeToString())

    def SerializeToString(self) -> bytes:
        return self.to_proto().SerializeToString()  # type: ignore[no-any-return]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PlainMessage):
            other = other.to_proto()
        return bool(self.to_proto() == other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_proto()!s})"


def _plain_class(descriptor: Any, made: dict[str, type[PlainMessage]]) -> type[PlainMessage]:
    """The `PlainMessage` class of a message descriptor (its message fields' classes too)."""
    cls = made.get(descriptor.full_name)
    if cls is not None:
        return cls
    namespace: dict[str, Any] = {
        "__doc__": f"`{descriptor.full_name}` as a `PlainMessage`.",
        "DESCRIPTOR": descriptor,
        "_PROTO": message_factory.GetMessageClass(descriptor),
        "_PRESENCE": frozenset(f.name for f in descriptor.fields if f.has_presence),
        "_ONEOFS": {o.name: tuple(f.name for f in o.fields) for o in descriptor.oneofs},
    }
    cls = made[descriptor.full_name] = type(f"Plain{descriptor.name}", (PlainMessage,), namespace)
    for field in descriptor.fields:
        if field.is_repeated:
            default: Any = ()
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            default = _plain_class(field.message_type, made)()  # shared: never set a field of it
        else:
            default = field.default_value
        setattr(cls, field.name, default)
    return cls


def _proto_from_string(full_name: str, data: bytes) -> Any:
    return _PLAIN_CLASSES[full_name]._PROTO.FromString(data)


_PLAIN_CLASSES: dict[str, type[PlainMessage]] = {}
PlainEvent = _plain_class(pb.Event.DESCRIPTOR, _PLAIN_CLASSES)
PlainTimestamp = _PLAIN_CLASSES["google.protobuf.Timestamp"]
_PLAIN_PAYLOADS = {
    field.name: _plain_class(field.message_type, _PLAIN_CLASSES)
    for field in pb.Event.DESCRIPTOR.oneofs_by_name["payload"].fields
}
"""payload name -> its `PlainMessage` class."""


# A builder per shape: the Event of one line is built by straight-line code generated for the
# line's shape (its top-level keys in order, and its payload's keys in order), because a
# generic walk over the keys cost more than the parsing. Only names from the Event
# descriptor ever go into the generated code, never text from a line: a shape with any
# other key gets `_not_built`. Both caches are emptied when full.
_Builder = Callable[[dict[str, Any], dict[str, Any], int, "float | None", bool], Any]
_MAX_SHAPES = 1_000
_MISSING: Any = object()
_shapes: dict[tuple[str, ...], tuple[str, dict[tuple[str, ...], _Builder]] | None] = {}
_plain_shapes: dict[tuple[str, ...], tuple[str, dict[tuple[str, ...], _Builder]] | None] = {}


def _not_built(*_: object) -> None:
    return None


def _shape(
    keys: tuple[str, ...], shapes: dict[tuple[str, ...], Any]
) -> tuple[str, dict[tuple[str, ...], _Builder]] | None:
    """The payload key of a line with these top-level keys, and its builders; None when the
    fast path does not build such a line (unknown keys, no payload or more than one). `shapes`
    (the cache it goes into) is emptied when full."""
    payloads = [key for key in keys if key in _PAYLOADS]
    if len(payloads) != 1 or any(key not in _ENVELOPE and key not in _PAYLOADS for key in keys):
        return None
    if len(shapes) >= _MAX_SHAPES:
        shapes.clear()
    return payloads[0], {}


def _stamp_lines(text: str, seconds: str, nanos: str) -> list[str]:
    """Generated lines: `seconds` and `nanos` of the timestamp `text` (`_timestamp` inlined for
    the cached case, as it runs for nearly every line), or return None."""
    return [
        f"t = {text}",
        "if type(t) is not str: return None",
        "start = _minute_starts.get(t[:16])",
        "tail = _tails.get(t[16:])",
        "if start is None or tail is None:",
        "    tail = _timestamp(t)",
        "    if tail is None: return None",
        "    start = 0",
        f"{seconds} = start + tail[0]",
        f"{nanos} = tail[1]",
    ]


def _sub(target: str, plain: bool) -> str:
    """The generated expression of a timestamp field `target` about to be set: protobuf's own
    sub-message, or a new `PlainTimestamp` assigned to it."""
    return f"{target} = _PlainTimestamp()" if plain else target


def _builder(
    top: tuple[str, ...], payload_key: str, fields: tuple[str, ...], plain: bool = False
) -> _Builder:
    """The generated `build(obj, payload, quotes, now_s, validate)` for lines of this shape:
    `fast_line`'s answer for such a line (None: the slow path decides); may raise
    `TypeError`/`ValueError` on a value protobuf refuses (the caller catches them). With
    `plain`, the event built is a `PlainMessage` (`fast_line_plain`): what protobuf would
    refuse is checked by hand first, so it answers for the same lines."""
    kind, table = _PAYLOADS[payload_key]
    if any(name not in table for name in fields):
        return _not_built
    strings = len(top) + len(fields)  # keys
    check, build = [], []  # lines of the two halves: read and check, then set
    refusals: list[str] = []  # what protobuf refuses in `build`, checked by hand
    for key in top:
        if key == "occurredAt":
            check += _stamp_lines(f"obj[{key!r}]", "seconds", "nanos")
            build += [f"occurred_at = {_sub('event.occurred_at', plain)}"]
            build += ["occurred_at.seconds = seconds", "if nanos: occurred_at.nanos = nanos"]
            strings += 1
        elif key == "utcOffsetMinutes":
            check += [f"offset = obj[{key!r}]", "if type(offset) is not int: return None"]
            build += ["event.utc_offset_minutes = offset"]  # out of range: ValueError
            refusals += ["if not -0x80000000 <= offset <= 0x7FFFFFFF: return None"]
        elif key != payload_key:
            name = _ENVELOPE[key]
            check += [f"{name} = obj[{key!r}]", f"if type({name}) is not str: return None"]
            build += [f"event.{name} = {name}"]
            strings += 1
    # setting any field, even to its default, sets the payload; an empty one is set apart
    if plain:
        build += [f"payload_message = event.{kind} = _PlainPayload()"]
    else:
        build += [f"payload_message = event.{kind}"]
        if not fields:
            build += ["payload_message.SetInParent()"]
    for n, key in enumerate(fields):
        name, field_kind, _ = table[key]
        value, target = f"v{n}", f"payload_message.{name}"
        check += [f"{value} = payload[{key!r}]"]
        if field_kind == _STRING:
            check += [f"if type({value}) is not str: return None"]
            build += [f"{target} = {value}"]
            strings += 1
        elif field_kind == _TIMESTAMP:
            check += _stamp_lines(value, f"{value}s", f"{value}n")
            # setting `seconds`, even to 0, marks the timestamp present; nanos 0 is the default
            build += [f"m = {_sub(target, plain)}", f"m.seconds = {value}s"]
            build += [f"if {value}n: m.nanos = {value}n"]
            strings += 1
        elif field_kind == _INT32:  # json_format also takes 3.0 and "3": the slow path
            check += [f"if type({value}) is not int: return None"]
            build += [f"{target} = {value}"]  # out of range: ValueError
            refusals += [f"if not -0x80000000 <= {value} <= 0x7FFFFFFF: return None"]
        elif field_kind == _BOOL:  # protobuf would take 0 and 1
            check += [f"if type({value}) is not bool: return None"]
            build += [f"{target} = {value}"]
        elif field_kind == _ENUM:
            check += [f"if type({value}) is not str: return None"]
            check += [f"{value} = _ENUMS[{kind!r}, {key!r}].get({value})"]
            check += [f"if {value} is None: return None"]
            build += [f"{target} = {value}"]
            strings += 1
        else:  # _STRING_LIST; a non-string element: TypeError
            check += [f"if type({value}) is not list: return None", f"listed += len({value})"]
            build += [f"{target} = list({value})" if plain else f"{target}.extend({value})"]
            refusals += [f"for x in {value}:", "    if type(x) is not str: return None"]
    rules = "check_payload(event, kind)" if kind in _PAYLOAD_CHECKED else "pass"
    # With `horizons` (`fast_line_kept`), an event its reader would not keep is only checked:
    # what setting the values would refuse is checked by hand, and no Event is built. A kind
    # whose rules need the Event is always built; so is a consent change or a deletion of a
    # user read (the reader keeps those after the horizon too).
    skip: list[str] = []
    if kind not in _PAYLOAD_CHECKED:
        late = "" if kind in _KEPT_LATE else " or occurred_ms > horizon"
        skip = [
            "if horizons is not None:",
            "    occurred_ms = seconds * 1000 + nanos // 1_000_000",
            "    horizon = horizons.get(user_id)",
            f"    if horizon is None{late}:",
            *[f"        {line}" for line in refusals],
            "        return None, kind, occurred_ms",
        ]
    if plain:  # nothing refuses a value when it is set: every refusal is checked first
        check += refusals
        skip = []
    source = "\n    ".join(
        [
            "def build(obj, payload, quotes, now_s, validate, horizons=None):",
            "event_id = user_id = ''",
            "seconds = nanos = -1",
            "offset = listed = 0",
            *check,
            f"if quotes != 2 * ({strings} + listed): return None",
            "if validate and (",
            "    not event_id",
            "    or seconds < MIN_OCCURRED_AT_S",
            "    or seconds > (_now() if now_s is None else now_s) + MAX_FUTURE_S",
            "    or not -MAX_OFFSET_MINUTES <= offset <= MAX_OFFSET_MINUTES",
            "    or (user_id not in _good_user_ids and not _good_user_id(user_id))",
            "): return None",
            *skip,
            "event = _PlainEvent()" if plain else "event = _Event()",
            *build,
            "if not validate: return event, '', -1",
            rules,
            "return event, kind, seconds * 1000 + nanos // 1_000_000",
        ]
    )
    namespace: dict[str, Any] = {
        "_timestamp": _timestamp,
        "_ENUMS": _ENUMS,
        "_Event": _Event,
        "_PlainEvent": PlainEvent,
        "_PlainPayload": _PLAIN_PAYLOADS.get(kind),
        "_PlainTimestamp": PlainTimestamp,
        "_now": _now,
        # codec's memo of user ids seen valid (one set for both paths; codec empties it in
        # place, so this reference stays the set codec fills)
        "_good_user_id": codec._good_user_id,
        "_good_user_ids": codec._GOOD_USER_IDS,
        "_minute_starts": _minute_starts,
        "_tails": _tails,
        "check_payload": codec.check_payload,
        "kind": kind,
        "MIN_OCCURRED_AT_S": codec.MIN_OCCURRED_AT_S,
        "MAX_FUTURE_S": codec.MAX_FUTURE_S,
        "MAX_OFFSET_MINUTES": codec.MAX_OFFSET_MINUTES,
    }
    exec(source, namespace)  # names from the descriptor only, never text of a line
    built: _Builder = namespace["build"]
    return built


def fast_line(
    line: bytes | str,
    now_s: float | None,
    validate: bool,
    horizons: Mapping[str, int] | None = None,
    *,
    plain: bool = False,
) -> tuple[pb.Event, str, int] | None:
    """`jsonl.read_line`'s answer for a good line in the usual shape; None: the slow path decides.

    The usual shape: at most `codec.MAX_EVENT_BYTES` long, a JSON object of camelCase
    envelope fields and exactly one payload, plain types, timestamps as `_timestamp` reads
    them, no escaped quote, no duplicate key. The line is parsed by orjson (on
    the bytes: it checks UTF-8 itself) and the Event built by its shape's builder. With
    `validate`, the contract rules of `codec.check` are checked on the values at hand; a line
    that breaks any of them is left to the slow path, so every refusal is worded by `codec`.
    Returns only what `codec.from_json` + `codec.check` would return (the unit tests compare
    them on generated and hostile lines); never raises. `horizons`: see `fast_line_kept`;
    `plain`: see `fast_line_plain` (its builders are kept apart from the protobuf ones).
    """
    try:
        if len(line) > MAX_EVENT_BYTES:
            return None
        # Each JSON string brings two quote characters; an escaped quote brings one more. A
        # line with more quotes than its parsed strings account for has escaped quotes or
        # duplicate keys (json_format refuses those, a JSON parser keeps the last): the
        # builder leaves it to the slow path.
        quotes = line.count(b'"' if type(line) is bytes else '"')  # type: ignore[arg-type]
        obj = _loads(line)
        if type(obj) is not dict:
            return None
        keys = tuple(obj)
        shapes = _plain_shapes if plain else _shapes
        shape = shapes.get(keys, _MISSING)
        if shape is _MISSING:
            shape = shapes[keys] = _shape(keys, shapes)
        if shape is None:
            return None
        payload_key, builders = shape
        payload = obj[payload_key]
        if type(payload) is not dict:
            return None
        fields = tuple(payload)
        build = builders.get(fields)
        if build is None:
            if len(builders) >= _MAX_SHAPES:
                builders.clear()
            build = builders[fields] = _builder(keys, payload_key, fields, plain=plain)
        return build(obj, payload, quotes, now_s, validate, horizons)  # type: ignore[no-any-return]
    except Exception:  # anything unexpected: the slow path decides, and words the reason
        return None


def fast_line_kept(
    line: bytes | str, now_s: float | None, horizons: Mapping[str, int]
) -> tuple[pb.Event | None, str, int] | None:
    """`fast_line(line, now_s, True)` for a reader that keeps only some events: the same
    answer, except that the Event is None (not built) when the reader would not keep it,
    that is when its user is not in `horizons` (user id -> the latest `occurred_ms` kept), or
    its `occurred_ms` is after the user's horizon and it is neither a consent change nor a
    deletion (`training-set` keeps those, ADR 0032). The line is
    checked all the same: None still means "not a line built here" (the slow path decides),
    so a bad line is refused as by `fast_line`. Never raises."""
    # One body with `fast_line` (the builder takes `horizons`); the Event may be None here.
    return fast_line(line, now_s, True, horizons)  # type: ignore[return-value]


def fast_line_plain(line: bytes | str, now_s: float | None) -> tuple[pb.Event, str, int] | None:
    """`fast_line(line, now_s, True)` with the event as a `PlainMessage` (`PlainEvent`): the
    same lines answered, the same values, for a reader that only reads the event's fields
    (the backfill's fold, ADR 0054). Never raises."""
    return fast_line(line, now_s, True, plain=True)
