"""`recent-patterns`: how strong the user's weekly and daily rhythms are lately.

State: done events per local day and hour for the last 112 days (plus margin).

Readings where docs/features.md is silent: "the last L days" are the local dates
D-L+1..D; the cycle strength `1 - mean/max` is over all 7 (or 24) bins,
empty bins included.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate
from typing import Any

from features.agent import AgentBase, AsOf, Folded, Inference, drop_below
from features.model import Manifest, Param
from features.timeutil import weekday

LOOKBACKS = (7, 14, 28, 56, 112)
MIN_FOR_LOOKBACK = 30
MIN_DONE = 10
STRONG = 0.5

MANIFEST = Manifest(
    id="recent-patterns",
    version="1.0.0",
    ttl_seconds=24 * 3600,
    freshness_sla_seconds=300,
    min_history=0,
    required_consents=("tasks",),
    reads=("task_completed",),
    cold_start={"lookback_days": 28, "weekly_cycle": 0.0, "daily_cycle": 0.0},
    description="Weekly and daily cycle strength over an adaptive lookback.",
)


def cycle_strength(bins: list[int]) -> float:
    top = max(bins)
    if top == 0:
        return 0.0
    return 1.0 - (sum(bins) / len(bins)) / top


class Agent(AgentBase):
    __slots__ = ("_pruned_day", "cells", "totals")

    def __init__(self) -> None:
        self.cells: dict[int, int] = {}
        """(local day * 24 + local hour) -> done events; sparse, so a year pickles small."""
        self.totals: dict[int, int] = {}
        """local day -> done events."""

    def apply(self, event: Folded, asof: AsOf) -> bool:
        if event.kind != "task_completed":
            return False
        key = event.day * 24 + event.hour
        self.cells[key] = self.cells.get(key, 0) + 1
        self.totals[event.day] = self.totals.get(event.day, 0) + 1
        return event.day > asof.day - LOOKBACKS[-1]

    def on_asof(self, asof: AsOf) -> bool:
        if not self._prune_due(asof):
            return True
        floor = asof.day - LOOKBACKS[-1] - 3
        drop_below(self.totals, floor)
        drop_below(self.cells, floor * 24)
        return True

    def infer(self, asof: AsOf, preferences: dict[str, Any]) -> Inference:
        totals = self.totals
        # Done events over each lookback (the last L local dates D-L+1..D) in one pass: each
        # day counts for the shortest lookback that holds it, then the sums run over them.
        shortest = [0] * len(LOOKBACKS)
        for day, n in totals.items():
            age = asof.day - day
            if 0 <= age < LOOKBACKS[-1]:
                shortest[bisect_right(LOOKBACKS, age)] += n
        done_in = dict(zip(LOOKBACKS, accumulate(shortest), strict=True))
        if done_in[LOOKBACKS[-1]] < MIN_DONE:
            return Inference(None, {})
        lookback = next((n for n in LOOKBACKS if done_in[n] >= MIN_FOR_LOOKBACK), LOOKBACKS[-1])
        lo = asof.day - lookback + 1
        weekly = [0] * 7
        daily = [0] * 24
        for day, n in totals.items():
            if lo <= day <= asof.day:
                weekly[weekday(day)] += n
        first, last = lo * 24, (asof.day + 1) * 24
        for key, n in self.cells.items():
            if first <= key < last:
                daily[key % 24] += n
        values = {
            "lookback_days": lookback,
            "weekly_cycle": cycle_strength(weekly),
            "daily_cycle": cycle_strength(daily),
        }
        return Inference(values, {})

    def snippet(self, params: dict[str, Param], extras: dict[str, Any]) -> str:
        lookback = params["lookback_days"].value
        parts = []
        if params["weekly_cycle"].value > STRONG:
            parts.append(f"a strong weekly rhythm ({params['weekly_cycle'].value:.2f})")
        if params["daily_cycle"].value > STRONG:
            parts.append(f"a strong daily rhythm ({params['daily_cycle'].value:.2f})")
        if not parts:
            return f"No strong weekly or daily rhythm over the last {lookback} days."
        return f"Over the last {lookback} days the user shows " + " and ".join(parts) + "."
