"""`UserState`: everything the engine knows about one user, folded one event at a time.

`apply(record)` folds one `features.model.Incoming` (a validated event with its ingest
time): it decides admission (deletion tombstone, lateness, duplicates), places the event
in local time, updates the user-level context (watermark, profile zone, consents,
preferences, feedback) and hands it to every enabled agent that reads it. It says which agents changed; `outputs()` then computes
their parameters and snippets. Computing is separate from folding so a caller
can fold many events and compute once (the flow does, per user per batch).

Pure: no I/O, no clock, no Bytewax. Picklable; bounded by the spec's windows.
The interpretations where docs/features.md is silent are listed in
`features/README.md`.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import zstandard
from river import stats

from features.agent import AgentBase, AsOf, Folded
from features.inference import PlainOutput, evaluate, evaluate_plain
from features.model import ALLOWED_LATENESS_MS, AgentOutput, Incoming
from features.registry import REGISTRY
from features.timeutil import MS_PER_DAY, MS_PER_HOUR, zone_offset
from proto import events_pb2 as pb

FEEDBACK_KINDS = frozenset({"tip_shown", "tip_reaction"})
READERS: dict[str, tuple[str, ...]] = {}
"""payload kind -> the agents that read it (from the manifests)."""
for _agent_id, _cls in REGISTRY.items():
    for _kind in _cls.MANIFEST.reads:
        READERS[_kind] = (*READERS.get(_kind, ()), _agent_id)
POSITIVE = frozenset({pb.REACTION_DONE, pb.REACTION_LIKE})
NEGATIVE = frozenset({pb.REACTION_DISMISS, pb.REACTION_SNOOZE})
ACCEPTANCE_ALPHA = 0.1
# Exempt from the allowed lateness: privacy requests are honoured however late they arrive.
NEVER_LATE = frozenset({"user_deleted", "consent_changed"})
FEEDBACK_READERS: tuple[str, ...] = tuple(
    aid for aid, cls in REGISTRY.items() if cls.MANIFEST.min_history > 0
)
"""Agents whose inference reads the feedback count (a feedback event may change them)."""
WATERMARK_READERS: tuple[str, ...] = tuple(
    aid for aid, cls in REGISTRY.items() if cls.on_watermark is not AgentBase.on_watermark
)
"""Agents whose view depends on the watermark within a day (the others ignore its moves)."""

# The hot path names agents by bit (one per registered agent) and says what changed with an
# `Applied` shared by every event that changed the same agents: no set, no result object built
# per event.
_BIT: dict[str, int] = {aid: 1 << i for i, aid in enumerate(REGISTRY)}
_EVERY_AGENT: tuple[tuple[str, int], ...] = tuple(_BIT.items())
_READER_BITS: dict[str, tuple[tuple[str, int], ...]] = {
    kind: tuple((aid, _BIT[aid]) for aid in readers) for kind, readers in READERS.items()
}
_WATERMARK_BITS = tuple((aid, _BIT[aid]) for aid in WATERMARK_READERS)
_FEEDBACK_MASK = sum(_BIT[aid] for aid in FEEDBACK_READERS)
_FEEDBACK_CHANGED = 1 << len(_BIT)


@dataclass(slots=True)
class Applied:
    """What one `apply` did (read-only by convention)."""

    admitted: bool
    changed: AbstractSet[str] = frozenset()
    """Agents whose view may have changed (compute their outputs)."""
    removed: AbstractSet[str] = frozenset()
    """Agents disabled by a consent revocation (delete what is stored for them)."""
    deleted: bool = False
    """The user was deleted (delete everything, leave a tombstone)."""
    feedback_changed: bool = False
    dropped: str | None = None
    """Why the event was not admitted: `late`, `duplicate` or `deleted`."""


_NONE: frozenset[str] = frozenset()
_ADMITTED_UNCHANGED = Applied(True)
_SHARED: dict[int, Applied] = {0: _ADMITTED_UNCHANGED}
"""Agents changed as bits (and the feedback as the bit after them) -> the one `Applied` that
says so."""


def _ids(mask: int) -> set[str]:
    return {aid for aid, bit in _EVERY_AGENT if mask & bit}


def _mask_of(agents: Iterable[str]) -> int:
    return sum(_BIT[aid] for aid in agents)


def _shared(mask: int) -> Applied:
    """The `Applied` of `mask` (agents changed as bits, `_FEEDBACK_CHANGED`: the feedback)."""
    applied = _SHARED.get(mask)
    if applied is None:
        feedback_changed = bool(mask & _FEEDBACK_CHANGED)
        applied = Applied(True, frozenset(_ids(mask)), feedback_changed=feedback_changed)
        _SHARED[mask] = applied
    return applied


_DROPPED_DELETED = Applied(False, dropped="deleted")
_DROPPED_LATE = Applied(False, dropped="late")
_DROPPED_DUPLICATE = Applied(False, dropped="duplicate")


class UserState:
    """The per-user state of every agent plus the user-level context they share."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.tombstone_ms: int | None = None
        self.counters = {"late_dropped": 0, "duplicates": 0, "deleted_dropped": 0}
        self._reset()

    def _reset(self) -> None:
        self.deleted = self.tombstone_ms is not None
        self.watermark_ms: int | None = None
        self.asof_day = 0
        self.seq = 0
        self.tz: tuple[int, int, str] | None = None
        """(occurred_ms, seq, IANA name) of the ProfileUpdated that stands."""
        self.consents: dict[str, tuple[int, int, bool]] = {}
        self.preferences: dict[tuple[str, str], tuple[int, int, Any]] = {}
        """(agent_id, param) -> (occurred_ms, seq, value or None when cleared)."""
        self.seen: dict[str, tuple[int, int | None]] = {}
        """event_id -> (occurred_ms, watermark when admitted); forgotten once the watermark has
        advanced past occurred_ms + the allowed lateness."""
        self.agents: dict[str, AgentBase] = {aid: cls() for aid, cls in REGISTRY.items()}
        self.feedback_events = 0
        self.acceptance = stats.EWMean(fading_factor=ACCEPTANCE_ALPHA)
        self.rated = 0
        self.per_agent_feedback: dict[str, list[int]] = {}
        """agent_id -> [shown, positive]."""
        self.tips: dict[str, tuple[int, tuple[str, ...]]] = {}
        self.newest_event_ms: int | None = None
        self.ingest_ms: int | None = None

    # -- pickling ------------------------------------------------------------------------

    def __getstate__(self) -> bytes:
        """The attributes pickled and compressed in one go (Zstandard, level 1). Recovery
        snapshots, the fold's rebuild bases and the training set's as-of origins are this
        pickle. A year of a busy user is 12.6 kB, against 17.8 kB when only overdue-task's
        columns were compressed (with zlib, whose CPU was most of the pickle's), and the pickle
        costs less CPU than then (ADR 0060)."""
        return zstandard.compress(pickle.dumps(vars(self), pickle.HIGHEST_PROTOCOL), 1)

    def __setstate__(self, state: bytes | dict[str, Any]) -> None:
        # A snapshot from before ADR 0060 holds the plain attribute dict.
        attrs = pickle.loads(zstandard.decompress(state)) if isinstance(state, bytes) else state
        vars(self).update(attrs)

    # -- folding -------------------------------------------------------------------------

    def apply(self, record: Incoming) -> Applied:
        """Fold one validated event (`record.event`, with its ingest time and the kind and
        occurrence read from it once: `Incoming.of(event, ingest_ms)`). Never raises for a valid
        event. The `Applied` it returns may be shared with other calls: never change it."""
        # The hot path of the engine (once per event): locals, no per-event helper objects
        # unless an agent reads the event.
        kind = record.kind
        occurred = record.occurred_ms
        tombstone = self.tombstone_ms
        if tombstone is not None and occurred <= tombstone:
            self.counters["deleted_dropped"] += 1
            return _DROPPED_DELETED
        if kind == "user_deleted":
            return self._delete(occurred)
        wm = self.watermark_ms
        if wm is not None and occurred < wm - ALLOWED_LATENESS_MS and kind not in NEVER_LATE:
            self.counters["late_dropped"] += 1
            return _DROPPED_LATE
        event = record.event
        event_id = event.event_id
        seen = self.seen
        before = seen.get(event_id)
        # Pruning is lazy, so apply the forgetting rule here: the outcome never depends on when
        # pruning ran.
        if before is not None and not self._forgotten(before):
            self.counters["duplicates"] += 1
            return _DROPPED_DUPLICATE
        seen[event_id] = (occurred, wm)
        self.deleted = False
        seq = self.seq = self.seq + 1
        ingest_time_ms = record.ingest_ms
        if ingest_time_ms is not None and (
            self.ingest_ms is None or ingest_time_ms > self.ingest_ms
        ):
            self.ingest_ms = ingest_time_ms
        newest = self.newest_event_ms
        if newest is None or occurred > newest:
            self.newest_event_ms = occurred

        offset = event.utc_offset_minutes  # 0 when unset; a value other than 0 is set
        if offset or event.HasField("utc_offset_minutes"):
            local = occurred + offset * 60_000
        elif self.tz is None:
            local = occurred
        else:
            local = occurred + zone_offset(self.tz[2], occurred)
        day = local // MS_PER_DAY
        mask = 0
        day_moved = watermark_moved = False
        control: set[str] | None = None
        """Agents a consent or a preference changed (None: the event is neither)."""
        removed: AbstractSet[str] = _NONE
        if kind in FEEDBACK_KINDS:
            feedback_changed = self._feedback(kind, getattr(event, kind), occurred)
            if _FEEDBACK_MASK:
                mask = _FEEDBACK_MASK & _mask_of(self.agents)
        else:
            feedback_changed = False
            if wm is None or occurred > wm:
                watermark_moved = True
                day_moved = wm is None or day != self.asof_day
                self.watermark_ms = wm = occurred
                self.asof_day = day
            if kind == "profile_updated":
                if self.tz is None or (occurred, seq) >= self.tz[:2]:
                    self.tz = (occurred, seq, event.profile_updated.tz)
            elif kind == "consent_changed":
                control, removed = set(), set()
                feedback_changed = self._consent(event.consent_changed, occurred, control, removed)
            elif kind == "preference_set":
                control = set()
                self._preference(event.preference_set, occurred, control)

        readers = _READER_BITS.get(kind)
        if wm is not None and (readers is not None or watermark_moved):
            tz = self.tz
            asof = AsOf(self.asof_day, wm, tz[2] if tz is not None else None)
            agents = self.agents
            if readers is not None:
                folded = Folded(
                    kind,
                    event_id,
                    occurred,
                    day,
                    (local % MS_PER_DAY) // MS_PER_HOUR,
                    seq,
                    getattr(event, kind),
                )
                for agent_id, bit in readers:
                    agent = agents.get(agent_id)
                    if agent is not None and agent.apply(folded, asof):
                        mask |= bit
            if day_moved:
                for agent_id, bit in _EVERY_AGENT:
                    agent = agents.get(agent_id)
                    if agent is not None and agent.on_asof(asof):
                        mask |= bit
                self._prune(asof)
            elif watermark_moved:
                for agent_id, bit in _WATERMARK_BITS:
                    agent = agents.get(agent_id)
                    if agent is not None and agent.on_watermark(asof):
                        mask |= bit
        if control is None:
            if feedback_changed:
                mask |= _FEEDBACK_CHANGED
            applied = _SHARED.get(mask)
            return applied if applied is not None else _shared(mask)
        changed = _ids(mask) | control
        if removed:
            changed &= self.agents.keys()
        elif not changed and not feedback_changed:
            return _ADMITTED_UNCHANGED
        return Applied(True, changed, removed, feedback_changed=feedback_changed)

    def _delete(self, occurred: int) -> Applied:
        self.tombstone_ms = (
            occurred if self.tombstone_ms is None else max(self.tombstone_ms, occurred)
        )
        self._reset()
        self.deleted = True
        return Applied(True, deleted=True)

    def _feedback(self, kind: str, payload: Any, occurred: int) -> bool:
        self.feedback_events += 1
        if kind == "tip_shown":
            agent_ids = tuple(dict.fromkeys(payload.agent_ids))
            self.tips[payload.tip_id] = (occurred, agent_ids)
            per_agent = self.per_agent_feedback
            for agent_id in agent_ids:
                counts = per_agent.get(agent_id)
                if counts is None:
                    per_agent[agent_id] = [1, 0]
                else:
                    counts[0] += 1
        else:
            reaction = payload.reaction
            if reaction in POSITIVE or reaction in NEGATIVE:
                self.acceptance.update(1.0 if reaction in POSITIVE else 0.0)
                self.rated += 1
            tip = self.tips.get(payload.tip_id)
            # Tips are remembered for the allowed lateness; the check is exact whenever pruning ran.
            remembered = tip is not None and (
                self.watermark_ms is None or tip[0] >= self.watermark_ms - ALLOWED_LATENESS_MS
            )
            if reaction in POSITIVE and remembered:
                per_agent = self.per_agent_feedback
                for agent_id in tip[1]:  # type: ignore[index]
                    counts = per_agent.get(agent_id)
                    if counts is None:
                        per_agent[agent_id] = [0, 1]
                    else:
                        counts[1] += 1
        return True

    def _consent(self, payload: Any, occurred: int, changed: set[str], removed: set[str]) -> bool:
        current = self.consents.get(payload.consent)
        if current is not None and (current[0], current[1]) > (occurred, self.seq):
            return False
        self.consents[payload.consent] = (occurred, self.seq, payload.granted)
        for agent_id, cls in REGISTRY.items():
            allowed = self.allowed(agent_id)
            if not allowed and agent_id in self.agents:
                del self.agents[agent_id]
                removed.add(agent_id)
            elif allowed and agent_id not in self.agents:
                self.agents[agent_id] = cls()
                changed.add(agent_id)
        return True

    def _preference(self, payload: Any, occurred: int, changed: set[str]) -> None:
        cls = REGISTRY.get(payload.agent_id)
        if cls is None or payload.param not in cls.MANIFEST.cold_start:
            return
        key = (payload.agent_id, payload.param)
        current = self.preferences.get(key)
        if current is not None and (current[0], current[1]) > (occurred, self.seq):
            return
        value = json.loads(payload.value_json) if payload.value_json else None
        self.preferences[key] = (occurred, self.seq, value)
        changed.add(payload.agent_id)

    def _forgotten(self, seen: tuple[int, int | None]) -> bool:
        occurred, watermark_then = seen
        wm = self.watermark_ms
        advanced = wm is not None and (watermark_then is None or wm > watermark_then)
        return advanced and occurred < wm - ALLOWED_LATENESS_MS  # type: ignore[operator]

    def _prune(self, asof: AsOf) -> None:
        # Runs right after the watermark advanced, so every remembered id was admitted under an
        # older watermark except those admitted since (`then == wm`): the rule of `_forgotten`.
        # Both maps are in admission order, so what can be forgotten gathers at the front: drop
        # it from there, O(forgotten) rather than O(remembered) at each new day. An entry
        # admitted out of order waits until the front reaches it (lookups apply the rule anyway).
        wm = asof.watermark_ms
        horizon = wm - ALLOWED_LATENESS_MS
        seen = self.seen
        stale = []
        for event_id, (occurred, then) in seen.items():
            if occurred >= horizon or then == wm:
                break
            stale.append(event_id)
        for event_id in stale:
            del seen[event_id]
        tips = self.tips
        stale = []
        for tip_id, tip in tips.items():
            if tip[0] >= horizon:
                break
            stale.append(tip_id)
        for tip_id in stale:
            del tips[tip_id]

    # -- reading -------------------------------------------------------------------------

    def allowed(self, agent_id: str) -> bool:
        """Whether every consent the agent requires stands granted (granted until revoked)."""
        required = REGISTRY[agent_id].MANIFEST.required_consents
        return all(self.consents.get(c, (0, 0, True))[2] for c in required)

    def asof(self) -> AsOf | None:
        if self.watermark_ms is None:
            return None
        return AsOf(self.asof_day, self.watermark_ms, self.tz[2] if self.tz else None)

    def user_preferences(self, agent_id: str) -> dict[str, Any]:
        if not self.preferences:  # most users never pin anything
            return {}
        return {
            param: value
            for (aid, param), (_, _, value) in self.preferences.items()
            if aid == agent_id and value is not None
        }

    def outputs(self, agent_ids: Iterable[str] | None = None) -> dict[str, AgentOutput]:
        """Parameters, extras and snippet of each named enabled agent (all when None)."""
        asof = self.asof()
        if asof is None:
            return {}
        wanted = self.agents.keys() if agent_ids is None else agent_ids
        return {
            agent_id: evaluate(
                self.agents[agent_id],
                asof,
                preferences=self.user_preferences(agent_id),
                feedback_events=self.feedback_events,
                event_time_ms=asof.watermark_ms,
            )
            for agent_id in wanted
            if agent_id in self.agents
        }

    def plain_outputs(
        self, agent_ids: Iterable[str]
    ) -> Iterator[tuple[str, AgentBase, PlainOutput]]:
        """`outputs(agent_ids)` as a store write takes them (`features.inference.evaluate_plain`),
        in the order named: (agent id, agent, its output) of each named enabled agent; the
        output's event time is the watermark (`asof().watermark_ms`), its version and TTL the
        manifest's."""
        asof = self.asof()
        if asof is None:
            return
        agents = self.agents
        feedback_events = self.feedback_events
        pinned = self.preferences
        for agent_id in agent_ids:
            agent = agents.get(agent_id)
            if agent is not None:
                preferences = self.user_preferences(agent_id) if pinned else {}
                yield (
                    agent_id,
                    agent,
                    evaluate_plain(
                        agent, asof, preferences=preferences, feedback_events=feedback_events
                    ),
                )

    def feedback(self) -> dict[str, Any]:
        return {
            "feedback_events": self.feedback_events,
            "acceptance_rate": self.acceptance.get() if self.rated else None,
            "per_agent": {
                agent_id: {"shown": shown, "positive": positive}
                for agent_id, (shown, positive) in sorted(self.per_agent_feedback.items())
            },
        }

    def consent_map(self) -> dict[str, bool]:
        return {consent: granted for consent, (_, _, granted) in self.consents.items()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserState):
            return NotImplemented
        mine, theirs = dict(vars(self)), dict(vars(other))
        # river's statistics have no equality: compare what they give.
        acc_a, acc_b = mine.pop("acceptance"), theirs.pop("acceptance")
        return mine == theirs and acc_a.get() == acc_b.get()

    __hash__ = None  # type: ignore[assignment]
