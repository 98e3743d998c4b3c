"""No message or line can stop the flow (issue 10, ADR 0011): decoding, validation, file readers,
and an exception while folding one event.

Each shape here once raised out of the decoder, a reader or the fold (see `tests/poison.py`).
"""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message

from connectors import codec, flow_metrics
from connectors.bytewax_io import TRUNCATED_VALUE_BYTES, _truncated, decode_line_batch
from connectors.exceptions import ValidationError
from connectors.jsonl import LineError, read_events
from connectors.kafka_source import decode_messages
from connectors.records import Accepted, Rejected, decode_line
from features.agents import overdue_task
from features.state import UserState
from flows.backfill import backfill
from flows.folding import Pending, fold_batch
from proto import events_pb2 as pb
from tests.poison import file_lines, good_event, huge_due_at, kafka_shapes, preference

TOPIC = "unit.oo.signals.v1"
NOW_S = 1_780_000_000.0


def kafka_msg(value: bytes | None, offset: int, key: bytes | None) -> Message:
    return Message(
        topic=TOPIC,
        partition=1,
        offset=offset,
        key=key,
        value=value,
        timestamp=(1, 1_777_000_000_000),
    )


# --- Kafka messages ------------------------------------------------------------------------


def test_every_poison_message_is_a_reject_with_its_reason_and_origin_and_the_rest_go_on() -> None:
    shapes = kafka_shapes("u1")
    messages = []
    for i, shape in enumerate(shapes):
        messages.append(kafka_msg(shape.value, 2 * i, shape.key))
        messages.append(kafka_msg(good_event("u1", i).SerializeToString(), 2 * i + 1, b"u1"))
    decoded = decode_messages(messages, NOW_S)
    assert decoded.rejected == len(shapes)
    rejects = [r for _, r in decoded.records if isinstance(r, Rejected)]
    accepted = [r for _, r in decoded.records if isinstance(r, Accepted)]
    assert [a.event.event_id for a in accepted] == [f"u1-g{i}" for i in range(len(shapes))]
    for shape, reject in zip(shapes, rejects, strict=True):
        assert shape.why in reject.reason, (shape.name, reject.reason)
        assert reject.reason.startswith("in step 'read_events': ")
        assert (reject.origin, reject.partition) == (TOPIC, 1)
        assert reject.offset == 2 * shapes.index(shape)
        assert reject.raw == (shape.value or b"") and reject.key == shape.key


@pytest.mark.parametrize("seconds", [253_402_300_800 + 5, -62_135_596_800 - 5, 2**62, -(2**62)])
def test_an_unrepresentable_occurred_at_is_worded_without_raising(seconds: int) -> None:
    event = good_event("u1", 1)
    event.occurred_at.seconds = seconds
    with pytest.raises(ValidationError) as caught:
        codec.check(event, now_s=NOW_S)
    assert caught.value.field == "occurred_at" and str(seconds) in str(caught.value)


def test_occurred_at_nanos_out_of_range_are_refused() -> None:
    event = good_event("u1", 1)
    event.occurred_at.nanos = -1
    with pytest.raises(ValidationError, match="occurred_at"):
        codec.check(event, now_s=NOW_S)


@pytest.mark.parametrize("kind", ["task_created", "task_updated", "task_completed"])
@pytest.mark.parametrize("seconds", [2**62, 253_402_300_800, -62_135_596_801])
def test_every_due_at_is_bounded(kind: str, seconds: int) -> None:
    event = good_event("u1", 1)
    getattr(event, kind).task_id = "t"
    getattr(event, kind).due_at.seconds = seconds
    with pytest.raises(ValidationError) as caught:
        codec.check(event, now_s=NOW_S)
    assert caught.value.field == f"{kind}.due_at"


def test_calendar_timestamps_are_bounded() -> None:
    event = good_event("u1", 1)
    event.calendar_event_observed.starts_at.seconds = 0
    event.calendar_event_observed.ends_at.nanos = 2_000_000_000
    with pytest.raises(ValidationError) as caught:
        codec.check(event, now_s=NOW_S)
    assert caught.value.field == "calendar_event_observed.ends_at"


