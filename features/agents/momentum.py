"""`momentum`: today's completions against the user's own recent baseline.

State: done events per local day for the last 28 days (plus margin) and the
earliest done event ever folded in (its local date starts the baseline).
The baseline statistics are river's `Var(ddof=1)` and its running `Mean` over the
day buckets, recomputed from the buckets so late events land in their own day.

Readings where docs/features.md is silent: `first_done_date` is the local date of
the done event with the smallest `occurred_at` (its own offset); `today`,
`z` and the trend are computed even when today is 0.
"""

from __future__ import annotations

from typing import Any, ClassVar

from river import stats

from features.agent import AgentBase, AsOf, Folded, Inference, drop_below
from features.model import Manifest, Param

BASELINE_DAYS = 28
MIN_BASELINE_DAYS = 7

MANIFEST = Manifest(
    id="momentum",
    version="1.0.0",
    ttl_seconds=3600,
    freshness_sla_seconds=30,
    min_history=0,
    required_consents=("tasks",),
    reads=("task_completed",),
    cold_start={
        "baseline_completions_per_day": 0.0,
        "stdev": 0.0,
        "z": 0.0,
        "engagement_trend": "steady",
    },
    description="Completions today against the 28-day baseline (z-score and trend).",
)


class Agent(AgentBase):
    __slots__ = ("_pruned_day", "first_done", "per_day")

    baseline_days: ClassVar[int] = BASELINE_DAYS
    """The baseline window; a shadow version may subclass with another (tests/shadow_agents)."""

    def __init__(self) -> None:
        self.per_day: dict[int, int] = {}
        self.first_done: tuple[int, int] | None = None
        """(occurred_ms, local day) of the earliest done event."""

    def apply(self, event: Folded, asof: AsOf) -> bool:
        if event.kind != "task_completed":
            return False
        self.per_day[event.day] = self.per_day.get(event.day, 0) + 1
        if self.first_done is None or event.occurred_ms < self.first_done[0]:
            self.first_done = (event.occurred_ms, event.day)
        return event.day >= asof.day - self.baseline_days

    def on_asof(self, asof: AsOf) -> bool:
        if not self._prune_due(asof):
            return True
        floor = asof.day - self.baseline_days - 3
        drop_below(self.per_day, floor)
        return True

    def infer(self, asof: AsOf, preferences: dict[str, Any]) -> Inference:
        today = self.per_day.get(asof.day, 0)
        extras: dict[str, Any] = {"today": today}
        if self.first_done is None:
            return Inference(None, extras)
        start = max(asof.day - self.baseline_days, self.first_done[1])
        days = range(start, asof.day)
        if len(days) < MIN_BASELINE_DAYS:
            return Inference(None, extras)
        # Var keeps the running Mean of the same counts (its `mean`): one pass gives both.
        var = stats.Var(ddof=1)
        update = var.update
        per_day = self.per_day
        for day in days:
            update(per_day.get(day, 0))
        baseline = var.mean.get()
        stdev = max(var.get(), 0.0) ** 0.5
        z = (today - baseline) / stdev if stdev > 0 else 0.0
        trend = "rising" if z >= 1 else "falling" if z <= -1 else "steady"
        values = {
            "baseline_completions_per_day": baseline,
            "stdev": stdev,
            "z": z,
            "engagement_trend": trend,
        }
        return Inference(values, extras)

    def snippet(self, params: dict[str, Param], extras: dict[str, Any]) -> str:
        z = params["z"].value
        side = "above" if z >= 0 else "below"
        return (
            f"So far today: {extras['today']} task{'' if extras['today'] == 1 else 's'} done, "
            f"{abs(z):.1f} standard deviations "
            f"{side} the 28-day baseline of {params['baseline_completions_per_day'].value:.1f} a day."
        )
