"""The line reader's fast path against the reference: `codec.from_json` + `codec.check`.

`jsonl.read_line` parses a usual line with orjson and checks the contract on the values it
already has (issues 12 and 13, "Speed"); anything else goes to json_format and `codec.check`.
Whatever path a line takes, `read_line` must answer exactly what the reference answers: the
same Event (equal, and the same bytes), kind and time, or the same error class and reason.
Checked here on generated events (canonical JSON and re-spelled), on mutations of them, and
on hostile lines.
"""

from __future__ import annotations

import json
import pickle
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from connectors import codec, line_fast
from connectors.exceptions import ConnectorError, DecodeError
from connectors.jsonl import MAX_LINE_CHARS, read_line
from connectors.records import Accepted
from features.state import UserState
from proto import events_pb2 as pb
from tests.strategies import event_logs

NOW_S = 1_780_000_000  # 2026-05-28
PAYLOADS = [f.name for f in pb.Event.DESCRIPTOR.oneofs_by_name["payload"].fields]


def reference(line_no: int, line: bytes, now_s: float = NOW_S) -> Any:
    """What `read_line` must answer, computed the slow way only."""
    if line_no == 1:
        line = line.removeprefix(b"\xef\xbb\xbf")
    if len(line) > MAX_LINE_CHARS:
        if not line.strip():
            return None
        return ("DecodeError", f"line is {len(line)} characters long; at most {MAX_LINE_CHARS}")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return ("DecodeError", "not UTF-8")
    if not text.strip():
        return None
    try:
        event = codec.from_json(text)
        kind, occurred_ms = codec.check(event, now_s=now_s, encoded_size=len(line))
    except ConnectorError as exc:
        return (type(exc).__name__, str(exc))
    except Exception as exc:  # json_format's own failure: read_line words it
        return ("DecodeError", f"{type(exc).__name__}: {exc!s:.200}")
    return (event.SerializeToString(deterministic=True), kind, occurred_ms)


def answer(line_no: int, line: bytes | str, now_s: float = NOW_S) -> Any:
    got = read_line(line_no, line, now_s)
    if got is None:
        return None
    if isinstance(got, ConnectorError):
        reason = str(got)
        if isinstance(got, DecodeError) and reason.startswith("expected UTF-8 text"):
            reason = "not UTF-8"
        return (type(got).__name__, reason)
    event, kind, occurred_ms = got
    return (event.SerializeToString(deterministic=True), kind, occurred_ms)


def assert_same(line: bytes, line_no: int = 2) -> None:
    expected = reference(line_no, line)
    assert answer(line_no, line) == expected, line[:300]
    assert answer(line_no, line.decode("utf-8", "surrogateescape")) == expected or (
        expected is not None and expected[0] == "DecodeError" and expected[1] == "not UTF-8"
    ), line[:300]


# --- generated events ---------------------------------------------------------------------

_ID = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.:", min_size=1, max_size=12)
_TEXT = st.text(max_size=10)  # any characters, lone surrogates included
_STAMP = st.integers(min_value=-62_135_596_800, max_value=253_402_300_799)
_RECENT = st.integers(min_value=946_684_700, max_value=NOW_S + 90_000)  # around the bounds
_NANOS = st.one_of(
    st.just(0), st.integers(0, 999).map(lambda n: n * 1_000_000), st.integers(0, 999_999_999)
)


