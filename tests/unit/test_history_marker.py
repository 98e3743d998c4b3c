"""The history marker (ADR 0009): where a user's history starts in each topic-partition.

`Pending(history=HistoryStart())` records the first offset of the user per source over the
whole life of the user's state (carried across flushes by `successor()`), and every write
carries it.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import replace

import pytest

from connectors import flow_metrics
from connectors.bytewax_io import _coalesce
from connectors.codec import from_json
from connectors.records import Accepted
from connectors.store.base import UserWrite
from features.state import UserState
from flows.folding import HistoryStart, Pending, build_write, fold_batch

S, F = ("oo.signals.v1", 2), ("oo.feedback.v1", 2)


def _event(n: int) -> Accepted:
    event = from_json(
        f'{{"eventId":"e{n}","userId":"hu","occurredAt":"2026-05-01T06:{n:02d}:00Z",'
        '"taskCompleted":{"taskId":"t1","projectId":"p1"}}'
    )
    return Accepted.of(event, 1_000 + n)


def at(item: Accepted, source: tuple[str, int], offset: int) -> Accepted:
    return replace(item, source=source, offset=offset)


def test_writes_carry_the_first_offset_per_source_across_flushes() -> None:
    state, pending = UserState("hu"), Pending(history=HistoryStart())
    pending.fold(state, [at(_event(1), S, 40), at(_event(2), S, 41)])
    first = build_write(state, pending)
    assert first is not None and first.history == {"oo.signals.v1:2": 40}
    pending = pending.successor()
    pending.fold(state, iter([at(_event(3), F, 7), at(_event(4), S, 90)]))
    second = build_write(state, pending)
    assert second is not None
    assert second.history == {"oo.signals.v1:2": 40, "oo.feedback.v1:2": 7}
    assert first.history == {"oo.signals.v1:2": 40}, "a write's marker never changes later"


def test_untracked_folds_and_files_carry_no_marker() -> None:
    # fold_batch (backfill) makes a fresh Pending per batch: it must not claim a history start.
    write = fold_batch(UserState("hu"), [at(_event(1), S, 40)])
    assert write is not None and write.history is None
    # Files have no position.
    state, pending = UserState("hu"), Pending(history=HistoryStart())
    pending.fold(state, [_event(1)])
    write = build_write(state, pending)
    assert write is not None and write.history is None


def test_the_marker_survives_a_snapshot_and_old_snapshots_load() -> None:
    state, pending = UserState("hu"), Pending(history=HistoryStart())
    pending.fold(state, [at(_event(1), S, 5)])
    _, restored = pickle.loads(pickle.dumps((state, pending)))
    assert restored.history.first == {S: 5}
    assert restored.history.named == {"oo.signals.v1:2": 5}
    # A Pending pickled before the marker existed has no `history` slot in its state.
    legacy = Pending.__new__(Pending)
    legacy.__setstate__((None, {"seen_ingest_ms": 3}))
    assert legacy.history is None and legacy.seen_ingest_ms == 3
    assert legacy.successor().history is None


def test_coalescing_keeps_the_latest_marker() -> None:
    a = UserWrite(user_id="hu", history={"s:0": 4})
    b = UserWrite(user_id="hu", history={"s:0": 4, "f:0": 9})
    c = UserWrite(user_id="hu")
    (merged,) = _coalesce([a, b, c])
    assert merged.history == {"s:0": 4, "f:0": 9}


def test_accepted_crosses_processes_with_its_position() -> None:
    item = at(_event(1), S, 12)
    again = pickle.loads(pickle.dumps(item))
    assert (again.source, again.offset, again.event) == (S, 12, item.event)


def test_refusals_are_counted_and_logged_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    before = flow_metrics.HISTORY_REFUSED._value.get()
    flow_metrics.report_history_refused(force=True)  # nothing left over from other tests
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="connectors.flow_metrics"):
        flow_metrics.count_history_refused(["u1", "u2"])
        flow_metrics.count_history_refused(["u3"])  # within the minute: counted, not logged
        assert len(caplog.records) <= 1
        flow_metrics.report_history_refused(force=True)  # the flow stops: the rest is logged
    assert flow_metrics.HISTORY_REFUSED._value.get() - before == 3
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "u3" in text and "--recovery-dir" in text
    assert "3 writes in total" in text or "1 writes of 1 users" in text
