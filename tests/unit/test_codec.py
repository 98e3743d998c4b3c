"""The event codec: validation rules, JSON and protobuf round trips, and the JSONL fast path.

The fast path (`connectors.jsonl.parse_fast`) must give exactly what
`json_format` gives, or step aside (None) so json_format decides: checked
here on every payload type, on odd-but-valid spellings, and on broken lines.
"""

from __future__ import annotations

import json
import re

import pytest
from confluent_kafka import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors import codec
from connectors.exceptions import DecodeError, ValidationError
from connectors.jsonl import LineError, parse_event, parse_fast, read_events
from connectors.kafka_source import decode_messages
from connectors.records import Accepted
from proto import events_pb2 as pb

NOW_S = 1_780_000_000  # 2026-05-28: a fixed "now" for the future-time rule
AT = "2026-05-01T06:30:00.123Z"


def _event(payload: str, body: dict[str, object], **envelope: object) -> pb.Event:
    base: dict[str, object] = {
        "eventId": "e-1",
        "userId": "u-1",
        "occurredAt": AT,
        "utcOffsetMinutes": 120,
        "source": "test",
    }
    base.update(envelope)
    base[payload] = body
    return codec.from_json(json.dumps(base))


# One event of every payload type, with every field of the payload set.
SAMPLES: dict[str, pb.Event] = {
    "task_created": _event(
        "taskCreated", {"taskId": "t1", "projectId": "p1", "dueAt": "2026-05-02T00:00:00Z"}
    ),
    "task_updated": _event(
        "taskUpdated", {"taskId": "t1", "projectId": "p2", "dueAt": "2026-05-03T12:00:00.5Z"}
    ),
    "task_completed": _event(
        "taskCompleted", {"taskId": "t1", "projectId": "p2", "dueAt": "2026-05-03T12:00:00Z"}
    ),
    "task_deleted": _event("taskDeleted", {"taskId": "t2"}),
    "habit_checked": _event("habitChecked", {"habitId": "h1"}),
    "calendar_event_observed": _event(
        "calendarEventObserved",
        {
            "calendarEventId": "c1",
            "startsAt": "2026-05-01T09:00:00Z",
            "endsAt": "2026-05-01T09:30:00.000000001Z",
        },
    ),
    "mood_logged": _event("moodLogged", {"score": 4}),
    "context_changed": _event("contextChanged", {"context": "commuting", "active": True}),
    "profile_updated": _event("profileUpdated", {"tz": "Europe/Paris"}),
    "preference_set": _event(
        "preferenceSet", {"agentId": "time_of_day", "param": "hours", "valueJson": "[9, 17]"}
    ),
    "consent_changed": _event("consentChanged", {"consent": "tasks", "granted": False}),
    "user_deleted": _event("userDeleted", {}),
    "tip_shown": _event("tipShown", {"tipId": "tip-1", "agentIds": ["momentum", "focus_area"]}),
    "tip_reaction": _event("tipReaction", {"tipId": "tip-1", "reaction": "REACTION_SNOOZE"}),
}
PAYLOADS = [f.name for f in pb.Event.DESCRIPTOR.oneofs_by_name["payload"].fields]


def test_samples_cover_every_payload_type() -> None:
    assert sorted(SAMPLES) == sorted(PAYLOADS)
    for name, event in SAMPLES.items():
        assert event.WhichOneof("payload") == name


# --- validation: every rule, with the field it names ------------------------------------


def _with(**changes: object) -> pb.Event:
    event = pb.Event()
    event.CopyFrom(SAMPLES["habit_checked"])
    for name, value in changes.items():
        if value is None:
            event.ClearField(name)
        else:
            setattr(event, name, value)
    return event


def _mood(score: int) -> pb.Event:
    event = _with()
    event.mood_logged.score = score
    return event


def _tz(tz: str) -> pb.Event:
    event = _with()
    event.profile_updated.tz = tz
    return event


def _at(seconds: int) -> pb.Event:
    event = _with()
    event.occurred_at.seconds = seconds
    return event


