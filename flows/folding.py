"""Fold one user's events into `UserState` and say what to write.

This is the one place that turns feature outputs into store writes, shared by
the Bytewax flow, the backfill and the benchmark's plain loop, so all of them
write exactly the same thing. Folding and writing are separate: a `Pending`
accumulates what changed over any number of events, and `build_write` turns it
into one coalesced `UserWrite` (the flow flushes on a short timer, so a busy
user costs one write per interval, not one per event).

Write dedupe (ADR 0007, ADR 0017): the writer keeps, per user, a `Written` (agent id -> digest
of the output it last handed to the store) and passes it to `build_write`, which leaves out an
agent whose output did not change and keeps the `Written` up to date. It belongs to the
writer, not to `UserState` (it is not a feature) nor to a snapshot: a resumed writer starts
with none.

Failure behaviour (ADR 0011): an exception while folding one event (a bug in an agent) never
leaves that user's state half-applied. The state is rebuilt as it was before the event: from
a rebuild base (a pickle of the state; none for a state that has folded nothing yet) plus the
events folded since, folded again. The base lives across write windows (`successor()` carries
it): it is the flow's own recovery snapshot when there is one (`Pending.rebase`, no extra
pickling), else a pickle taken when the base has `REBASE_EVENTS` events behind it, or is
older than `REBASE_AGE_S` with at least `REBASE_AGED_EVENTS` behind it: at most one pickle per
`REBASE_AGED_EVENTS` events of a user after its first, and fewer than `REBASE_EVENTS` events
kept per user (plus the batch being folded). The flow keeps each event as its ingest time and
bytes (`hold_origin`), `HELD_REBASE_EVENTS` at most, and decodes them again for a rebuild
(ADR 0045). The event becomes a `Rejected` in `Pending.failed` (for the dead letters), is
counted in `oo_flow_fold_errors_total`, and folding goes on with the next event.

History marker (ADR 0009): a `Pending` made with `history=HistoryStart()` records, for each
Kafka topic-partition, the offset of the first message of the user it folded, and its writes
carry that marker so the store can refuse features computed from a fragment of the user's
history. The marker must live as long as the user's state: after a flush, continue with
`pending.successor()`, never a fresh `Pending(history=HistoryStart())`.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from connectors import flow_metrics
from connectors.clock import now_ms
from connectors.records import Accepted, Rejected, decode_line
from connectors.store.base import AgentWrite, FeatureStore, UserWrite, dumps_compact
from features.inference import ColdKey, cold_params
from features.state import UserState
from proto import events_pb2 as pb

log = logging.getLogger(__name__)

REBASE_EVENTS = 64
"""A new rebuild base is taken once this many events were folded since the last one."""
HELD_REBASE_EVENTS = 128
"""`REBASE_EVENTS` for a `Pending` holding origins (`hold_origin`: the flow, ADR 0045): an
event held costs about a sixth of a decoded one, so twice as many held cost a third of the
memory, and a user with many events is pickled half as often."""
REBASE_AGE_S = 30.0
"""... or once the base is this old (seconds) and has at least `REBASE_AGED_EVENTS` events
behind it, so a slowly active user keeps few events."""
REBASE_AGED_EVENTS = 32
"""Events an old base must have behind it before it is renewed: without it a loaded or
catching-up flow (windows that take seconds, users with an event or two per window)
re-pickled nearly every user at every event after 30 s of wall time, the largest part of the
fault handling's cost (BENCHMARKS.md, "fault handling"). It leaves the bound on what a user
keeps as it was (fewer than `REBASE_EVENTS` events, plus the batch being folded)."""

COLD_TEXTS_KEPT = 4096
"""Cold-start parameter texts kept (one per agent and context, e.g. time zone; ADR 0031)."""
_COLD_TEXTS: dict[ColdKey, str] = {}
"""Cold key (`features.inference.evaluate_plain`) -> `dumps_compact` of those parameters."""

Written = dict[str, int]
"""One user's write-dedupe bookkeeping: agent id -> digest of the output last handed to the
store. Owned by the writer (one per user), changed by `build_write`."""


class HistoryStart:
    """Where one user's history starts in each Kafka topic-partition the flow read it from."""

    __slots__ = ("first", "last", "named")

    def __init__(self) -> None:
        self.first: dict[tuple[str, int], int] = {}
        """(topic, partition) -> offset of the user's first message folded there."""
        self.named: dict[str, int] = {}
        """The same as `UserWrite.history` ("topic:partition" -> offset): rebuilt, never
        changed in place, when a source is added, so writes can share it."""
        self.last: Any = None
        """The source (a feed's one tuple) `Pending.fold` last saw in `first`: told by
        identity, so a user's next batch from it hashes nothing (never pickled, ADR 0056)."""

    def mark(self, batch: list[Accepted]) -> None:
        first = self.first
        for item in batch:
            source = item.source
            if source not in first and source is not None:
                self.add(source, item.offset)

    def add(self, source: tuple[str, int], offset: int) -> None:
        """`source`'s first message folded is at `offset` (`source` is not in `first` yet)."""
        first = self.first
        first[source] = offset
        self.named = {f"{topic}:{part}": offset for (topic, part), offset in first.items()}

    def __getstate__(self) -> dict[tuple[str, int], int]:
        return self.first

    def __setstate__(self, first: dict[tuple[str, int], int]) -> None:
        self.first = first
        self.last = None
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
    failed: list[Rejected] = field(default_factory=list)
    """Events whose fold raised, as dead letters; the caller takes them (`take_failed`)."""
    history: HistoryStart | None = None
    """Where the user's history starts, since the user's state began (None: not tracked, the
    writes carry no marker)."""
    _base: bytes | None = None
    """The rebuild base: a pickled tuple whose first item is the state as it was before the
    events in `_since`; None with `_since` set: a fresh state."""
    _since: list[Any] | None = None
    """Events folded into the state since `_base`, as `hold` keeps them (None: no base yet)."""
    _base_at: float = 0.0
    """`time.monotonic()` when `_base` was taken."""
    renew_aged: bool = True
    """Whether a base older than `REBASE_AGE_S` is renewed (bounding what a slowly active user
    keeps in the flow). The backfill bounds the events its bases hold in all instead, and an
    age in wall-clock seconds would only make a slow run pickle more (ADR 0038)."""
    rebase_events: int | None = None
    """A new base is taken once this many events are held since the last one (None:
    `REBASE_EVENTS`)."""
    hold: Callable[[Accepted], Any] | None = None
    """How an event folded since the base is held (None: the `Accepted` itself). With it,
    `unhold` must give the `Accepted` back from what `hold` kept, for a rebuild (the backfill
    keeps each event's line and decodes it again only to rebuild, ADR 0043)."""
    unhold: Callable[[Any], Accepted] | None = None

    def successor(self) -> Pending:
        """An empty Pending for the same user that keeps the history marker and the rebuild
        base (a cache of this process, never pickled)."""
        return Pending(
            history=self.history,
            _base=self._base,
            _since=self._since,
            _base_at=self._base_at,
            renew_aged=self.renew_aged,
            rebase_events=self.rebase_events,
            hold=self.hold,
            unhold=self.unhold,
        )

    def held(self) -> int:
        """Events kept for the rebuild base (what carrying this Pending's `successor()` costs
        in memory beyond the base's pickle)."""
        return 0 if self._since is None else len(self._since)

    def forget_base(self) -> None:
        """Drop the rebuild base and the events held for it (memory): the next `fold` takes a
        new one (a pickle of the state as it is then)."""
        self._base = None
        self._since = None

    def rebase(self, pickled: bytes) -> None:
        """Take `pickled` (a pickled tuple whose first item is the state as it is now, e.g. the
        flow's recovery snapshot of `(state, pending)`) as the rebuild base."""
        self._base = pickled
        self._since = []
        self._base_at = time.monotonic()

    def __getstate__(self) -> dict[str, Any]:
        # The rebuild base is a cache of this process: a resumed Pending takes a new one.
        return {
            "touched": self.touched,
            "deleted_at": self.deleted_at,
            "feedback_changed": self.feedback_changed,
            "admitted": self.admitted,
            "seen_ingest_ms": self.seen_ingest_ms,
            "failed": self.failed,
            "history": self.history,
        }

    def __setstate__(self, state: dict[str, Any] | tuple[None, dict[str, Any]]) -> None:
        # Older snapshots: the slots form `(None, {...})` and no `failed` or `history`.
        values = state[1] if isinstance(state, tuple) else state
        self.touched = values.get("touched", set())
        self.deleted_at = values.get("deleted_at")
        self.feedback_changed = values.get("feedback_changed", False)
        self.admitted = values.get("admitted", False)
        self.seen_ingest_ms = values.get("seen_ingest_ms")
        self.failed = values.get("failed") or []
        self.history = values.get("history")
        self._base = None
        self._since = None
        self._base_at = 0.0
        self.renew_aged = True
        self.rebase_events = None
        self.hold = self.unhold = None

    def take_failed(self) -> list[Rejected]:
        """The dead letters of the events whose fold raised, once."""
        failed, self.failed = self.failed, []
        return failed

    def fold(self, state: UserState, batch: Iterable[Accepted]) -> None:
        history = self.history
        # Marked in the fold's own loop (ADR 0045): `HistoryStart.mark`, without a second pass.
        first = None if history is None else history.first
        # The source last seen marked: a feed's records share one source tuple, so most events
        # are told from it by identity, without hashing the tuple (ADR 0049), from one batch of
        # the user to the next too (ADR 0056).
        marked: Any = None if history is None else history.last
        since = self._since
        if (
            since is None
            or len(since) >= (REBASE_EVENTS if self.rebase_events is None else self.rebase_events)
            or (
                len(since) >= REBASE_AGED_EVENTS
                and self.renew_aged
                and time.monotonic() - self._base_at > REBASE_AGE_S
            )
        ):
            since = self._take_base(state)
        remember = since.append
        hold = self.hold
        drops: Counter[str] | None = None
        newest = self.seen_ingest_ms
        touched = self.touched
        apply = state.apply
        for item in batch:
            if first is not None:
                source = item.source
                if source is not marked:
                    if source not in first and source is not None:
                        history.add(source, item.offset)  # type: ignore[union-attr]
                    marked = source
            ingest = item.ingest_ms
            if newest is None or ingest > newest:
                newest = ingest
            # A try block costs nothing until it raises.
            try:
                applied = apply(item)
            except Exception as exc:
                self._rebuild(state, item, exc)
                continue
            remember(item if hold is None else hold(item))
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
        if history is not None:
            history.last = marked
        if drops:
            flow_metrics.count_drops(drops)

    def _take_base(self, state: UserState) -> list[Any]:
        # At most once per REBASE_AGED_EVENTS events, not per event or window.
        self._base = None if _fresh(state) else pickle.dumps((state,), pickle.HIGHEST_PROTOCOL)
        self._base_at = time.monotonic()
        since: list[Any] = []
        self._since = since
        return since

    def _rebuild(self, state: UserState, failed: Accepted, exc: Exception) -> None:
        """Put `state` back as it was before `failed` and dead-letter `failed`."""
        reason = f"in step 'fold_user_state': {type(exc).__name__}: {exc}"
        log.error(
            "folding event %r of user %r raised; the event goes to the dead letters and the "
            "user's state is rebuilt as it was before it",
            failed.event.event_id,
            state.user_id,
            exc_info=exc,
        )
        base = self._base
        restored = UserState(state.user_id) if base is None else pickle.loads(base)[0]
        unhold = self.unhold
        for item in self._since or ():
            # These folded before without raising: folding is deterministic, so again.
            restored.apply(item if unhold is None else unhold(item))
        vars(state).clear()
        vars(state).update(vars(restored))
        self.failed.append(failed.rejected(reason))
        flow_metrics.FOLD_ERRORS.inc()


