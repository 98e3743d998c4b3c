"""Folding into writes: what a batch of one user's events turns into for the store."""

from __future__ import annotations

import pytest

from connectors.codec import from_json
from connectors.records import Accepted
from features.state import UserState
from flows import folding
from flows.folding import Pending, build_write, fold_batch
from tests.poison import good_event

EVENT = from_json(
    '{"eventId":"f1","userId":"fu","occurredAt":"2026-05-01T06:30:00Z","utcOffsetMinutes":60,'
    '"taskCompleted":{"taskId":"t1","projectId":"p1"}}'
)


def test_a_batch_of_only_duplicates_still_reports_what_was_reflected() -> None:
    state = UserState("fu")
    first = fold_batch(state, [Accepted.of(EVENT, 1_000)])
    assert first is not None and first.agents and first.newest_ingest_ms == 1_000
    again = fold_batch(state, [Accepted.of(EVENT, 2_000)])  # the same event id, read again later
    assert again is not None
    assert again.agents == {} and again.feedback is None and again.newest_event_ms is None
    assert again.newest_ingest_ms == 2_000, "freshness must know the flow got this far"


def test_nothing_folded_means_nothing_to_write() -> None:
    assert build_write(UserState("fu"), Pending()) is None


def test_an_unchanged_agent_is_not_written_again() -> None:
    state, written = UserState("fu"), {}
    fold_batch(state, [Accepted.of(EVENT, 1_000)], written=written)
    assert written, "the writer's bookkeeping holds what it handed the store"
    mood = from_json(
        '{"eventId":"m1","userId":"fu","occurredAt":"2026-05-01T06:31:00Z","moodLogged":{"score":4}}'
    )
    write = fold_batch(state, [Accepted.of(mood, 1_100)], written=written)
    assert write is not None and write.agents == {}  # a mood event changes no agent's output


def test_a_deletion_empties_the_writers_bookkeeping() -> None:
    # The user starts over: the same outputs as before the deletion are written again.
    state, written = UserState("fu"), {}
    first = fold_batch(state, [Accepted.of(EVENT, 1_000)], written=written)
    assert first is not None and first.agents
    gone = from_json(
        '{"eventId":"d1","userId":"fu","occurredAt":"2026-05-01T06:40:00Z","userDeleted":{}}'
    )
    again = from_json(
        '{"eventId":"f2","userId":"fu","occurredAt":"2026-05-01T06:50:00Z","utcOffsetMinutes":60,'
        '"taskCompleted":{"taskId":"t1","projectId":"p1"}}'
    )
    write = fold_batch(
        state, [Accepted.of(gone, 1_100), Accepted.of(again, 1_200)], written=written
    )
    assert write is not None and write.deleted_at_ms is not None
    assert set(write.agents) == set(first.agents), "every agent of the new user is written"
    assert set(written) == set(first.agents)


def test_without_dedupe_every_touched_agent_is_written_again() -> None:
    # After a restart the store may hold another incarnation's values: nothing is skipped.
    state = UserState("fu")
    first = fold_batch(state, [Accepted.of(EVENT, 1_000)])
    assert first is not None and first.agents
    mood = from_json(
        '{"eventId":"m1","userId":"fu","occurredAt":"2026-05-02T06:31:00Z","moodLogged":{"score":4}}'
    )
    pending = Pending()
    pending.fold(state, [Accepted.of(mood, 1_100)])
    write = build_write(state, pending)  # no `written`: no dedupe
    assert write is not None and set(write.agents) == pending.touched & state.agents.keys()
    assert write.agents, "a new day moves every agent's as-of date: some are touched"


def _aged_base_takes(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Every rebuild base made old at once (`REBASE_AGE_S` 0), and a count of the bases taken:
    "all", and "pickled" (of a state that had folded something)."""
    monkeypatch.setattr(folding, "REBASE_AGE_S", 0.0)
    takes = {"all": 0, "pickled": 0}
    original = folding.Pending._take_base

    def counting(self: Pending, state: UserState) -> list[Accepted]:
        takes["all"] += 1
        takes["pickled"] += not folding._fresh(state)
        return original(self, state)

    monkeypatch.setattr(folding.Pending, "_take_base", counting)
    return takes


def test_an_old_rebuild_base_is_renewed_only_after_rebase_aged_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A loaded or catching-up flow sees every base as old (windows take seconds): it must not
    # pickle the user's state again for every event or two (issue 10, "Speed").
    takes = _aged_base_takes(monkeypatch)
    state, pending = UserState("u1"), Pending()
    for n in range(64):
        pending.fold(state, [Accepted.of(good_event("u1", n), 1_000 + n)])
        pending = pending.successor()
        assert pending._since is not None and len(pending._since) <= folding.REBASE_AGED_EVENTS
    assert takes["pickled"] <= 64 // folding.REBASE_AGED_EVENTS


def test_a_pending_that_does_not_renew_aged_bases_renews_after_rebase_events_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The backfill bounds what its bases hold in all (ADR 0038): a slow run must not pickle
    # more because its bases grow old in wall-clock seconds.
    takes = _aged_base_takes(monkeypatch)
    state, pending = UserState("u1"), Pending(renew_aged=False)
    for n in range(2 * folding.REBASE_EVENTS + 1):
        pending.fold(state, [Accepted.of(good_event("u1", n), 1_000 + n)])
        pending = pending.successor()
        assert not pending.renew_aged
    assert takes["all"] == 3  # the first (fresh) base, then one after each REBASE_EVENTS events
