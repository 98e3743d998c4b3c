"""`focus-area`: the projects the user has been finishing things in lately.

State: per (local day, project) the number of done events and the latest
completion time, for the last 28 days (plus margin).

Readings where docs/features.md is silent: "the later latest completion" compares
each project's latest `occurred_at` among its done events in the window; done
events without a `project_id` are ignored.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from features.agent import AgentBase, AsOf, Folded, Inference, drop_below
from features.model import Manifest, Param

WINDOW_DAYS = 28
MIN_DONE = 5
TOP = 2

MANIFEST = Manifest(
    id="focus-area",
    version="1.0.0",
    ttl_seconds=12 * 3600,
    freshness_sla_seconds=300,
    min_history=0,
    required_consents=("tasks",),
    reads=("task_completed",),
    cold_start={"preferred_areas": []},
    description="The two projects with the most completions over 28 days.",
)


class Agent(AgentBase):
    __slots__ = (
        "_pruned_day",
        "cells",
    )

    def __init__(self) -> None:
        self.cells: dict[tuple[int, str], tuple[int, int]] = {}
        """(local day, project_id) -> (done events, latest occurred_ms)."""

    def apply(self, event: Folded, asof: AsOf) -> bool:
        if event.kind != "task_completed" or not event.payload.project_id:
            return False
        key = (event.day, event.payload.project_id)
        count, latest = self.cells.get(key, (0, event.occurred_ms))
        self.cells[key] = (count + 1, max(latest, event.occurred_ms))
        return event.day > asof.day - WINDOW_DAYS

    def on_asof(self, asof: AsOf) -> bool:
        if not self._prune_due(asof):
            return True
        floor = asof.day - WINDOW_DAYS - 3
        drop_below(self.cells, floor, key=itemgetter(0))
        return True

    def infer(self, asof: AsOf, preferences: dict[str, Any]) -> Inference:
        lo = asof.day - WINDOW_DAYS + 1
        totals: dict[str, list[int]] = {}
        for (day, project), (count, latest) in self.cells.items():
            if lo <= day <= asof.day:
                agg = totals.get(project)
                if agg is None:
                    totals[project] = [count, latest]
                else:
                    agg[0] += count
                    if latest > agg[1]:
                        agg[1] = latest
        if sum(agg[0] for agg in totals.values()) < MIN_DONE:
            return Inference(None, {})
        ranked = sorted(totals, key=lambda p: (-totals[p][0], -totals[p][1], p))
        return Inference({"preferred_areas": ranked[:TOP]}, {})

    def snippet(self, params: dict[str, Param], extras: dict[str, Any]) -> str:
        areas = params["preferred_areas"].value
        if not areas:
            return "No project stands out in the last 28 days."
        return "Most completions in the last 28 days: " + " and ".join(areas) + "."