def _no_payload() -> pb.Event:
    event = _with()
    event.ClearField("habit_checked")
    return event


BAD_EVENTS = [
    pytest.param(_with(event_id=""), "event_id", "must not be empty", id="event_id-empty"),
    pytest.param(_with(user_id=""), "user_id", "expected to match", id="user_id-empty"),
    pytest.param(_with(user_id="a b"), "user_id", "'a b'", id="user_id-space"),
    pytest.param(_with(user_id="u" * 129), "user_id", "expected to match", id="user_id-long"),
    pytest.param(
        _with(user_id="u1\n"), "user_id", "expected to match", id="user_id-trailing-newline"
    ),
    pytest.param(_with(occurred_at=None), "occurred_at", "must be set", id="occurred_at-unset"),
    pytest.param(_at(946_684_799), "occurred_at", "before 2000-01-01", id="occurred_at-old"),
    pytest.param(
        _at(NOW_S + 86_401), "occurred_at", "1 day in the future", id="occurred_at-future"
    ),
    pytest.param(
        _with(utc_offset_minutes=1081), "utc_offset_minutes", "got 1081", id="offset-high"
    ),
    pytest.param(
        _with(utc_offset_minutes=-1081), "utc_offset_minutes", "got -1081", id="offset-low"
    ),
    pytest.param(_no_payload(), "payload", "got none", id="payload-none"),
    pytest.param(_tz("Mars/Olympus"), "profile_updated.tz", "Mars/Olympus", id="tz-unknown"),
    pytest.param(_tz(""), "profile_updated.tz", "IANA", id="tz-empty"),
    pytest.param(_mood(0), "mood_logged.score", "got 0", id="score-low"),
    pytest.param(_mood(6), "mood_logged.score", "got 6", id="score-high"),
]


@pytest.mark.parametrize(("event", "field", "detail"), BAD_EVENTS)
def test_validation_error_names_the_field(event: pb.Event, field: str, detail: str) -> None:
    with pytest.raises(ValidationError) as caught:
        codec.validate(event, now_s=NOW_S)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"field '{field}': ")
    assert detail in str(caught.value)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_sample_is_valid(name: str) -> None:
    assert codec.validate(SAMPLES[name], now_s=NOW_S) is SAMPLES[name]


def test_validation_boundaries_are_inclusive() -> None:
    for event in (
        _mood(1),
        _mood(5),
        _with(utc_offset_minutes=1080),
        _with(utc_offset_minutes=-1080),
        _at(946_684_800),
        _at(NOW_S + 86_400),
        _with(user_id="A.z_0:9-" + "x" * 120),
    ):
        codec.validate(event, now_s=NOW_S)


def test_bad_bytes_and_bad_json_are_decode_errors() -> None:
    with pytest.raises(DecodeError, match=r"expected an oo\.events\.v1\.Event; got 3 bytes"):
        codec.decode(b"\xff\xff\xff")
    with pytest.raises(DecodeError, match="canonical JSON"):
        codec.from_json('{"eventId": 1')
    with pytest.raises(DecodeError, match="noSuchField"):
        codec.from_json('{"noSuchField": 1}')


# --- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_json_round_trip_is_lossless(name: str) -> None:
    event = SAMPLES[name]
    line = codec.to_json(event)
    assert "\n" not in line
    assert codec.from_json(line) == event
    assert codec.to_json(codec.from_json(line)) == line


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_protobuf_round_trip_is_lossless(name: str) -> None:
    event = SAMPLES[name]
    assert codec.decode(event.SerializeToString()) == event


def test_offset_zero_is_kept_distinct_from_unset() -> None:
    zero = codec.from_json(codec.to_json(_with(utc_offset_minutes=0)))
    assert zero.HasField("utc_offset_minutes")
    unset = codec.from_json(codec.to_json(_with(utc_offset_minutes=None)))
    assert not unset.HasField("utc_offset_minutes")


# --- the JSONL fast path ----------------------------------------------------------------