@pytest.mark.parametrize(
    ("value_json", "words"),
    [
        ("NaN", "finite"),
        ("Infinity", "finite"),
        ("-Infinity", "finite"),
        ("1e999", "finite"),
        ("[1, 2e400]", "finite"),
        ("9007199254740993", "2**53"),
        ("1" * 5000, "2**53"),
        ("[" * 33 + "]" * 33, "nested"),
        ('{"a":' * 40 + "1" + "}" * 40, "nested"),
        ('"' + "x" * 20_000 + '"', "characters"),
        ("{", "JSON"),
    ],
)
def test_json_values_are_bounded_and_finite(value_json: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        codec.check(preference("u1", value_json, "p"), now_s=NOW_S)
    assert caught.value.field == "preference_set.value_json" and words in str(caught.value)


@pytest.mark.parametrize("value_json", ["1.5", "[[1]]", '{"a": "[[[[["}', '"]]]"', "-3", ""])
def test_ordinary_json_values_pass(value_json: str) -> None:
    codec.check(preference("u1", value_json, "p"), now_s=NOW_S)


def test_an_event_over_the_size_bound_is_refused_naming_its_size() -> None:
    event = good_event("u1", 1)
    event.task_completed.project_id = "p" * (codec.MAX_EVENT_BYTES + 1)
    data = event.SerializeToString()
    with pytest.raises(ValidationError, match="bytes serialized"):
        codec.parse_and_check(data, now_s=NOW_S)


# --- file lines ----------------------------------------------------------------------------


def test_every_bad_line_is_a_reject_with_its_line_number_and_the_other_lines_go_on(
    tmp_path: Path,
) -> None:
    bad = file_lines("u1")
    lines: list[bytes] = []
    for i, (_, line, _) in enumerate(bad):
        lines.append(line)
        lines.append(codec.to_json(good_event("u1", i)).encode())
    # read_events (produce)
    read = list(read_events(lines, now_s=NOW_S))
    errors = [(n, r) for n, r in read if isinstance(r, LineError)]
    assert [n for n, _ in errors] == [2 * i + 1 for i in range(len(bad))]
    assert sum(1 for _, r in read if not isinstance(r, LineError)) == len(bad)
    for (name, _, why), (_, error) in zip(bad, errors, strict=True):
        assert why in f"line {error.line_no}: {error.reason}", name
    # decode_line (backfill) and decode_line_batch (flow --from): the same verdicts
    records = [
        decode_line("f", n, line, ingest_ms=0, now_s=NOW_S) for n, line in enumerate(lines, 1)
    ]
    assert [type(r) for r in records] == [Rejected, Accepted] * len(bad)
    for (name, _, why), record in zip(bad, records[::2], strict=True):
        assert isinstance(record, Rejected) and why in record.reason, name
        assert record.reason.startswith(f"line {record.offset}: ")
    keyed = decode_line_batch([("f", n, line) for n, line in enumerate(lines, 1)])
    assert [type(r) for _, r in keyed] == [Rejected, Accepted] * len(bad)


def test_a_byte_order_mark_is_handled_the_same_by_every_reader(tmp_path: Path) -> None:
    line = codec.to_json(good_event("u1", 1)).encode()
    for first in (b"\xef\xbb\xbf" + line, "\ufeff" + line.decode()):
        [(_, event)] = list(read_events([first], now_s=NOW_S))
        assert not isinstance(event, LineError)
        assert isinstance(decode_line("f", 1, first, ingest_ms=0, now_s=NOW_S), Accepted)
    [(_, record)] = decode_line_batch([("f", 1, b"\xef\xbb\xbf" + line)])
    assert isinstance(record, Accepted)
    # Only at the start of a file: elsewhere it is a bad line
    assert isinstance(decode_line("f", 2, b"\xef\xbb\xbf" + line, ingest_ms=0), Rejected)


def test_backfill_keeps_going_past_bad_lines(tmp_path: Path) -> None:
    from connectors.store import open_store

    path = tmp_path / "events.jsonl"
    good = [codec.to_json(good_event("u1", i)).encode() for i in range(4)]
    bad = [line for _, line, _ in file_lines("u1")]
    path.write_bytes(b"\xef\xbb\xbf" + b"\n".join([good[0], *bad, *good[1:]]) + b"\n")
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", key_prefix="t")
    report = backfill(path, store)
    assert (report.accepted, report.rejected) == (4, len(bad))
    rejects = (tmp_path / "events.jsonl.rejects.jsonl").read_text().splitlines()
    assert len(rejects) == len(bad)
    user = store.read_user("u1")
    assert user is not None and user.feedback is not None
    store.close()


# --- an exception while folding --------------------------------------------------------------


class Boom(RuntimeError):
    pass


@pytest.fixture
def buggy_overdue(monkeypatch: pytest.MonkeyPatch) -> None:
    """The overdue-task agent half-applies a completion of task `t-bug`, then raises (a bug)."""
    original = overdue_task.Agent.apply

    def apply(self: Any, event: Any, asof: Any) -> bool:
        if event.payload.task_id == "t-bug":
            self.occ.append(1)  # half-applied: the parallel arrays disagree now
            self.tasks["t-bug"] = (0, 0, False, 0)
            raise Boom("agent bug")
        return original(self, event, asof)

    monkeypatch.setattr(overdue_task.Agent, "apply", apply)


def _bug(user_id: str, n: int, day: int = 1) -> Accepted:
    event = good_event(user_id, n, day=day)
    event.event_id = f"{user_id}-bug{n}"
    event.task_completed.task_id = "t-bug"
    accepted = Accepted.of(event, 2_000)
    accepted.origin = (TOPIC, 4, 77, b"raw", b"u1")  # as resolved after crossing processes
    return accepted


def _good(user_id: str, n: int, day: int = 1) -> Accepted:
    return Accepted.of(good_event(user_id, n, day=day), 1_000 + n)


@pytest.mark.parametrize("before", [0, 3])
def test_a_fold_exception_leaves_the_state_as_before_the_event_and_dead_letters_it(
    buggy_overdue: None, before: int
) -> None:
    errors = flow_metrics.FOLD_ERRORS._value.get()
    state, twin = UserState("u1"), UserState("u1")
    # One earlier window (so the rebuild starts from a pickled state, not a fresh one)
    fold_batch(state, [_good("u1", i) for i in range(before)])
    fold_batch(twin, [_good("u1", i) for i in range(before)])
    pending = Pending()
    batch = [_good("u1", 10), _bug("u1", 11), _good("u1", 12, day=2)]
    pending.fold(state, batch[:1])
    pending.fold(state, batch[1:])
    Pending().fold(twin, [batch[0], batch[2]])
    assert state == twin
    assert pickle.dumps(state.agents["overdue-task"]) == pickle.dumps(twin.agents["overdue-task"])
    assert state.outputs() == twin.outputs()
    [letter] = pending.take_failed()
    assert pending.take_failed() == []
    assert letter.reason == "in step 'fold_user_state': Boom: agent bug"
    assert (letter.origin, letter.partition, letter.offset, letter.raw, letter.key) == (
        TOPIC,
        4,
        77,
        b"raw",
        b"u1",
    )
    assert flow_metrics.FOLD_ERRORS._value.get() == errors + 1
    # The Pending still says what changed, and folding goes on
    assert "overdue-task" in pending.touched
    pending.fold(state, [_good("u1", 13, day=3)])
    Pending().fold(twin, [_good("u1", 13, day=3)])
    assert state == twin


@pytest.mark.parametrize("rebase", ["own pickle", "recovery snapshot"])
def test_the_rebuild_base_lives_across_write_windows(buggy_overdue: None, rebase: str) -> None:
    """The base is carried by `successor()` across flushes (and is the recovery snapshot when
    there is one); a failure windows later still rebuilds exactly, and keeps what was written."""
    from flows.folding import build_write

    state, twin = UserState("u1"), UserState("u1")
    pending, twin_pending = Pending(), Pending()
    written: dict[str, int] = {}
    twin_written: dict[str, int] = {}
    for window in range(4):
        batch = [_good("u1", 10 * window + i, day=1 + window) for i in range(3)]
        pending.fold(state, batch)
        twin_pending.fold(twin, batch)
        assert build_write(state, pending, computed_at_ms=0, written=written) == build_write(
            twin, twin_pending, computed_at_ms=0, written=twin_written
        )
        pending, twin_pending = pending.successor(), twin_pending.successor()
        if rebase == "recovery snapshot" and window == 1:
            pending.rebase(pickle.dumps((state, pending), pickle.HIGHEST_PROTOCOL))
    assert pending._since is not None and len(pending._since) == (
        6 if rebase == "recovery snapshot" else 12
    )
    pending.fold(state, [_bug("u1", 99, day=6), _good("u1", 100, day=6)])
    twin_pending.fold(twin, [_good("u1", 100, day=6)])
    assert state == twin
    assert written == twin_written  # what was handed to the store stays
    write = build_write(state, pending, computed_at_ms=0, written=written)
    expected = build_write(twin, twin_pending, computed_at_ms=0, written=twin_written)
    assert write is not None and expected is not None
    # The failed event was seen (its ingest time is reflected), and nothing else differs.
    assert write.newest_ingest_ms == 2_000
    assert replace(write, newest_ingest_ms=0) == replace(expected, newest_ingest_ms=0)


def test_the_rebuild_base_is_renewed_after_rebase_events(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import folding

    monkeypatch.setattr(folding, "REBASE_EVENTS", 5)
    state, pending = UserState("u1"), Pending()
    for n in range(12):
        pending.fold(state, [_good("u1", n)])
        pending = pending.successor()
        assert pending._since is not None and len(pending._since) <= 5
    monkeypatch.setattr(folding, "REBASE_AGE_S", 0.0)
    monkeypatch.setattr(folding, "REBASE_AGED_EVENTS", 1)
    base = pending._base
    pending.fold(state, [_good("u1", 50)])
    assert pending._base is not base and pending._since == [_good("u1", 50)]


def _with_origin(accepted: Accepted, how: str, offset: int) -> Accepted:
    """`accepted` as a source hands it over: a Kafka message, a file line, or either one
    resolved after crossing a process boundary (`Accepted.where`)."""
    event = accepted.event
    if how in ("kafka", "kafka resolved"):
        [(_, record)] = decode_messages(
            [kafka_msg(event.SerializeToString(), offset, event.user_id.encode())], NOW_S
        ).records
    else:
        record = decode_line("f.jsonl", offset, codec.to_json(event).encode() + b"\n", ingest_ms=5)
    assert isinstance(record, Accepted)
    if how.endswith("resolved"):
        record = pickle.loads(pickle.dumps(record))
    return record


@pytest.mark.parametrize("how", ["kafka", "file", "kafka resolved", "file resolved"])
def test_the_flow_holds_origins_for_its_rebuilds_and_rebuilds_exactly(
    buggy_overdue: None, how: str
) -> None:
    """ADR 0045: the flow's `UserLogic` holds an event folded since the rebuild base as its
    ingest time and origin, not the decoded event, and a rebuild decodes the origins again."""
    from datetime import timedelta

    from flows.features_flow import UserLogic
    from flows.folding import HELD_REBASE_EVENTS, hold_origin

    logic = UserLogic(None, None, timedelta(0))
    twin = UserState("u1")
    good = [_with_origin(_good("u1", i, day=1 + i), how, i + 1) for i in range(5)]
    bug = _with_origin(_bug("u1", 50, day=7), how, 50)
    logic.on_batch(good[:3])
    held = logic.pending._since
    assert held == [hold_origin(g) for g in good[:3]]
    # Neither the decoded event nor the Kafka message: their bytes, or the file line
    kept = [item[1] for item in held]
    originals = [g.origin for g in good[:3]]
    if how == "kafka":  # the source keeps the value, not the message (ADR 0056)
        assert all(type(origin) is bytes for origin in originals)
    assert kept == originals
    out, _ = logic.on_batch([good[3], bug, good[4]])
    Pending().fold(twin, good)
    assert logic.state == twin
    letters = [r for r in out if isinstance(r, Rejected)]
    assert [r.offset for r in letters] == [50]
    # A resumed user holds origins too
    resumed = UserLogic.resumed(logic.snapshot(), timedelta(0))
    resumed.on_batch([good[0]])
    assert resumed.pending.hold is hold_origin
    assert logic.pending.rebase_events == resumed.pending.rebase_events == HELD_REBASE_EVENTS


def test_a_record_without_origin_is_held_itself(buggy_overdue: None) -> None:
    from flows.folding import accepted_again, hold_origin

    state, twin = UserState("u1"), UserState("u1")
    pending = Pending(hold=hold_origin, unhold=accepted_again)
    good = [_good("u1", i) for i in range(3)]
    pending.fold(state, good)
    assert pending._since == good
    pending.fold(state, [_bug("u1", 9)])
    Pending().fold(twin, good)
    assert state == twin


def test_a_kafka_record_keeps_the_value_and_a_message_origin_reads_as_before() -> None:
    """ADR 0056: the source's accepted record carries the message's value, not the message,
    and its dead letter names the same origin as one made from the message itself."""
    from flows.folding import hold_origin

    event = good_event("u1", 1)
    msg = kafka_msg(event.SerializeToString(), 41, b"u1")
    [(_, record)] = decode_messages([msg], NOW_S, source=(TOPIC, 1)).records
    assert isinstance(record, Accepted) and record.origin == msg.value()
    given = replace(record, origin=msg)  # a message given as the origin still reads as one
    assert record.where() == given.where() == (TOPIC, 1, 41, msg.value(), b"u1")
    assert record.rejected("r") == given.rejected("r")
    assert hold_origin(record) == hold_origin(given) == (record.ingest_ms, msg.value())


def test_a_fold_exception_in_a_backfill_is_a_reject(buggy_overdue: None, tmp_path: Path) -> None:
    from connectors.store import open_store

    path = tmp_path / "events.jsonl"
    bug = _bug("u1", 5).event
    lines = [
        codec.to_json(good_event("u1", 1)),
        codec.to_json(bug),
        codec.to_json(good_event("u1", 2)),
    ]
    path.write_text("\n".join(lines) + "\n")
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", key_prefix="t")
    report = backfill(path, store)
    store.close()
    assert (report.accepted, report.rejected) == (2, 1)
    [reject] = (tmp_path / "events.jsonl.rejects.jsonl").read_text().splitlines()
    assert '"line": 2' in reject and "fold_user_state" in reject and "Boom" in reject


def test_a_pending_snapshot_carries_no_rebuild_cache() -> None:
    state = UserState("u1")
    pending = Pending()
    pending.fold(state, [_good("u1", 1)])
    pending.fold(state, [_good("u1", 2)])
    copy = pickle.loads(pickle.dumps(pending))
    assert copy.touched == pending.touched and copy.seen_ingest_ms == pending.seen_ingest_ms
    assert copy._since is None and copy._base is None
    assert len(pickle.dumps(pending)) < 1000


def test_accepted_keeps_its_origin_across_a_process_boundary() -> None:
    event = huge_due_at("u1")
    accepted = Accepted(event, 1, "task_completed", 2, kafka_msg(b"raw", 9, b"u1"))
    copy = pickle.loads(pickle.dumps(accepted))
    assert copy.where() == (TOPIC, 1, 9, b"raw", b"u1") == accepted.where()
    line = Accepted(event, 1, "task_completed", 2, ("f.jsonl", 3, b"{...}\n"))
    assert line.rejected("r").as_json_line() == (
        '{"line": 3, "source": "f.jsonl", "reason": "r", "field": null, "raw": "{...}"}'
    )


# --- dead letters too large for the topic ---------------------------------------------------


def test_a_too_large_dead_letter_is_cut_saying_its_original_size() -> None:
    value = bytes(3_000_000)
    headers = [("oo.reason", b"r")]
    cut, key, cut_headers = _truncated(value, b"k", headers)
    assert len(cut) == TRUNCATED_VALUE_BYTES and key == b"k"
    assert dict(cut_headers)["oo.truncated"] == b"3000000"
    again, _, again_headers = _truncated(cut, key, cut_headers)
    assert len(again) == TRUNCATED_VALUE_BYTES // 4
    assert dict(again_headers)["oo.truncated"] == b"3000000"
    assert [k for k, _ in again_headers].count("oo.truncated") == 1
    small, _, _ = _truncated(b"x" * 1000, None, [])
    assert len(small) == 500


def test_any_exception_while_decoding_is_a_reject(monkeypatch: pytest.MonkeyPatch) -> None:
    # A parser's unexpected exception type is a reject, not a crash
    monkeypatch.setattr(
        "connectors.kafka_source.parse_and_check",
        lambda *_a, **_k: (_ for _ in ()).throw(OverflowError("surprise")),
    )
    decoded = decode_messages([kafka_msg(b"x", 0, b"u1")], time.time())
    [(_, record)] = decoded.records
    assert isinstance(record, Rejected) and "OverflowError: surprise" in record.reason


def _flow_over(tmp_path: Path, lines: list[str]) -> list[dict[str, Any]]:
    """Run the flow over `lines` (an event-log file) into `flow.db`; its rejects, in order."""
    from bytewax.testing import run_main

    from flows.features_flow import build_flow

    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    rejects = tmp_path / "rejects.jsonl"
    run_main(
        build_flow(
            store_url=f"sqlite:///{tmp_path / 'flow.db'}",
            key_prefix="t",
            event_log=path,
            rejects_path=rejects,
            recovery=False,
        )
    )
    return sorted((json.loads(row) for row in rejects.read_text().splitlines()), key=str)


def _assert_flow_equals_backfill_of(tmp_path: Path, good: list[pb.Event]) -> None:
    """The flow's store (`flow.db`) holds exactly the users of `good`, each with the params a
    backfill of `good` alone gives."""
    from connectors.store import open_store

    expected_path = tmp_path / "good.jsonl"
    expected_path.write_text("".join(codec.to_json(e) + "\n" for e in good))
    reference = open_store(f"sqlite:///{tmp_path / 'ref.db'}", key_prefix="t")
    backfill(expected_path, reference)
    flow_store = open_store(f"sqlite:///{tmp_path / 'flow.db'}", key_prefix="t")
    users = sorted({e.user_id for e in good})
    assert sorted(flow_store.user_ids()) == users
    for user_id in users:
        got, want = flow_store.read_user(user_id), reference.read_user(user_id)
        assert got is not None and want is not None
        assert {a: s.params for a, s in got.agents.items()} == {
            a: s.params for a, s in want.agents.items()
        }
    flow_store.close()
    reference.close()


def test_the_flow_dead_letters_an_event_whose_fold_raised_and_goes_on(
    buggy_overdue: None, tmp_path: Path
) -> None:
    bug = _bug("u1", 5).event
    good = [good_event("u1", 1), good_event("u1", 2, day=2), good_event("u2", 3)]
    lines = [codec.to_json(good[0]), codec.to_json(bug), *(codec.to_json(e) for e in good[1:])]
    [reject] = _flow_over(tmp_path, lines)
    assert reject["line"] == 2 and "fold_user_state" in reject["reason"]
    _assert_flow_equals_backfill_of(tmp_path, good)


def test_the_flow_dead_letters_rejects_and_fold_failures_together_through_one_step(
    buggy_overdue: None, tmp_path: Path
) -> None:
    # ADR 0049: the source's rejects (keyed "") pass through `fold_user_state` untouched,
    # beside the events whose fold raised, and the users' states are as without both.
    bug = _bug("u1", 5).event
    good = [good_event("u1", 1), good_event("u1", 2, day=2), good_event("u2", 3)]
    lines = [
        codec.to_json(good[0]),
        "not an event",
        codec.to_json(bug),
        codec.to_json(good[1]),
        '{"eventId":"e9","userId":"u 2","occurredAt":"2026-05-01T06:30:00Z","moodLogged":{"score":3}}',
        codec.to_json(good[2]),
    ]
    by_line = {row["line"]: row for row in _flow_over(tmp_path, lines)}
    assert sorted(by_line) == [2, 3, 5]
    assert "fold_user_state" in by_line[3]["reason"] and by_line[5]["field"] == "user_id"
    assert by_line[2]["raw"] == "not an event"
    _assert_flow_equals_backfill_of(tmp_path, good)


def test_user_logic_passes_rejects_on_and_keeps_nothing_for_them() -> None:
    from datetime import timedelta

    from bytewax.operators import StatefulBatchLogic

    from flows.features_flow import _build_logic

    logic = _build_logic(timedelta(seconds=0.03), timedelta(seconds=1), True, True, None)
    records = [
        Rejected("in step 'read_events': bad", b"x", "t", 0, 7, b"k"),
        Rejected("r", b"", "t", 0, 8),
    ]
    out, discard = logic.on_batch(list(records))
    assert out == records and discard is StatefulBatchLogic.DISCARD
    assert logic.state is None and logic.pending.seen_ingest_ms is None