@st.composite
def events(draw: st.DrawFn) -> pb.Event:
    """Events near and across every bound of `codec.check`: mostly valid, often not."""
    event = pb.Event(event_id=draw(st.one_of(_ID, _TEXT)), user_id=draw(st.one_of(_ID, _TEXT)))
    if draw(st.booleans()):
        event.source = draw(st.one_of(_ID, _TEXT))
    if draw(st.integers(0, 9)):
        event.occurred_at.seconds = draw(st.one_of(_RECENT, _STAMP))
        event.occurred_at.nanos = draw(_NANOS)
    if draw(st.booleans()):
        event.utc_offset_minutes = draw(
            st.one_of(st.integers(-1100, 1100), st.integers(-(2**31), 2**31 - 1))
        )
    if not draw(st.integers(0, 19)):
        return event  # no payload
    payload = draw(st.sampled_from(PAYLOADS))
    message = getattr(event, payload)
    message.SetInParent()
    for field in message.DESCRIPTOR.fields:
        if not draw(st.integers(0, 4)):
            continue
        if field.type == field.TYPE_STRING and field.is_repeated:
            getattr(message, field.name).extend(draw(st.lists(st.one_of(_ID, _TEXT), max_size=3)))
        elif field.name == "tz":
            message.tz = draw(st.sampled_from(["Europe/Paris", "UTC", "Mars/Base", ""]))
        elif field.name == "value_json":
            message.value_json = draw(
                st.sampled_from(["[9, 17]", '{"a": [1, 2]}', "NaN", "[" * 40 + "]" * 40, "{", ""])
            )
        elif field.type == field.TYPE_STRING:
            setattr(message, field.name, draw(st.one_of(_ID, _TEXT)))
        elif field.type == field.TYPE_INT32:
            setattr(
                message,
                field.name,
                draw(st.one_of(st.integers(-1, 7), st.integers(-(2**31), 2**31 - 1))),
            )
        elif field.type == field.TYPE_BOOL:
            setattr(message, field.name, draw(st.booleans()))
        elif field.type == field.TYPE_ENUM:
            setattr(
                message,
                field.name,
                draw(st.sampled_from([v.number for v in field.enum_type.values])),
            )
        elif field.type == field.TYPE_MESSAGE:
            stamp = getattr(message, field.name)
            stamp.seconds, stamp.nanos = draw(st.one_of(_RECENT, _STAMP)), draw(_NANOS)
    return event


def _respell(line: str, rnd: random.Random) -> list[str]:
    """The same JSON written differently: other key order, spaces, escapes, a null."""
    body = json.loads(line)
    keys = list(body)
    rnd.shuffle(keys)
    shuffled = {key: body[key] for key in keys}
    out = [
        json.dumps(body),  # ", " and ": " separators
        json.dumps(shuffled, separators=(",", ":")),
        json.dumps(body, ensure_ascii=True),  # \uXXXX escapes for anything not ASCII
        " " + line + " \r\n",
    ]
    if "source" not in body:
        out.append(line[:-1] + ',"source":null}')
    return out


