"""`context`: the named contexts a person is in (travel, focus, commuting...) and what they do there.

State: per context name, its `ContextChanged` transitions `(occurred_ms, seq, active)` in
event-time order (those older than the window, but the latest of them, are dropped), and the
done events `(occurred_ms, local day)` of the last 28 days (plus margin). At most
`MAX_CONTEXTS` names are kept: a new name beyond them forgets the name whose latest
transition is oldest (ties: the earlier admission), so the state stays bounded whatever
names an integration sends.

Readings where docs/features.md is silent: a context's state at a time `t` is set by its
transition with the greatest `occurred_at <= t` (ties: the later admission); an empty
context name is ignored; `active_since` is the `occurred_at` (epoch ms) of the transition
that stands, so a repeated activation restarts it.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from typing import Any

from features.agent import AgentBase, AsOf, Folded, Inference
from features.model import Manifest, Param
from features.timeutil import MS_PER_DAY

WINDOW_DAYS = 28
MAX_CONTEXTS = 32
_MARGIN_DAYS = 3
_LAST = 1 << 62
"""Greater than any admission seq: `(t, _LAST)` sorts after every transition at `t`."""

MANIFEST = Manifest(
    id="context",
    version="1.0.0",
    ttl_seconds=2 * 3600,
    freshness_sla_seconds=60,
    min_history=0,
    required_consents=("tasks", "context"),
    reads=("context_changed", "task_completed"),
    cold_start={"active_contexts": [], "active_since": {}, "done_in_context": {}},
    description="Which named contexts are active, since when, and the tasks done in each.",
)


class Agent(AgentBase):
    __slots__ = ("_pruned_day", "done", "seen_context", "transitions")

    def __init__(self) -> None:
        self.transitions: dict[str, list[tuple[int, int, bool]]] = {}
        """context name -> its transitions (occurred_ms, seq, active), sorted."""
        self.done: list[tuple[int, int]] = []
        """(occurred_ms, local day) of done events, in admission order."""
        self.seen_context = False
        """The data guard: a ContextChanged was folded in since the agent was (re)enabled."""

    def apply(self, event: Folded, asof: AsOf) -> bool:
        if event.kind == "task_completed":
            self.done.append((event.occurred_ms, event.day))
            return bool(self.transitions) and event.day > asof.day - WINDOW_DAYS
        name = event.payload.context
        if event.kind != "context_changed" or not name:
            return False
        self.seen_context = True
        runs = self.transitions.get(name)
        if runs is None:
            if len(self.transitions) >= MAX_CONTEXTS:
                oldest = min(self.transitions, key=lambda c: self.transitions[c][-1][:2])
                del self.transitions[oldest]
            runs = self.transitions[name] = []
        insort(runs, (event.occurred_ms, event.seq, bool(event.payload.active)))
        return True

    def on_asof(self, asof: AsOf) -> bool:
        if not self._prune_due(asof):
            return True
        floor_day = asof.day - WINDOW_DAYS - _MARGIN_DAYS
        self.done = [d for d in self.done if d[1] >= floor_day]
        # A done event of the window is never older than this; a later event never lands
        # before it (the allowed lateness is 7 days), so only the last transition before it
        # still matters.
        floor_ms = asof.watermark_ms - (WINDOW_DAYS + _MARGIN_DAYS) * MS_PER_DAY
        for runs in self.transitions.values():
            cut = bisect_right(runs, (floor_ms, -1, False))
            if cut > 1:
                del runs[: cut - 1]
        return True

    def infer(self, asof: AsOf, preferences: dict[str, Any]) -> Inference:
        if not self.seen_context:
            return Inference(None, {})
        active: list[str] = []
        since: dict[str, int] = {}
        for name in sorted(self.transitions):
            t, _, is_active = self.transitions[name][-1]
            if is_active:
                active.append(name)
                since[name] = t
        lo = asof.day - WINDOW_DAYS + 1
        # Each done event of the window as a probe that sorts after every transition at its time.
        probes = [(t, _LAST, True) for t, day in self.done if lo <= day <= asof.day]
        counts: dict[str, int] = {}
        for name in sorted(self.transitions):
            runs = self.transitions[name]
            n = 0
            for probe in probes:
                at = bisect_right(runs, probe)
                if at and runs[at - 1][2]:
                    n += 1
            if n:
                counts[name] = n
        values = {"active_contexts": active, "active_since": since, "done_in_context": counts}
        return Inference(values, {})

    def snippet(self, params: dict[str, Param], extras: dict[str, Any]) -> str:
        active = params["active_contexts"].value
        counts = params["done_in_context"].value
        now = "Active now: " + ", ".join(active) if active else "No context is active now"
        if not counts:
            return now + "; no task was done inside a context in the last 28 days."
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        done = ", ".join(f"{n} while {name}" for name, n in ranked)
        return f"{now}; tasks done in the last 28 days: {done}."