def _reference(line: str) -> pb.Event | str:
    """What json_format makes of `line`: the Event, or the error message."""
    try:
        return codec.from_json(line)
    except DecodeError as exc:
        return str(exc)


def _assert_same(line: str) -> None:
    reference = _reference(line)
    fast = parse_fast(line)
    if fast is not None:
        assert isinstance(reference, pb.Event), (
            f"fast path accepted what json_format refuses: {line}"
        )
        assert fast == reference
        assert fast.SerializeToString(deterministic=True) == reference.SerializeToString(
            deterministic=True
        )
    try:
        parsed: pb.Event | str = parse_event(line)
    except DecodeError as exc:
        parsed = str(exc)
    assert parsed == reference


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_fast_path_takes_and_matches_every_payload_type(name: str) -> None:
    line = codec.to_json(SAMPLES[name])
    fast = parse_fast(line)
    assert fast is not None, "canonical JSON of every payload type must take the fast path"
    assert fast == SAMPLES[name]
    _assert_same(line)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_fast_path_matches_minimal_events(name: str) -> None:
    # only the payload's defaults: `{}` payloads, no offset, no source
    event = pb.Event(event_id="e", user_id="u")
    event.occurred_at.FromJsonString("2026-01-01T00:00:00Z")
    getattr(event, name).SetInParent()
    line = codec.to_json(event)
    assert parse_fast(line) == event
    _assert_same(line)