def _mutations(line: str, rnd: random.Random) -> list[str]:
    """Hostile variants of a good line: duplicate keys, escaped quotes, wrong types..."""
    body = json.loads(line)
    if not body:
        return ["{,}", "{}}"]
    key = rnd.choice(list(body))
    value = json.dumps(body[key])
    return [
        line[:-1] + f',"{key}":{value}}}',  # a duplicate key, same value
        f'{{"{key}":{value},' + line[1:],  # a duplicate key first
        line.replace('"', '\\"', 1).replace('{\\"', '{"', 1),  # escaped quote
        line[:-1] + ',"noSuchField":1}',
        line.replace(f'"{key}":{value}', f'"{key}":null'),
        line.replace(f'"{key}":{value}', f'"{key}":[{value}]'),
        line.replace(f'"{key}":{value}', f'"{key}":{{"x":{value}}}'),
        line.replace(f'"{key}":{value}', f'"{key}":"{rnd.randint(0, 9)}"'),
        line.replace(
            f'"{key}":{value}', f'"{key}":{rnd.choice([True, 1.0, 2**40, -(2**63)])}'.lower()
        ),
        line.replace('Z"', '+00:00"', 1),
        line.replace('Z"', 'z"', 1),
        line.replace(":00Z", ":60Z", 1),
        line[: len(line) // 2],
        line + line,
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events(), st.randoms(use_true_random=False))
def test_every_line_is_read_as_from_json_and_check_read_it(
    event: pb.Event, rnd: random.Random
) -> None:
    line = codec.to_json(event)
    assert_same(line.encode())
    assert_same(b"\xef\xbb\xbf" + line.encode(), line_no=1)
    assert_same(b"\xef\xbb\xbf" + line.encode(), line_no=2)
    for variant in _respell(line, rnd) + _mutations(line, rnd):
        assert_same(variant.encode("utf-8", "surrogatepass"))


def _quoted_id() -> pb.Event:
    """A valid event whose id is one quote character (found by Hypothesis): its canonical
    JSON has an escaped quote, which the fast path leaves to the slow one."""
    event = pb.Event(event_id='"', user_id="u1", source="s")
    event.occurred_at.FromMilliseconds((NOW_S - 60) * 1000)
    event.task_created.task_id = "t"
    return event


@settings(max_examples=200, deadline=None)
@given(events())
@example(_quoted_id())
def test_usual_lines_take_the_fast_path(event: pb.Event) -> None:
    """Not vacuous: canonical JSON of a valid event is read without json_format."""
    line = codec.to_json(event)
    try:
        expected = codec.check(event, now_s=NOW_S)
    except ConnectorError:
        return
    if any(0xD800 <= ord(c) <= 0xDFFF for c in line):
        return  # canonical JSON escapes a lone surrogate: json_format decides
    if '\\"' in line:
        return  # an escaped quote is outside the usual shape: the slow path decides
    got = line_fast.fast_line(line.encode(), NOW_S, True)
    assert got is not None, line
    assert got[0] == event and (got[1], got[2]) == expected


# --- hostile lines ------------------------------------------------------------------------

GOOD = (
    '{"eventId":"e1","userId":"u-1","occurredAt":"2026-01-02T03:04:05.120Z",'
    '"utcOffsetMinutes":60,"source":"s","taskCreated":{"taskId":"t1","dueAt":"2026-01-03T00:00:00Z"}}'
)
HOSTILE: list[bytes] = [
    GOOD.encode(),
    b"",
    b"\n",
    b" \t\r\n",
    b"\x0b\n",
    b"\xef\xbb\xbf" + GOOD.encode(),
    b"\xef\xbb\xbf\xef\xbb\xbf" + GOOD.encode(),
    GOOD.encode().replace(b"t1", b"t\xff"),
    GOOD.encode().replace(b"t1", b"t\xed\xa0\x80"),  # a surrogate encoded in UTF-8
    GOOD.encode().replace(b"t1", b"t\\ud800"),
    GOOD.encode().replace(b"t1", b"t\\udc00\\ud800"),
    GOOD.encode().replace(b"t1", b"\\ud83d\\ude00"),  # a pair: valid
    GOOD.encode().replace(b"t1", b't\\"1'),
    GOOD.encode().replace(b"t1", b"t\\\\"),
    GOOD.encode().replace(b"t1", b"t\\u0000"),
    GOOD.encode().replace(b"t1", b"t\t1"),  # a raw control character
    GOOD.encode().replace(b"t1", b"t\x7f\xc2\x85"),
    GOOD.encode().replace(b'"e1"', b'""'),
    GOOD.encode().replace(b'"u-1"', b'"u 1"'),
    GOOD.encode().replace(b'"u-1"', b'"u-1\\n"'),
    GOOD.encode().replace(b'"u-1"', b'"' + b"u" * 129 + b'"'),
    GOOD.encode().replace(b":60,", b":1080,"),
    GOOD.encode().replace(b":60,", b":-1081,"),
    GOOD.encode().replace(b":60,", b":2147483648,"),
    GOOD.encode().replace(b":60,", b":60.0,"),
    GOOD.encode().replace(b":60,", b":1e2,"),
    GOOD.encode().replace(b":60,", b":18446744073709551616,"),
    GOOD.encode().replace(b"2026-01-02T03:04:05.120Z", b"1999-12-31T23:59:59.999Z"),
    GOOD.encode().replace(b"2026-01-02T03:04:05.120Z", b"2000-01-01T00:00:00Z"),
    GOOD.encode().replace(b"2026-01-02T03:04:05.120Z", b"2026-05-29T09:46:40Z"),  # now + 1 day
    GOOD.encode().replace(b"2026-01-02T03:04:05.120Z", b"2026-05-29T09:46:41Z"),
    GOOD.encode().replace(b"2026-01-02T03:04:05.120Z", b"2026-01-02T03:04:05.1234567895Z"),
    GOOD.encode().replace(b"2026-01-03T00:00:00Z", b"0001-01-01T00:00:00Z"),
    GOOD.encode().replace(b"2026-01-03T00:00:00Z", b"0000-12-31T23:59:59Z"),
    GOOD.encode().replace(b"2026-01-03T00:00:00Z", b"9999-12-31T23:59:59.999999999Z"),
    GOOD.encode().replace(b"2026-01-03T00:00:00Z", b"2026-01-03T00:00:00+14:00"),
    b'{"eventId":"e","userId":"u","occurredAt":"2026-01-01T00:00:00Z","moodLogged":{"score":0}}',
    b'{"eventId":"e","userId":"u","occurredAt":"2026-01-01T00:00:00Z","moodLogged":{"score":5}}',
    b'{"eventId":"e","userId":"u","occurredAt":"2026-01-01T00:00:00Z","moodLogged":{}}',
    b'{"eventId":"e","userId":"u","occurredAt":"2026-01-01T00:00:00Z","profileUpdated":{"tz":"Nowhere/X"}}',
    b'{"eventId":"e","userId":"u","occurredAt":"2026-01-01T00:00:00Z",'
    b'"preferenceSet":{"agentId":"a","param":"p","valueJson":"' + b"[" * 33 + b"]" * 33 + b'"}}',
    b'{"eventId":"e","userId":"u","occurredAt":"2026-01-01T00:00:00Z",'
    b'"preferenceSet":{"agentId":"a","param":"p","valueJson":"[1e999]"}}',
    b'{"eventId":"e","userId":"u","occurredAt":"2026-01-01T00:00:00Z",'
    b'"preferenceSet":{"agentId":"a","param":"p","valueJson":"{\\"a\\": 9007199254740993}"}}',
    b'{"eventId":"e","userId":"u","occurredAt":"2026-01-01T00:00:00Z","tipShown":{"agentIds":["a",null]}}',
    b'{"eventId":"e","userId":"u","occurredAt":"2026-01-01T00:00:00Z","tipReaction":{"reaction":"REACTION_LIKE"}}',
    b'{"eventId":"e","userId":"u","occurredAt":"2026-01-01T00:00:00Z","tipReaction":{"reaction":2}}',
    b'{"eventId":"e","userId":"u","occurredAt":"2026-01-01T00:00:00Z","contextChanged":{"active":1}}',
    b'{"eventId":"e","userId":"u","occurredAt":"2026-01-01T00:00:00Z","userDeleted":{},"habitChecked":{}}',
    b'{"eventId":"e","userId":"u","occurredAt":"2026-01-01T00:00:00Z"}',
    b'{"eventId":"e","userId":"u","occurredAt":"2026-01-01T00:00:00Z","user_deleted":{}}',
    b'{"eventId":"e","userId":"u","occurredAt":"2026-01-01T00:00:00Z","userDeleted":{"x":'
    + b"[" * 3000
    + b"]" * 3000
    + b"}}",
    b"[" * 100_000,
    b'{"eventId":"e","userId":"u","occurredAt":"2026-01-01T00:00:00Z","habitChecked":{"habitId":"'
    + b"h" * 70_000
    + b'"}}',  # longer than an event may be
    b'{"eventId":"e","userId":"u","occurredAt":"2026-01-01T00:00:00Z","habitChecked":{"habitId":"'
    + b"h" * MAX_LINE_CHARS
    + b'"}}',
    b" " * (MAX_LINE_CHARS + 1),
    b"NaN",
    b"null",
    b"{}",
    b'"\\u00e9"',
]


@pytest.mark.parametrize("line", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.parametrize("line_no", [1, 2])
def test_hostile_lines_are_read_as_from_json_and_check_read_them(line: bytes, line_no: int) -> None:
    expected = reference(line_no, line)
    assert answer(line_no, line) == expected


def test_a_good_line_is_checked_without_codec_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path does `codec.check`'s work on the values it parsed (it was called for
    every line before); a line that breaks a rule still gets `codec.check`'s own reason."""

    def refuse(*_: object, **__: object) -> tuple[str, int]:
        raise AssertionError("codec.check called for a good line")

    monkeypatch.setattr(codec, "check", refuse)
    got = read_line(2, GOOD.encode(), NOW_S)
    assert isinstance(got, tuple) and got[1:] == ("task_created", 1_767_323_045_120)
    monkeypatch.undo()
    bad = read_line(2, GOOD.replace('"e1"', '""').encode(), NOW_S)
    assert isinstance(bad, ConnectorError) and str(bad) == "field 'event_id': must not be empty"


# --- fast_line_kept: the same answers, without the Event of a line its reader does not keep ---


def assert_kept_agrees(line: bytes | str) -> None:
    """`fast_line_kept` answers what `fast_line` answers (None or not, kind, time), with the
    Event exactly when the reader keeps it: a user in `horizons`, and not after its horizon
    unless a consent change or a deletion (or a kind whose rules need the Event)."""
    full = line_fast.fast_line(line, NOW_S, True)
    user = full[0].user_id if full is not None else "u-1"
    for horizons in ({}, {"other": 1 << 62}, {user: 1 << 62}, {user: -(1 << 62)}):
        got = line_fast.fast_line_kept(line, NOW_S, horizons)
        if full is None:
            assert got is None, (line[:300], horizons)
            continue
        assert got is not None, (line[:300], horizons)
        event, kind, occurred_ms = got
        assert (kind, occurred_ms) == full[1:], (line[:300], horizons)
        kept = user in horizons and (
            occurred_ms <= horizons[user] or kind in ("consent_changed", "user_deleted")
        )
        if kept:
            assert event == full[0] and event is not None, (line[:300], horizons)
            assert event.SerializeToString() == full[0].SerializeToString()
        elif event is not None:  # built all the same: its rules need the Event
            assert kind in ("profile_updated", "preference_set", "mood_logged"), kind
            assert event == full[0]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events(), st.randoms(use_true_random=False))
