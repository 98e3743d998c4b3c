"""The flow's per-user logic on resume: snapshots are unpickled only when first needed."""

from __future__ import annotations

import pickle
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from connectors.codec import from_json
from connectors.records import Accepted
from features.state import UserState
from flows.features_flow import UserLogic, _build_logic
from flows.folding import Pending

FLUSH = timedelta(seconds=1)


def _event(n: int, day: int = 1) -> Accepted:
    return Accepted.of(
        from_json(
            f'{{"eventId":"e{n}","userId":"ru","occurredAt":"2026-05-0{day}T06:30:00Z",'
            f'"utcOffsetMinutes":60,"taskCompleted":{{"taskId":"t{n}","projectId":"p1"}}}}'
        ),
        1_000 + n,
    )


def _folded(*, flushed: bool) -> UserLogic:
    logic = _build_logic(FLUSH, FLUSH, True, True, None)
    logic.on_batch([_event(1)])
    if flushed:
        assert logic.on_notify()[0], "the first change is written"
    return logic


def test_a_resumed_user_stays_bytes_until_it_is_needed() -> None:
    snapshot = _folded(flushed=True).snapshot()
    resumed = _build_logic(FLUSH, FLUSH, True, False, snapshot)
    assert resumed.state is None and resumed.notify_at() is None, "nothing to do: not loaded"
    assert resumed.snapshot() is snapshot, "an untouched user snapshots the same bytes"
    assert resumed.on_eof()[0] == [] and resumed.state is None
    resumed.on_batch([_event(2, day=2)])
    assert isinstance(resumed.state, UserState) and resumed.state.seq == 2
    assert resumed.on_notify()[0], "folded on top of the resumed state and written"
    assert resumed.snapshot() != snapshot


def test_a_resumed_user_with_unwritten_changes_is_due_at_once() -> None:
    snapshot = _folded(flushed=False).snapshot()
    resumed = _build_logic(FLUSH, FLUSH, True, False, snapshot)
    assert resumed.notify_at() is not None
    writes = resumed.on_notify()[0]
    assert len(writes) == 1 and writes[0].agents, "the crashed run's pending changes"


def test_a_resumed_writer_forgets_the_digests_of_the_crashed_run() -> None:
    logic = _folded(flushed=True)
    assert logic.written, "the writer keeps what it handed the store"
    resumed = _build_logic(FLUSH, FLUSH, True, True, logic.snapshot())
    assert resumed.written == {}, "not part of the snapshot"
    resumed.on_batch([_event(2)])  # a second task the same day
    assert resumed.state is not None and "output_digests" not in vars(resumed.state)
    [write] = resumed.on_notify()[0]
    assert resumed.written and set(resumed.written) <= set(write.agents)


def test_a_snapshot_of_an_older_flow_still_resumes() -> None:
    logic = _folded(flushed=False)
    legacy = pickle.dumps((logic.state, logic.pending), protocol=pickle.HIGHEST_PROTOCOL)
    resumed = _build_logic(FLUSH, FLUSH, True, False, legacy)
    assert isinstance(resumed.state, UserState) and isinstance(resumed.pending, Pending)
    assert resumed.notify_at() is not None and resumed.on_notify()[0]


DATA = Path(__file__).parent / "data"


def test_a_snapshot_written_before_the_fold_moved_to_flows_still_resumes() -> None:
    """ADR 0017: snapshots of the flow at baee2a0 name `connectors.folding` and keep write
    digests on the state (`data/make_snapshot_baee2a0.py` made this one with that tree)."""
    snapshot = (DATA / "snapshot_baee2a0.bin").read_bytes()
    assert b"connectors.folding" in snapshot and snapshot[:1] == b"P"
    lines = (DATA / "snapshot_baee2a0.events.jsonl").read_text().splitlines()
    events = [from_json(line) for line in lines]
    items = [
        replace(Accepted.of(e, 1_700_000_000_000 + i), source=("oo.signals.v1", 0), offset=100 + i)
        for i, e in enumerate(events)
    ]
    today = _build_logic(FLUSH, FLUSH, True, True, None)
    today.on_batch(items[:160])
    today.on_notify()
    today.on_batch(items[160:])

    resumed = _build_logic(FLUSH, FLUSH, True, True, snapshot)
    assert resumed.notify_at() is not None, "the old run's unwritten changes are due at once"
    resumed._thaw()
    assert isinstance(resumed.pending, Pending) and resumed.pending.history is not None
    assert resumed.pending.history.named == {"oo.signals.v1:0": 100}
    assert resumed.state == today.state and "output_digests" not in vars(resumed.state)
    assert resumed.pending.touched == today.pending.touched
    assert resumed.pending.seen_ingest_ms == today.pending.seen_ingest_ms
    [write] = resumed.on_notify()[0]
    live = today.pending.touched & today.state.agents.keys()  # type: ignore[union-attr]
    assert set(write.agents) == live, "a resumed writer dedupes nothing it did not write"
    assert write.history == {"oo.signals.v1:0": 100}
    # and it goes on folding as today's flow does
    more = Accepted.of(events[-1], 1_800_000_000_000)
    resumed.on_batch([more])
    today.on_batch([more])
    assert resumed.state == today.state


def test_a_users_first_write_in_a_process_is_not_held_by_the_catch_up_coalescing() -> None:
    """An event that reached Kafka while the flow was down would look like a backlog and hold
    the first write after a restart for a quarter of the downtime, up to the catch-up bound
    (BENCHMARKS.md "Resume"). A user's first write in a process goes at the flush interval;
    later ones of a real backlog are coalesced as before."""
    import time
    from datetime import UTC, datetime

    flush, catchup = timedelta(seconds=0.1), timedelta(seconds=10)
    arrived_ms = int((time.time() - 120) * 1000)  # two minutes ago: the flow was down

    logic = _build_logic(flush, catchup, True, True, None)
    logic.on_batch([replace(_event(1), ingest_ms=arrived_ms)])
    assert logic.due is not None
    assert (logic.due - datetime.now(UTC)).total_seconds() <= 0.5

    logic.on_notify()
    logic.on_batch([replace(_event(2), ingest_ms=arrived_ms + 1)])
    assert logic.due is not None
    assert (logic.due - datetime.now(UTC)).total_seconds() >= 9  # still behind: coalesced