ODD_LINES = [
    # valid, but spelled in ways the fast path leaves to json_format
    '{"event_id":"e","user_id":"u","occurred_at":"2026-05-01T06:30:00Z","mood_logged":{"score":3}}',
    '{"eventId":"e","userId":"u","occurredAt":"2026-05-01T08:30:00+02:00","moodLogged":{"score":3}}',
    '{"eventId":"e","userId":"u","occurredAt":"2026-05-01T06:30:00-00:30","moodLogged":{"score":3}}',
    '{"eventId":"e","userId":"u","occurredAt":"2026-05-01T06:30:00Z","moodLogged":{"score":"3"}}',
    '{"eventId":"e","userId":"u","occurredAt":"2026-05-01T06:30:00Z","moodLogged":{"score":3.0}}',
    '{"eventId":"e","userId":"u","occurredAt":"2026-05-01T06:30:00Z","source":null,"habitChecked":{}}',
    '{"eventId":"e","userId":"u","occurredAt":"2026-05-01T06:30:00Z","tipReaction":{"reaction":2}}',
    # escaped quotes (e.g. a JSON string in valueJson) go through json_format
    '{"eventId":"e\\"q","userId":"u","occurredAt":"2026-05-01T06:30:00Z","habitChecked":{}}',
    '{"eventId":"\\u00e9","userId":"u","occurredAt":"2026-05-01T06:30:00Z","habitChecked":{}}',
    '{"eventId":"é✓","userId":"u","occurredAt":"2026-05-01T06:30:00Z","habitChecked":{}}',
    '  {"eventId" : "e", "userId" : "u", "occurredAt" : "2026-05-01T06:30:00Z", '
    '"habitChecked" : {}}  ',
    '{"eventId":"e","userId":"u","occurredAt":"2026-05-01T06:30:00.1Z","habitChecked":{}}',
    '{"eventId":"e","userId":"u","occurredAt":"2026-05-01T06:30:00.123456789Z","habitChecked":{}}',
    '{"eventId":"e","userId":"u","occurredAt":"2026-05-01T06:30:00.100000000Z","habitChecked":{}}',
    '{"eventId":"e","userId":"u","occurredAt":"2024-02-29T23:59:59.999999999Z","habitChecked":{}}',
    '{"eventId":"e","userId":"u","occurredAt":"0001-01-01T00:00:00Z","habitChecked":{}}',
    '{"eventId":"e","userId":"u","occurredAt":"9999-12-31T23:59:59Z","habitChecked":{}}',
    '{"eventId":"e","userId":"u","occurredAt":"1969-12-31T23:59:59Z","habitChecked":{}}',
    '{"utcOffsetMinutes":-2147483648,"habitChecked":{"habitId":""}}',
    '{"tipShown":{"agentIds":[]}}',
    "{}",
    # broken: json_format's error must come through unchanged
    '{"eventId":"e","eventId":"f","userId":"u","habitChecked":{}}',
    '{"eventId":"e","userId":"u","habitChecked":{},"habitChecked":{}}',
    '{"eventId":"e","userId":"u","habitChecked":{"habitId":"a","habitId":"b"}}',
    '{"eventId":"e","userId":"u","habitChecked":{},"moodLogged":{"score":1}}',
    '{"eventId":"e","userId":"u","noSuchField":1,"habitChecked":{}}',
    '{"eventId":"e","userId":"u","habitChecked":{"noSuchField":1}}',
    '{"eventId":5,"userId":"u","habitChecked":{}}',
    '{"eventId":["e"],"userId":"u","habitChecked":{}}',
    '{"eventId":"e","userId":"u","habitChecked":null}',
    '{"eventId":"e","userId":"u","habitChecked":[]}',
    '{"eventId":"e","userId":"u","occurredAt":"2026-02-30T00:00:00Z","habitChecked":{}}',
    '{"eventId":"e","userId":"u","occurredAt":"2026-05-01T24:00:00Z","habitChecked":{}}',
    '{"eventId":"e","userId":"u","occurredAt":"2026-05-01T06:60:00Z","habitChecked":{}}',
    '{"eventId":"e","userId":"u","occurredAt":"2026-05-01T06:30:60Z","habitChecked":{}}',
    '{"eventId":"e","userId":"u","occurredAt":"2026-05-01t06:30:00Z","habitChecked":{}}',
    '{"eventId":"e","userId":"u","occurredAt":"2026-05-01T06:30:00z","habitChecked":{}}',
    '{"eventId":"e","userId":"u","occurredAt":"2026-05-01T06:30:00","habitChecked":{}}',
    '{"eventId":"e","userId":"u","occurredAt":"2026-05-01T06:30:00.1234567891Z","habitChecked":{}}',
    '{"eventId":"e","userId":"u","occurredAt":"2026-05-01T06:30:00.Z","habitChecked":{}}',
    '{"eventId":"e","userId":"u","occurredAt":"\\uff12\\uff10\\uff12\\uff16-05-01T06:30:00Z","habitChecked":{}}',
    '{"eventId":"e","userId":"u","occurredAt":1777617000,"habitChecked":{}}',
    '{"eventId":"e","userId":"u","utcOffsetMinutes":true,"habitChecked":{}}',
    '{"eventId":"e","userId":"u","utcOffsetMinutes":2147483648,"habitChecked":{}}',
    '{"eventId":"e","userId":"u","contextChanged":{"active":1}}',
    '{"eventId":"e","userId":"u","contextChanged":{"active":"true"}}',
    '{"eventId":"e","userId":"u","tipReaction":{"reaction":"REACTION_LOVE"}}',
    '{"eventId":"e","userId":"u","tipShown":{"agentIds":"momentum"}}',
    '{"eventId":"e","userId":"u","tipShown":{"agentIds":["a",1]}}',
    '{"eventId":"\\ud800","userId":"u","habitChecked":{}}',
    '{"eventId":"e","userId":"u","habitChecked":{}',
    '["not", "an", "object"]',
    '"just a string"',
    "",
    "NaN",
]


@pytest.mark.parametrize("line", ODD_LINES)
def test_fast_path_agrees_with_json_format(line: str) -> None:
    _assert_same(line)


def test_fast_path_takes_the_usual_timestamp_spellings() -> None:
    for stamp in (
        "2026-05-01T06:30:00Z",
        "2026-05-01T06:30:00.1Z",
        "2026-05-01T06:30:00.123456789Z",
    ):
        line = f'{{"eventId":"e","userId":"u","occurredAt":"{stamp}","habitChecked":{{}}}}'
        assert parse_fast(line) is not None
        _assert_same(line)


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
_STAMP = st.integers(min_value=-62_135_596_800, max_value=253_402_300_799)
_NANOS = st.integers(min_value=0, max_value=999_999_999)


