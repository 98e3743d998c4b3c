"""Backfill folds in spans (issue 13 speed, ADR 0023): each user touched in a span is computed
and written once, the fold's rebuild base is taken rarely, and the store does not depend on the
span (compared key by key; stamps aside: the wall-clock ones, and an agent's `event_time_ms`,
which is the user's watermark at the last write that changed the agent's output, so it moves
with the write grouping in the stream too, ADR 0007)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from connectors import codec
from connectors.store import open_store
from connectors.store.base import UserWrite
from connectors.store.sqlite_store import SQLiteStore
from features.agents import overdue_task
from flows import folding
from flows.backfill import BackfillReport, backfill
from oo_features.generate import ChaosOptions, generate_lines
from tests.poison import good_event

STAMPS = ("ingest", "computed_at", "created", "expires_at", "event_time_ms")


def _timeless(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if not any(w in k for w in STAMPS)}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return _timeless({f: getattr(value, f) for f in value.__dataclass_fields__})
    return value


@pytest.fixture(scope="module")
def event_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 users over 20 days with every kind of delivery trouble, a deletion in the middle of a
    user's history (events after it start the user over) and a line that is no event."""
    path = tmp_path_factory.mktemp("spans") / "events.jsonl"
    chaos = ChaosOptions(out_of_order=0.03, duplicates=0.02, too_late=0.01, invalid=0.005)
    lines = list(generate_lines(30, 20, 4242, chaos=chaos))
    middle = len(lines) // 2
    deleted = codec.from_json(
        '{"eventId":"del-u00004","userId":"u00004","occurredAt":"2026-05-01T00:00:00Z",'
        '"userDeleted":{}}'
    )
    lines[middle:middle] = [codec.to_json(deleted), "not json"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _contents(store: SQLiteStore, users: list[str]) -> dict[str, Any]:
    return {
        "users": {u: _timeless(store.read_user(u)) for u in sorted(store.user_ids())},
        "tombstones": {u: store.tombstone(u) for u in users},
    }


def _run(path: Path, tmp_path: Path, name: str, **kwargs: Any) -> tuple[dict[str, Any], str]:
    store = open_store(f"sqlite:///{tmp_path / name}.db", key_prefix="t")
    assert isinstance(store, SQLiteStore)
    rejects = tmp_path / f"{name}.rejects"
    try:
        report = backfill(path, store, rejects_path=rejects, **kwargs)
        assert report.rejected > 0 and report.users >= 30
        return _contents(store, [f"u{i:05d}" for i in range(30)]), rejects.read_text()
    finally:
        store.close()


def test_the_store_and_the_rejects_do_not_depend_on_the_span(
    event_log: Path, tmp_path: Path
) -> None:
    # span_lines=1 writes after every batch of lines (what backfill did before spans).
    per_batch = _run(event_log, tmp_path, "per-batch", span_lines=1, span_lines_per_user=0)
    assert per_batch[0]["users"] and per_batch[0]["tombstones"]["u00004"] is not None
    for span, per_user in ((2_500, 0), (10**9, 0), (1, 40), (2_500, 16), (1, 10**6)):
        got = _run(
            event_log,
            tmp_path,
            f"span{span}-{per_user}",
            span_lines=span,
            span_lines_per_user=per_user,
        )
        assert got == per_batch, (span, per_user)


def _one_completion_log(path: Path, users: int, each: int) -> Path:
    lines = (
        codec.to_json(good_event(f"u{u:05d}", n)) + "\n" for n in range(each) for u in range(users)
    )
    path.write_text("".join(lines))
    return path


def test_a_span_has_enough_lines_per_user_it_touched(tmp_path: Path) -> None:
    # 600 users of 8 events each, interleaved: by lines alone (spans of 1,000) each user would
    # be computed and written after every batch; a span of 16 lines a user writes each once.
    path = _one_completion_log(tmp_path / "many-users.jsonl", 600, 8)
    for per_user, most in ((0, 600 * 5), (16, 600)):
        store = open_store(f"sqlite:///{tmp_path / f'store{per_user}.db'}", key_prefix="t")
        try:
            report = backfill(path, store, span_lines=1_000, span_lines_per_user=per_user)
        finally:
            store.close()
        assert report.accepted == 4_800 and report.users == 600
        assert (report.writes <= most) and (per_user == 16 or report.writes > 600), (
            per_user,
            report.writes,
        )


def test_a_user_is_computed_and_written_once_per_span(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 3,500 events of one user span four batches of lines: one write, not four.
    path = tmp_path / "one-user.jsonl"
    path.write_text("".join(codec.to_json(good_event("u1", n)) + "\n" for n in range(3_500)))
    writes: Counter[str] = Counter()
    original = SQLiteStore.write_batch

    def counting(self: SQLiteStore, batch: list[UserWrite], **kwargs: Any) -> list[str]:
        writes.update(w.user_id for w in batch)
        return original(self, batch, **kwargs)

    monkeypatch.setattr(SQLiteStore, "write_batch", counting)
    report = _backfilled(path, tmp_path / "store.db")
    assert report.accepted == 3_500 and report.writes == 1
    assert writes == {"u1": 1}


def _backfilled(path: Path, db: Path) -> BackfillReport:
    """`backfill` of `path` into a SQLite store at `db` (closed afterwards)."""
    store = open_store(f"sqlite:///{db}", key_prefix="t")
    try:
        return backfill(path, store)
    finally:
        store.close()


def _count_pickles(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Per user, the rebuild bases the fold pickles from now on (a fresh state is not pickled)."""
    pickles = Counter[str]()
    original = folding.Pending._take_base

    def counting(self: folding.Pending, state: Any) -> Any:
        pickles[state.user_id] += not folding._fresh(state)
        return original(self, state)

    monkeypatch.setattr(folding.Pending, "_take_base", counting)
    return pickles


def test_the_rebuild_base_is_not_pickled_for_every_batch(
    event_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before spans, every user got a new base (a pickle of its state) in every batch of lines.
    pickles = _count_pickles(monkeypatch)
    lines = len(event_log.read_bytes().splitlines())
    _run(event_log, tmp_path, "bases")
    per_user_events = lines / 30
    for user_id, n in pickles.items():
        # One span (the log is shorter than SPAN_LINES): a base after each REBASE_EVENTS events.
        assert n <= per_user_events / folding.REBASE_EVENTS + 2, (user_id, n)


@pytest.fixture
def buggy_overdue(monkeypatch: pytest.MonkeyPatch) -> None:
    """The overdue-task agent half-applies a completion of task `t-bug`, then raises."""
    original = overdue_task.Agent.apply

    def apply(self: Any, event: Any, asof: Any) -> bool:
        if event.payload.task_id == "t-bug":
            self.occ.append(1)
            self.tasks["t-bug"] = (0, 0, False, 0)
            raise RuntimeError("agent bug")
        return original(self, event, asof)

    monkeypatch.setattr(overdue_task.Agent, "apply", apply)


@pytest.mark.parametrize("span", [1, 10**9])
def test_a_fold_exception_deep_in_a_span_leaves_the_store_as_without_the_event(
    buggy_overdue: None, tmp_path: Path, span: int
) -> None:
    # 3,000 events of two users; the bug is event 2,600 of u1, long after its base was taken.
    good = [good_event(f"u{n % 2 + 1}", n, day=1 + n // 200) for n in range(3_000)]
    bug = good_event("u1", 2_600, day=14)
    bug.event_id = "u1-bug"
    bug.task_completed.task_id = "t-bug"
    with_bug = tmp_path / "with-bug.jsonl"
    without = tmp_path / "without.jsonl"
    lines = [codec.to_json(e) for e in good]
    without.write_text("\n".join(lines) + "\n")
    lines.insert(2_600, codec.to_json(bug))
    with_bug.write_text("\n".join(lines) + "\n")
    stores = {}
    for path in (with_bug, without):
        store = open_store(f"sqlite:///{tmp_path / path.stem}.db", key_prefix="t")
        assert isinstance(store, SQLiteStore)
        try:
            report = backfill(path, store, span_lines=span)
            stores[path.stem] = (_contents(store, ["u1", "u2"]), report.accepted)
        finally:
            store.close()
    assert stores["with-bug"] == stores["without"]
    assert (tmp_path / "with-bug.jsonl.rejects.jsonl").read_text().count("agent bug") == 1


def _round_robin_log(path: Path, *, users: int, events: int, per_day: int) -> Path:
    """`events` good events of `users` users in turn, `per_day` events a day."""
    path.write_text(
        "".join(
            codec.to_json(good_event(f"u{n % users}", n, day=1 + n // per_day)) + "\n"
            for n in range(events)
        )
    )
    return path


@pytest.fixture
def backfill_module(monkeypatch: pytest.MonkeyPatch) -> Any:
    """`flows.backfill`, reading batches of 50 lines."""
    import flows.backfill as module

    monkeypatch.setattr(module, "LINES_PER_BATCH", 50)
    return module


def test_the_rebuild_base_is_carried_across_spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backfill_module: Any
) -> None:
    # Issue 13 / ADR 0029: every user's first fold in every span pickled its state (a tenth of
    # the run at 2,000,000 events of 50,000 users). 20 users of 30 events each (fewer than
    # REBASE_EVENTS), round robin, written after every 50-line batch: 12 spans, no pickle.
    path = _round_robin_log(tmp_path / "round-robin.jsonl", users=20, events=600, per_day=100)
    pickles = _count_pickles(monkeypatch)
    carried = open_store(f"sqlite:///{tmp_path / 'carried.db'}", key_prefix="t")
    try:
        report = backfill(path, carried, span_lines=1, span_lines_per_user=0)
    finally:
        carried.close()
    assert report.accepted == 600 and report.writes >= 12 * 20
    assert sum(pickles.values()) == 0, pickles
    # Nothing held (a budget of 0 events): a pickle per user per batch after its first.
    monkeypatch.setattr(backfill_module, "HELD_EVENTS", 0)
    monkeypatch.setattr(backfill_module, "HELD_AFTER_TRIM", 0)
    pickles.clear()
    dropped = open_store(f"sqlite:///{tmp_path / 'dropped.db'}", key_prefix="t")
    try:
        backfill(path, dropped, span_lines=1, span_lines_per_user=0)
        assert _contents(dropped, []) == _contents(open_store(
            f"sqlite:///{tmp_path / 'carried.db'}", key_prefix="t"), [])  # fmt: skip
    finally:
        dropped.close()
    assert all(n >= 10 for n in pickles.values()) and len(pickles) == 20, pickles


def test_the_events_held_for_rebuilds_stay_within_their_budget(
    event_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ADR 0038: spans no longer bound what the rebuild bases hold; the largest holders drop
    # theirs once the bases may hold more than HELD_EVENTS, and the store does not change.
    import flows.backfill as backfill_module

    unbounded = _run(event_log, tmp_path, "unbounded")
    monkeypatch.setattr(backfill_module, "LINES_PER_BATCH", 100)
    monkeypatch.setattr(backfill_module, "HELD_EVENTS", 400)
    monkeypatch.setattr(backfill_module, "HELD_AFTER_TRIM", 150)
    original = backfill_module._trim
    seen: list[tuple[int, int]] = []

    def checked(pending: dict[str, Any], carried: dict[str, Any], budget: int) -> int:
        before = sum(p.held() for p in (*pending.values(), *carried.values()))
        after = original(pending, carried, budget)
        assert after == sum(p.held() for p in (*pending.values(), *carried.values()))
        seen.append((before, after))
        return after

    monkeypatch.setattr(backfill_module, "_trim", checked)
    pickles = _count_pickles(monkeypatch)
    bounded = _run(event_log, tmp_path, "bounded")
    assert bounded == unbounded
    assert len(seen) > 5 and sum(pickles.values()) > 0
    assert all(before <= 400 + 100 and after <= 150 for before, after in seen), seen


def test_a_backfill_leaves_no_cyclic_garbage(event_log: Path, tmp_path: Path) -> None:
    # ADR 0038: the backfill runs with the cyclic collector off, which is sound only while what
    # it builds is freed by reference counting. The log has rejects, duplicates, late events
    # and a deletion; a failing fold is covered by the test above (a rare path).
    import gc

    assert gc.isenabled()
    gc.collect()
    _run(event_log, tmp_path, "acyclic")
    assert gc.isenabled(), "the collector is on again after the run"
    assert gc.collect() == 0


def test_a_partition_counts_its_lines_per_user_among_every_line_it_reads(tmp_path: Path) -> None:
    # `--processes 2`: each process reads every line but folds about half of them; a span of 8
    # lines a user must not write its users twice as often as one process does.
    path = _one_completion_log(tmp_path / "many-users.jsonl", 600, 8)
    writes, users = 0, 0
    for index in (0, 1):
        store = open_store(f"sqlite:///{tmp_path / f'part{index}.db'}", key_prefix="t")
        try:
            report = backfill(
                path, store, span_lines=1_000, span_lines_per_user=8, partition=(index, 2)
            )
        finally:
            store.close()
        writes += report.writes
        users += report.users
    assert users == 600 and writes == 600, writes


def test_a_backfill_holds_lines_and_pickles_no_base_within_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backfill_module: Any
) -> None:
    # ADR 0043: the backfill holds each event folded since a user's base as its line (decoded
    # again only to rebuild) and never renews a base for the events behind it: one user of
    # 300 events (past the flow's REBASE_EVENTS) takes no pickle, and a rebuild from the lines
    # is exact (test_a_fold_exception_deep_in_a_span_... above covers it).
    path = _round_robin_log(tmp_path / "one-user.jsonl", users=1, events=300, per_day=30)
    pickles = _count_pickles(monkeypatch)
    held: list[Any] = []
    original = backfill_module._write_span

    def spying(store: Any, states: Any, written: Any, pending: dict[str, Any]) -> int:
        held.extend(item for user in pending.values() for item in user._since or ())
        return original(store, states, written, pending)

    monkeypatch.setattr(backfill_module, "_write_span", spying)
    report = _backfilled(path, tmp_path / "one.db")
    assert report.accepted == 300 and sum(pickles.values()) == 0, pickles
    assert len(held) == 300 and all(isinstance(item[1][2], bytes) for item in held)
    again = backfill_module._line_again(held[7])
    assert again.event == codec.from_json(path.read_text().splitlines()[7])


def test_the_writer_thread_lands_chunks_in_order_and_raises_a_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ADR 0043: a chunk of writes goes to the store from a writer thread while the next is
    # built. Chunks land in the order they were built, one at a time, and a store error is
    # raised by the backfill itself.
    import threading

    import flows.backfill as backfill_module
    from connectors.exceptions import StoreError

    monkeypatch.setattr(backfill_module, "WRITE_CHUNK", 7)
    path = _one_completion_log(tmp_path / "users.jsonl", 60, 1)
    store = open_store(f"sqlite:///{tmp_path / 'order.db'}", key_prefix="t")
    assert isinstance(store, SQLiteStore)
    landed: list[list[str]] = []
    busy = threading.Lock()
    original = store.write_batch

    def write_batch(writes: list[UserWrite], **kwargs: Any) -> list[str]:
        assert busy.acquire(blocking=False), "two chunks were written at once"
        try:
            landed.append([w.user_id for w in writes])
            if len(landed) == 5 and fail:
                raise StoreError("the store went away")
            return original(writes, **kwargs)
        finally:
            busy.release()

    monkeypatch.setattr(store, "write_batch", write_batch)
    try:
        fail = False
        report = backfill(path, store)
        assert report.writes == 60 and [len(c) for c in landed] == [7] * 8 + [4]
        expected = sorted(u for chunk in landed for u in chunk)
        assert sorted(store.user_ids()) == expected
        fail = True
        landed.clear()
        with pytest.raises(StoreError, match="went away"):
            backfill(path, store)
        assert len(landed) == 5
    finally:
        store.close()


def test_a_span_writes_its_users_in_user_id_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ADR 0047: a span's users are written in user-id order, not in the order they were first
    # touched (SQLite's B-tree locality), and the store ends the same.
    import flows.backfill as backfill_module

    monkeypatch.setattr(backfill_module, "WRITE_CHUNK", 7)
    path = tmp_path / "reversed.jsonl"
    path.write_text(
        "".join(codec.to_json(good_event(f"u{u:05d}", 0)) + "\n" for u in reversed(range(40)))
    )
    store = open_store(f"sqlite:///{tmp_path / 'sorted.db'}", key_prefix="t")
    landed: list[str] = []
    original = store.write_batch

    def write_batch(writes: list[UserWrite], **kwargs: Any) -> list[str]:
        landed.extend(w.user_id for w in writes)
        return original(writes, **kwargs)

    monkeypatch.setattr(store, "write_batch", write_batch)
    try:
        report = backfill(path, store)
        assert report.writes == 40 and landed == sorted(landed) == [f"u{u:05d}" for u in range(40)]
        assert sorted(store.user_ids()) == landed
    finally:
        store.close()


def test_a_backfill_hands_its_structures_to_keep_and_restores_the_collector(
    tmp_path: Path,
) -> None:
    # ADR 0047: with `keep`, the run's states are handed to the caller (a `--processes` child
    # lets its exit free them); the collector is as it was before the run either way.
    import gc

    path = _one_completion_log(tmp_path / "keep.jsonl", 30, 2)
    store = open_store(f"sqlite:///{tmp_path / 'keep.db'}", key_prefix="t")
    try:
        kept: list[object] = []
        assert gc.isenabled()
        report = backfill(path, store, keep=kept)
        assert gc.isenabled() and report.users == 30 and len(kept) == 1
        states = kept[0][0]  # type: ignore[index]
        assert sorted(states) == [f"u{u:05d}" for u in range(30)]
        gc.disable()
        try:
            backfill(path, store)
            assert not gc.isenabled()
        finally:
            gc.enable()
    finally:
        store.close()