def test_kept_lines_are_read_as_fast_line_reads_them(event: pb.Event, rnd: random.Random) -> None:
    line = codec.to_json(event)
    assert_kept_agrees(line.encode())
    assert_kept_agrees(line)
    for variant in _respell(line, rnd) + _mutations(line, rnd):
        assert_kept_agrees(variant.encode("utf-8", "surrogatepass"))


KEPT_HOSTILE = [
    *HOSTILE,
    GOOD.encode().replace(b'"taskCreated"', b'"tipShown"').replace(b'"taskId"', b'"tipId"'),
    b'{"eventId":"e1","userId":"u-1","occurredAt":"2026-01-02T03:04:05Z","source":"s",'
    b'"tipShown":{"tipId":"t","agentIds":["a","b"]}}',
    b'{"eventId":"e1","userId":"u-1","occurredAt":"2026-01-02T03:04:05Z","source":"s",'
    b'"tipShown":{"tipId":"t","agentIds":["a",1]},"x":"y"}',
    b'{"eventId":"e1","userId":"u-1","occurredAt":"2026-01-02T03:04:05Z","source":"s",'
    b'"tipShown":{"tipId":"t","agentIds":[1,"a\\"b"]}}',
    b'{"eventId":"e1","userId":"u-1","occurredAt":"2026-01-02T03:04:05Z","source":"s",'
    b'"tipShown":{"tipId":"t","agentIds":[null,"a","b"]}}',
    b'{"eventId":"e1","userId":"u-1","occurredAt":"2026-01-02T03:04:05Z","source":"s",'
    b'"moodLogged":{"score":2147483648}}',
    b'{"eventId":"e1","userId":"u-1","occurredAt":"2026-01-02T03:04:05Z","source":"s",'
    b'"moodLogged":{"score":3}}',
    b'{"eventId":"e1","userId":"u-1","occurredAt":"2026-01-02T03:04:05Z","source":"s",'
    b'"consentChanged":{"consent":"c","granted":true}}',
    b'{"eventId":"e1","userId":"u-1","occurredAt":"2026-01-02T03:04:05Z","source":"s",'
    b'"userDeleted":{}}',
    b'{"eventId":"e1","userId":"u-1","occurredAt":"2026-01-02T03:04:05Z","source":"s",'
    b'"tipReaction":{"tipId":"t","reaction":"REACTION_LIKE"}}',
]