@st.composite
def _events(draw: st.DrawFn) -> pb.Event:
    event = pb.Event(event_id=draw(_TEXT), user_id=draw(_TEXT), source=draw(_TEXT))
    event.occurred_at.seconds = draw(_STAMP)
    event.occurred_at.nanos = draw(_NANOS)
    if draw(st.booleans()):
        event.utc_offset_minutes = draw(st.integers(min_value=-(2**31), max_value=2**31 - 1))
    payload = draw(st.sampled_from(PAYLOADS))
    message = getattr(event, payload)
    message.SetInParent()
    for field in message.DESCRIPTOR.fields:
        if field.type == field.TYPE_STRING and field.is_repeated:
            getattr(message, field.name).extend(draw(st.lists(_TEXT, max_size=3)))
        elif field.type == field.TYPE_STRING:
            setattr(message, field.name, draw(_TEXT))
        elif field.type == field.TYPE_INT32:
            setattr(message, field.name, draw(st.integers(-(2**31), 2**31 - 1)))
        elif field.type == field.TYPE_BOOL:
            setattr(message, field.name, draw(st.booleans()))
        elif field.type == field.TYPE_ENUM:
            setattr(
                message,
                field.name,
                draw(st.sampled_from([v.number for v in field.enum_type.values])),
            )
        elif field.type == field.TYPE_MESSAGE and draw(st.booleans()):
            stamp = getattr(message, field.name)
            stamp.seconds, stamp.nanos = draw(_STAMP), draw(_NANOS)
    return event


@settings(max_examples=400, deadline=None)
@given(_events())
def test_fast_path_matches_json_format_on_generated_events(event: pb.Event) -> None:
    line = codec.to_json(event)
    _assert_same(line)
    assert parse_event(line) == event


# --- reading JSONL ----------------------------------------------------------------------


def test_read_events_numbers_lines_and_splits_good_from_bad() -> None:
    good = codec.to_json(SAMPLES["mood_logged"])
    body = json.loads(good)
    body["moodLogged"]["score"] = 9
    bad_score = json.dumps(body)
    lines = [
        b"\xef\xbb\xbf" + good.encode() + b"\n",  # a BOM before the first line is tolerated
        b"\n",
        b"not json\n",
        bad_score.encode() + b"\r\n",
        b"\xff\xfe broken utf-8\n",
        good.encode(),
    ]
    results = list(read_events(lines, now_s=NOW_S))
    assert [line_no for line_no, _ in results] == [1, 3, 4, 5, 6]
    kinds = [type(item).__name__ for _, item in results]
    assert kinds == ["Event", "LineError", "LineError", "LineError", "Event"]
    not_json, score, utf8 = (item for _, item in results if isinstance(item, LineError))
    assert not_json.line_no == 3 and "canonical JSON" in not_json.reason
    assert not_json.field is None and not_json.text == "not json"
    assert score.field == "mood_logged.score" and "got 9" in score.reason
    assert score.text == bad_score
    assert "UTF-8" in utf8.reason


def test_read_events_without_validation_keeps_invalid_events() -> None:
    line = codec.to_json(_mood(9))
    [(_, event)] = list(read_events([line], validate=False))
    assert isinstance(event, pb.Event) and event.mood_logged.score == 9


# --- what check hands the fold ----------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_check_returns_the_kind_and_time_the_event_itself_carries(seed: int) -> None:
    from oo_features.generate import generate_events

    events = list(generate_events(3, 4, seed))
    assert events
    for event in events:
        kind, occurred_ms = codec.check(event, now_s=4_000_000_000)
        assert kind == event.WhichOneof("payload")
        ts = event.occurred_at
        assert occurred_ms == ts.seconds * 1000 + ts.nanos // 1_000_000
        # the same through bytes, as the Kafka source decodes
        data = event.SerializeToString()
        assert codec.parse_and_check(data, now_s=4_000_000_000) == (event, kind, occurred_ms)
        assert _as_the_source_reads(data, event.user_id, 4_000_000_000) == (
            event,
            kind,
            occurred_ms,
        )