def hold_origin(item: Accepted) -> Any:
    """What the flow holds of an event folded since a rebuild base (`Pending(hold=)`, ADR
    0045): its ingest time and what it was decoded from (a Kafka message's value bytes, or the
    file line's origin tuple, which the record carries anyway), not the decoded event. The
    event is then freed right after the fold, while still in the CPU's caches, instead of up
    to `REBASE_EVENTS` events later (ADR 0038's late freeing): about 150 bytes held an event
    instead of about 900. A record without an origin is held itself."""
    origin = item.origin
    if origin.__class__ is bytes or origin.__class__ is tuple:  # the sources' (ADR 0056)
        return item.ingest_ms, origin
    if origin is None:
        return item
    return item.ingest_ms, origin.value()  # a confluent-kafka message given as the origin


def accepted_again(held: Any) -> Accepted:
    """The `Accepted` of what `hold_origin` held, decoded again for a rebuild (rare: only
    after a fold raised). The bytes are those that were accepted: the same event, kind and
    time (the only rule depending on the clock, not more than a day ahead, only accepts more
    as it moves)."""
    if held.__class__ is Accepted:
        return held  # type: ignore[no-any-return]
    ingest_ms, origin = held
    if origin.__class__ is bytes:
        return Accepted.of(pb.Event.FromString(origin), ingest_ms)
    if len(origin) == 5:  # resolved when it crossed a process boundary (`Accepted.where`)
        where, partition, position, raw, _ = origin
        if partition >= 0:
            return Accepted.of(pb.Event.FromString(raw), ingest_ms)
        origin = (where, position, raw)
    path, line_no, line = origin
    record = decode_line(path, line_no, line, ingest_ms=ingest_ms)
    if not isinstance(record, Accepted):
        raise RuntimeError(f"line {line_no} of {path} was accepted, now refused: {record}")
    return record