@pytest.mark.parametrize("line", KEPT_HOSTILE, ids=range(len(KEPT_HOSTILE)))
def test_kept_hostile_lines_are_read_as_fast_line_reads_them(line: bytes) -> None:
    assert_kept_agrees(line)


# --- plain events (the backfill's fold, ADR 0054) ------------------------------------------


def assert_reads_alike(plain: Any, message: Any) -> None:
    """`plain` reads as the protobuf `message` does: every field (its value and type, unset
    ones included), every presence and oneof, recursively."""
    for field in message.DESCRIPTOR.fields:
        mine, theirs = getattr(plain, field.name), getattr(message, field.name)
        if field.has_presence:
            assert plain.HasField(field.name) == message.HasField(field.name), field.name
        if field.type == field.TYPE_MESSAGE and not field.is_repeated:
            assert_reads_alike(mine, theirs)
        elif field.is_repeated:
            assert list(mine) == list(theirs), field.name
        else:
            assert (type(mine), mine) == (type(theirs), theirs), field.name
    for oneof in message.DESCRIPTOR.oneofs:
        assert plain.WhichOneof(oneof.name) == message.WhichOneof(oneof.name)
        assert plain.HasField(oneof.name) == message.HasField(oneof.name)


def assert_plain_agrees(line: bytes | str) -> None:
    """`fast_line_plain` answers what `fast_line` answers, with an event that reads alike."""
    full = line_fast.fast_line(line, NOW_S, True)
    plain = line_fast.fast_line_plain(line, NOW_S)
    assert (plain is None) == (full is None), line[:300]
    if plain is None or full is None:
        return
    assert plain[1:] == full[1:]
    assert isinstance(plain[0], line_fast.PlainEvent)
    assert_reads_alike(plain[0], full[0])
    assert plain[0] == full[0] and plain[0].to_proto() == full[0]
    assert plain[0].SerializeToString() == full[0].SerializeToString()
    assert pickle.loads(pickle.dumps(plain[0])) == full[0]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events(), st.randoms(use_true_random=False))