# --- check's single-expression fast path against the rules in their documented order -------


def _as_the_source_reads(data: bytes, user_id: str, now_s: float) -> tuple[object, ...]:
    """What the Kafka source's inline check (`kafka_source.decode_messages`, ADR 0049) makes
    of `data` keyed by `user_id`, twice (the second time the user id may be one it has seen
    valid): (event, kind, occurred_ms), or ("refused", "field: reason") as `check` words it,
    or ("refused", the decode error)."""
    answers = []
    for _ in range(2):
        message = Message(
            topic="t", partition=0, offset=0, key=user_id.encode(), value=data, timestamp=(1, 1)
        )
        [(_, record)] = decode_messages([message], now_s).records
        if isinstance(record, Accepted):
            answers.append((record.event, record.kind, record.occurred_ms))
        else:
            answers.append(("refused", record.reason.removeprefix("in step 'read_events': ")))
    assert answers[0] == answers[1]
    return answers[0]


def _rules_in_order(event: pb.Event, now_s: float) -> tuple[str, int] | tuple[str, str]:
    """`codec.check` as it was written before its fast path (ADR 0037): each rule in turn,
    the first that fails worded. (kind, occurred_ms), or ("refused", "field: reason")."""
    try:
        if not event.event_id:
            raise ValidationError("event_id", "must not be empty")
        if not re.fullmatch(codec.USER_ID_PATTERN, event.user_id):
            raise ValidationError(
                "user_id", f"expected to match {codec.USER_ID_PATTERN}; got {event.user_id!r:.150}"
            )
        ts = event.occurred_at
        if ts.seconds < codec.MIN_OCCURRED_AT_S:
            if not event.HasField("occurred_at"):
                raise ValidationError("occurred_at", "must be set")
            raise ValidationError(
                "occurred_at", f"must not be before 2000-01-01; got {codec.timestamp_text(ts)}"
            )
        if ts.seconds > now_s + codec.MAX_FUTURE_S:
            raise ValidationError(
                "occurred_at",
                f"must not be more than 1 day in the future; got {codec.timestamp_text(ts)}",
            )
        if not 0 <= ts.nanos <= codec.MAX_NANOS:
            raise ValidationError(
                "occurred_at", f"expected nanos within 0..{codec.MAX_NANOS}; got {ts.nanos}"
            )
        offset = event.utc_offset_minutes
        if offset and abs(offset) > codec.MAX_OFFSET_MINUTES:
            raise ValidationError(
                "utc_offset_minutes", f"expected within ±1080 (18 h); got {offset}"
            )
        kind = event.WhichOneof("payload")
        if kind is None:
            raise ValidationError("payload", "exactly one payload must be set; got none")
        for name in codec.PAYLOAD_TIMESTAMPS.get(kind, ()):
            payload = getattr(event, kind)
            if payload.HasField(name):
                stamp = getattr(payload, name)
                if not (
                    codec.MIN_TIMESTAMP_S <= stamp.seconds <= codec.MAX_TIMESTAMP_S
                    and 0 <= stamp.nanos <= codec.MAX_NANOS
                ):
                    raise ValidationError(
                        f"{kind}.{name}",
                        "expected a timestamp within 0001-01-01T00:00:00Z..9999-12-31T23:59:59"
                        f".999999999Z; got {codec.timestamp_text(stamp)}",
                    )
        if kind == "mood_logged" and not 1 <= event.mood_logged.score <= 5:
            raise ValidationError(
                "mood_logged.score", f"expected 1-5; got {event.mood_logged.score}"
            )
    except ValidationError as exc:
        return "refused", str(exc)
    return kind, ts.seconds * 1000 + ts.nanos // 1_000_000


