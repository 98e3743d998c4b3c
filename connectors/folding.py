"""Fold a batch of one user's events into `UserState` and say what to write.

This is the one place that turns feature outputs into store writes, shared by
the Bytewax flow, the backfill and the benchmark's plain loop, so all of them
write exactly the same thing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from connectors.records import Accepted
from connectors.store.base import AgentWrite, UserWrite
from features.state import UserState


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def fold_batch(
    state: UserState, batch: Iterable[Accepted], *, computed_at_ms: int | None = None
) -> UserWrite | None:
    """Apply every event of the batch in order; return the coalesced write (None if nothing changed)."""
    touched: set[str] = set()
    deleted_at: int | None = None
    feedback_changed = False
    admitted = False
    for item in batch:
        applied = state.apply(item.event, ingest_time_ms=item.ingest_ms)
        if not applied.admitted:
            continue
        admitted = True
        if applied.deleted:
            deleted_at = state.tombstone_ms
            touched.clear()
            feedback_changed = False
            continue
        touched |= applied.changed
        touched |= applied.removed
        feedback_changed |= applied.feedback_changed
    if not admitted:
        return None
    write = UserWrite(
        user_id=state.user_id,
        deleted_at_ms=deleted_at,
        newest_event_ms=state.newest_event_ms,
        newest_ingest_ms=state.ingest_ms,
    )
    if state.deleted:
        return write
    computed = now_ms() if computed_at_ms is None else computed_at_ms
    ingest = state.ingest_ms or computed
    live = [agent_id for agent_id in sorted(touched) if agent_id in state.agents]
    write.removed_agents = {agent_id for agent_id in touched if agent_id not in state.agents}
    for agent_id, out in state.outputs(live).items():
        write.agents[agent_id] = AgentWrite(
            agent_id=agent_id,
            version=out.version,
            params={name: param.as_dict() for name, param in out.params.items()},
            extras=out.extras,
            snippet=out.snippet,
            ttl_seconds=out.ttl_seconds,
            event_time_ms=out.event_time_ms,
            ingest_time_ms=ingest,
            computed_at_ms=computed,
        )
    if feedback_changed or deleted_at is not None:
        write.feedback = state.feedback()
        write.consents = state.consent_map()
    return write