def test_plain_lines_are_read_as_fast_line_reads_them(event: pb.Event, rnd: random.Random) -> None:
    line = codec.to_json(event)
    assert_plain_agrees(line.encode())
    assert_plain_agrees(line)
    for variant in _respell(line, rnd) + _mutations(line, rnd):
        assert_plain_agrees(variant.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("line", KEPT_HOSTILE, ids=range(len(KEPT_HOSTILE)))
def test_plain_hostile_lines_are_read_as_fast_line_reads_them(line: bytes) -> None:
    assert_plain_agrees(line)


def test_an_unset_plain_field_reads_as_protobuf_and_refuses_as_protobuf() -> None:
    line = GOOD.encode().replace(b',"dueAt":"2026-01-03T00:00:00Z"', b"")
    got = line_fast.fast_line_plain(line, NOW_S)
    assert got is not None
    event = got[0]
    assert not event.task_created.HasField("due_at")
    assert (event.task_created.due_at.seconds, event.task_created.due_at.nanos) == (0, 0)
    assert event.tip_shown.agent_ids == () and not event.HasField("tip_shown")
    with pytest.raises(ValueError):
        event.HasField("event_id")  # no presence, as protobuf says
    with pytest.raises(ValueError):
        event.WhichOneof("nothing")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_logs(max_users=2))
def test_plain_events_fold_as_protobuf_events(log: list[pb.Event]) -> None:
    """The fold of a log's plain events (the backfill's) equals that of its protobuf events
    (the stream's): every state, output and feedback summary, and every `apply`'s answer."""
    folded: dict[bool, dict[str, UserState]] = {False: {}, True: {}}
    answers: dict[bool, Any] = {}
    for event in log:
        line = codec.to_json(event).encode()
        for plain in (False, True):
            got = (
                line_fast.fast_line_plain(line, NOW_S)
                if plain
                else line_fast.fast_line(line, NOW_S, True)
            )
            if got is None:  # the slow path's Event, as the backfill takes it
                slow = codec.from_json(line)
                got = (slow, *codec.check(slow, now_s=NOW_S))
            state = folded[plain].setdefault(event.user_id, UserState(event.user_id))
            answers[plain] = state.apply(Accepted(got[0], 7, got[1], got[2]))
        assert answers[True] == answers[False], line
    assert folded[True] == folded[False]
    for user_id, state in folded[True].items():
        other = folded[False][user_id]
        assert state.outputs() == other.outputs() and state.feedback() == other.feedback()