def _fresh(state: UserState) -> bool:
    """Whether `state` has folded nothing (so `UserState(user_id)` rebuilds it)."""
    return (
        state.seq == 0
        and state.tombstone_ms is None
        and state.ingest_ms is None
        and not any(state.counters.values())
    )


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
    written: Written | None = None,
) -> UserWrite | None:
    """The coalesced write for everything `pending` saw (None when it saw nothing).

    When nothing was admitted (duplicates, late events, events of a deleted user) the write
    carries only the reflected ingest time, so freshness does not count the user as stale.

    With `written` (the user's dedupe bookkeeping, kept by the caller from write to write) an
    agent whose output equals the one last handed to the store is left out, and `written` is
    updated; a deletion in `pending` empties it first (the user starts over). Sound only while
    the caller's writes are the only ones the store has seen (see `dedupe_is_safe`). Without it
    (None) every touched agent is written, and the store's event-time guard alone decides.
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
    if written is not None and pending.deleted_at is not None:
        written.clear()  # what was handed to the store before the deletion is gone with it
    if state.deleted:
        return write
    computed = now_ms() if computed_at_ms is None else computed_at_ms
    ingest = state.ingest_ms or computed
    live = [agent_id for agent_id in sorted(pending.touched) if agent_id in state.agents]
    write.removed_agents = {a for a in pending.touched if a not in state.agents}
    digests = written
    if digests is not None:
        for agent_id in write.removed_agents:
            digests.pop(agent_id, None)
    agents = write.agents
    encode = dumps_compact
    cold_texts = _COLD_TEXTS
    event_time = state.watermark_ms
    for agent_id, agent, (params, extras, snippet, cold_key) in state.plain_outputs(live):
        manifest = agent.MANIFEST
        # Encoded once, here: the digest is of the text the store writes (ADR 0029), and the
        # store writes this text instead of encoding the same values again. A cold start's
        # parameters are the same text for every user of the same context (ADR 0031).
        if cold_key is None:
            params_json = encode(params)
        else:
            text = cold_texts.get(cold_key)
            if text is None:
                if len(cold_texts) >= COLD_TEXTS_KEPT:
                    cold_texts.clear()
                text = cold_texts[cold_key] = encode(cold_params(cold_key))
            params_json = text
        extras_json = "{}" if not extras and type(extras) is dict else encode(extras)
        version = manifest.version
        if digests is not None:
            # Most events change few agents' outputs (a mood event moves the watermark, rarely
            # the overdue count): an output equal to the last one written is not written again.
            digest = hash((params_json, extras_json, snippet, version))
            if digests.get(agent_id) == digest:
                continue
            digests[agent_id] = digest
        agents[agent_id] = AgentWrite(
            agent_id,
            version,
            params if cold_key is None else cold_params(cold_key),  # type: ignore[arg-type]
            extras,
            snippet,
            manifest.ttl_seconds,
            event_time,  # type: ignore[arg-type]
            ingest,
            computed,
            params_json,
            extras_json,
        )
    if pending.feedback_changed or pending.deleted_at is not None:
        write.feedback = state.feedback()
        write.consents = state.consent_map()
    return write


def fold_batch(
    state: UserState,
    batch: Iterable[Accepted],
    *,
    computed_at_ms: int | None = None,
    failed: list[Rejected] | None = None,
    written: Written | None = None,
) -> UserWrite | None:
    """Apply every event of the batch in order; return the coalesced write (None if nothing changed).

    Events whose fold raised are appended to `failed` as dead letters (dropped when None).
    `written`: the user's dedupe bookkeeping, as for `build_write` (None: no dedupe).
    """
    pending = Pending()
    pending.fold(state, batch)
    if failed is not None:
        failed.extend(pending.take_failed())
    return build_write(state, pending, computed_at_ms=computed_at_ms, written=written)


def whole_write(state: UserState, *, computed_at_ms: int = 0) -> UserWrite | None:
    """`build_write` (no dedupe) of every agent of `state`: what a store holds for it after
    folding its whole history (training rows and `POST /v1/agents/{id}/infer`)."""
    pending = Pending(touched=set(state.agents), admitted=True, seen_ingest_ms=state.ingest_ms or 0)
    return build_write(state, pending, computed_at_ms=computed_at_ms)
