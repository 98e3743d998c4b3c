"""Fold one user's events into `UserState` and say what to write.

This is the one place that turns feature outputs into store writes, shared by
the Bytewax flow, the backfill and the benchmark's plain loop, so all of them
write exactly the same thing. Folding and writing are separate: a `Pending`
accumulates what changed over any number of events, and `build_write` turns it
into one coalesced `UserWrite` (the flow flushes on a short timer, so a busy
user costs one write per interval, not one per event).

History marker (ADR 0009): a `Pending` made with `history=HistoryStart()` records, for each
Kafka topic-partition, the offset of the first message of the user it folded, and its writes
carry that marker so the store can refuse features computed from a fragment of the user's
history. The marker must live as long as the user's state: after a flush, continue with
`pending.successor()`, never a fresh `Pending(history=HistoryStart())`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from connectors import flow_metrics
from connectors.records import Accepted
from connectors.store.base import AgentWrite, UserWrite
from features.state import UserState


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class HistoryStart:
    """Where one user's history starts in each Kafka topic-partition the flow read it from."""

    __slots__ = ("first", "named")

    def __init__(self) -> None:
        self.first: dict[tuple[str, int], int] = {}
        """(topic, partition) -> offset of the user's first message folded there."""
        self.named: dict[str, int] = {}
        """The same as `UserWrite.history` ("topic:partition" -> offset): rebuilt, never
        changed in place, when a source is added, so writes can share it."""

    def mark(self, batch: list[Accepted]) -> None:
        first = self.first
        added = False
        for item in batch:
            source = item.source
            if source is not None and source not in first:
                first[source] = item.offset
                added = True
        if added:
            self.named = {f"{topic}:{part}": offset for (topic, part), offset in first.items()}

    def __getstate__(self) -> dict[tuple[str, int], int]:
        return self.first

    def __setstate__(self, first: dict[tuple[str, int], int]) -> None:
        self.first = first
        self.named = {f"{topic}:{part}": offset for (topic, part), offset in first.items()}


@dataclass(slots=True)
class Pending:
    """What changed for one user since the last write."""

    touched: set[str] = field(default_factory=set)
    deleted_at: int | None = None
    feedback_changed: bool = False
    admitted: bool = False
    seen_ingest_ms: int | None = None
    """Newest ingest time among the events folded, admitted or not: what the flow has reflected."""
    history: HistoryStart | None = None
    """Where the user's history starts, since the user's state began (None: not tracked, the
    writes carry no marker)."""

    def successor(self) -> Pending:
        """An empty Pending for the same user that keeps the history marker."""
        return Pending(history=self.history)

    def __setstate__(self, state: tuple[None, dict[str, object]]) -> None:
        # Snapshots taken before the history marker existed have no `history` slot.
        self.history = None
        for name, value in state[1].items():
            setattr(self, name, value)

    def fold(self, state: UserState, batch: Iterable[Accepted]) -> None:
        if self.history is not None:
            if not isinstance(batch, list):
                batch = list(batch)
            self.history.mark(batch)
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


def build_write(
    state: UserState, pending: Pending, *, computed_at_ms: int | None = None
) -> UserWrite | None:
    """The coalesced write for everything `pending` saw (None when it saw nothing).

    When nothing was admitted (duplicates, late events, events of a deleted user) the write
    carries only the reflected ingest time, so freshness does not count the user as stale.
    """
    if pending.seen_ingest_ms is None:
        return None
    reflected = max(pending.seen_ingest_ms, state.ingest_ms or 0)
    # Shared, never changed in place: HistoryStart replaces `named` when a source is added.
    history = None
    if pending.history is not None and pending.history.named:
        history = pending.history.named
    if not pending.admitted:
        return UserWrite(user_id=state.user_id, newest_ingest_ms=reflected, history=history)
    write = UserWrite(
        user_id=state.user_id,
        deleted_at_ms=pending.deleted_at,
        newest_event_ms=state.newest_event_ms,
        newest_ingest_ms=reflected,
        history=history,
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
        # Most events change few agents' outputs (a mood event moves the watermark, rarely the
        # overdue count): an output equal to the last one written is not written again.
        params = {name: param.as_dict() for name, param in out.params.items()}
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