_CHECK_SECONDS = st.sampled_from(
    [
        *(0, -1, codec.MIN_OCCURRED_AT_S - 1, codec.MIN_OCCURRED_AT_S, NOW_S, NOW_S + 86_400),
        *(NOW_S + 86_401, codec.MIN_TIMESTAMP_S - 1, codec.MAX_TIMESTAMP_S + 1),
    ]
)
_CHECK_NANOS = st.sampled_from([0, 1, codec.MAX_NANOS, codec.MAX_NANOS + 1, -1])


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["task_created", "calendar_event_observed", "mood_logged", "habit"]),
    event_id=st.sampled_from(["", "e1"]),
    user_id=st.sampled_from(["u1", "u1\n", "", "a b", "u" * 128, "u" * 129]),
    seconds=_CHECK_SECONDS,
    nanos=_CHECK_NANOS,
    offset=st.sampled_from([None, 0, 1080, -1080, 1081, -1081]),
    stamp=st.none() | st.tuples(_CHECK_SECONDS, _CHECK_NANOS),
    second_stamp=st.none() | st.tuples(_CHECK_SECONDS, _CHECK_NANOS),
    score=st.integers(min_value=-1, max_value=6),
)
def test_check_refuses_as_the_rules_in_order_do(
    kind: str,
    event_id: str,
    user_id: str,
    seconds: int,
    nanos: int,
    offset: int | None,
    stamp: tuple[int, int] | None,
    second_stamp: tuple[int, int] | None,
    score: int,
) -> None:
    event = pb.Event(event_id=event_id, user_id=user_id)
    if seconds or nanos:
        event.occurred_at.seconds, event.occurred_at.nanos = seconds, nanos
    if offset is not None:
        event.utc_offset_minutes = offset
    if kind == "task_created":
        event.task_created.task_id = "t1"
        if stamp is not None:
            event.task_created.due_at.seconds, event.task_created.due_at.nanos = stamp
    elif kind == "calendar_event_observed":
        observed = event.calendar_event_observed
        observed.calendar_event_id = "c1"
        if stamp is not None:
            observed.starts_at.seconds, observed.starts_at.nanos = stamp
        if second_stamp is not None:
            observed.ends_at.seconds, observed.ends_at.nanos = second_stamp
    elif kind == "mood_logged":
        event.mood_logged.score = score
    else:
        event.habit_checked.habit_id = "h1"
    expected = _rules_in_order(event, NOW_S)
    try:
        got: tuple[str, int] | tuple[str, str] = codec.check(event, now_s=NOW_S)
    except ValidationError as exc:
        got = ("refused", str(exc))
    assert got == expected
    # The same through bytes, as `parse_and_check` reads them.
    try:
        parsed = codec.parse_and_check(event.SerializeToString(), now_s=NOW_S)
        got = parsed[1:]
    except ValidationError as exc:
        got = ("refused", str(exc))
    assert got == expected
    # ... and as the Kafka source reads them, with its own inline check (ADR 0049).
    source = _as_the_source_reads(event.SerializeToString(), user_id, NOW_S)
    assert (source if source[0] == "refused" else source[1:]) == expected


def test_a_user_id_seen_valid_does_not_let_an_invalid_one_through() -> None:
    assert codec.check(_with(user_id="u1"), now_s=NOW_S)
    for bad in ("u1\n", "u1 ", " u1"):
        with pytest.raises(ValidationError, match="user_id"):
            codec.check(_with(user_id=bad), now_s=NOW_S)
    # Full (whatever earlier tests left in it): the next new id empties it first.
    codec._GOOD_USER_IDS.clear()
    codec._GOOD_USER_IDS.update(f"x{i}" for i in range(codec._GOOD_USER_IDS_KEPT))
    assert codec.check(_with(user_id="not-seen-yet"), now_s=NOW_S)
    assert sorted(codec._GOOD_USER_IDS) == ["not-seen-yet"]
    codec._GOOD_USER_IDS.clear()
