"""The flow's per-user logic on resume: snapshots are unpickled only when first needed."""

from __future__ import annotations

import pickle
from datetime import timedelta

from connectors.codec import from_json
from connectors.folding import Pending
from connectors.records import Accepted
from features.state import UserState
from flows.features_flow import UserLogic, _build_logic

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


def test_a_resumed_state_forgets_the_digests_of_the_crashed_run() -> None:
    logic = _folded(flushed=True)
    assert logic.state is not None and logic.state.output_digests
    resumed = _build_logic(FLUSH, FLUSH, True, True, logic.snapshot())
    resumed.on_batch([_event(2)])  # a second task the same day
    assert resumed.state is not None and set(resumed.state.output_digests) <= set(
        resumed.on_notify()[0][0].agents
    )


def test_a_snapshot_of_an_older_flow_still_resumes() -> None:
    logic = _folded(flushed=False)
    legacy = pickle.dumps((logic.state, logic.pending), protocol=pickle.HIGHEST_PROTOCOL)
    resumed = _build_logic(FLUSH, FLUSH, True, False, legacy)
    assert isinstance(resumed.state, UserState) and isinstance(resumed.pending, Pending)
    assert resumed.notify_at() is not None and resumed.on_notify()[0]
