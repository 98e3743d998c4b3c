"""Fold one user's events into `UserState` and say what to write.

This is the one place that turns feature outputs into store writes, shared by
the Bytewax flow, the backfill and the benchmark's plain loop, so all of them
write exactly the same thing. Folding and writing are separate: a `Pending`
accumulates what changed over any number of events, and `build_write` turns it
into one coalesced `UserWrite` (the flow flushes on a short timer, so a busy
user costs one write per interval, not one per event).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from connectors import flow_metrics
from connectors.records import Accepted
from connectors.store.base import AgentWrite, FeatureStore, UserWrite
from features.state import UserState


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Pending:
    """What changed for one user since the last write."""

    touched: set[str] = field(default_factory=set)
    deleted_at: int | None = None
    feedback_changed: bool = False
    admitted: bool = False
    seen_ingest_ms: int | None = None
    """Newest ingest time among the events folded, admitted or not: what the flow has reflected."""

    def fold(self, state: UserState, batch: Iterable[Accepted]) -> None:
        drops: Counter[str] | None = None
        newest = self.seen_ingest_ms
        touched = self.touched
        apply = state.apply
        for item in batch:
            ingest = item.ingest_ms
            if newest is None or ingest > newest:
                newest = ingest
            # Positional: this runs once per event.
            applied = apply(item.event, ingest, item.kind, item.occurred_ms)
            if not applied.admitted:
                if drops is None:
                    drops = Counter()
                drops[applied.dropped or "unknown"] += 1
                continue
            self.admitted = True
            if applied.deleted:
                self.deleted_at = state.tombstone_ms
                touched.clear()
                self.feedback_changed = False
                continue
            if applied.changed:
                touched |= applied.changed
            if applied.removed:
                touched |= applied.removed
            if applied.feedback_changed:
                self.feedback_changed = True
        self.seen_ingest_ms = newest
        if drops:
            flow_metrics.count_drops(drops)


def dedupe_is_safe(store: FeatureStore) -> bool:
    """Whether a flow starting now may skip writes equal to the last it handed the store.

    Only when it will be the store's only writer: the store holds no user yet. Otherwise an
    earlier incarnation (crashed, stopped, or resumed from an older snapshot) may have written
    values with newer event times than this one's next writes, which the store's guard then
    refuses; skipping the final write because it equals a refused one would leave the earlier
    incarnation's intermediate value for good (ADR 0007).
    """
    return not store.user_ids()


def build_write(
    state: UserState,
    pending: Pending,
    *,
    computed_at_ms: int | None = None,
    dedupe: bool = True,
) -> UserWrite | None:
    """The coalesced write for everything `pending` saw (None when it saw nothing).

    When nothing was admitted (duplicates, late events, events of a deleted user) the write
    carries only the reflected ingest time, so freshness does not count the user as stale.

    With `dedupe` an agent whose output equals the one last handed to the store is left out:
    sound only while the caller's writes are the only ones the store has seen (see
    `dedupe_is_safe`). Without it every touched agent is written, and the store's event-time
    guard alone decides.
    """
    if pending.seen_ingest_ms is None:
        return None
    reflected = max(pending.seen_ingest_ms, state.ingest_ms or 0)
    if not pending.admitted:
        return UserWrite(user_id=state.user_id, newest_ingest_ms=reflected)
    write = UserWrite(
        user_id=state.user_id,
        deleted_at_ms=pending.deleted_at,
        newest_event_ms=state.newest_event_ms,
        newest_ingest_ms=reflected,
    )
    if state.deleted:
        return write
    computed = now_ms() if computed_at_ms is None else computed_at_ms
    ingest = state.ingest_ms or computed
    live = [agent_id for agent_id in sorted(pending.touched) if agent_id in state.agents]
    write.removed_agents = {a for a in pending.touched if a not in state.agents}
    for agent_id in write.removed_agents:
        state.output_digests.pop(agent_id, None)
    digests = state.output_digests
    for agent_id, out in state.outputs(live).items():
        params = {name: param.as_dict() for name, param in out.params.items()}
        if dedupe:
            # Most events change few agents' outputs (a mood event moves the watermark, rarely
            # the overdue count): an output equal to the last one written is not written again.
            digest = hash((repr(params), repr(out.extras), out.snippet, out.version))
            if digests.get(agent_id) == digest:
                continue
            digests[agent_id] = digest
        write.agents[agent_id] = AgentWrite(
            agent_id=agent_id,
            version=out.version,
            params=params,
            extras=out.extras,
            snippet=out.snippet,
            ttl_seconds=out.ttl_seconds,
            event_time_ms=out.event_time_ms,
            ingest_time_ms=ingest,
            computed_at_ms=computed,
        )
    if pending.feedback_changed or pending.deleted_at is not None:
        write.feedback = state.feedback()
        write.consents = state.consent_map()
    return write


def fold_batch(
    state: UserState, batch: Iterable[Accepted], *, computed_at_ms: int | None = None
) -> UserWrite | None:
    """Apply every event of the batch in order; return the coalesced write (None if nothing changed)."""
    pending = Pending()
    pending.fold(state, batch)
    return build_write(state, pending, computed_at_ms=computed_at_ms)
