"""`overdue-task`: how late the user usually is, per project, and what is overdue now.

State: lateness entries `(occurred_ms, seq, lateness_ms, project_id)` sorted
by recency, keeping only what can still matter (the 100 most recent overall
and the 50 most recent of each project), and the open tasks with a due date.

Readings where FEATURES.md is silent: recency is by `occurred_at`, ties by
admission order (later admitted = more recent); `median_global` in
`project_realness` is the *inferred* median even when the user pinned the
tolerance; done events with an empty `project_id` count for the tolerance but
not for a project. `overdue_count` / `overdue_task_ids` are extras computed
with the effective tolerance (the user's if set, else inferred, else 1.0)
against the as-of time (the watermark); ids are ordered most overdue first,
ties by task id. A task's state comes from its event with the greatest
`occurred_at` (ties: the later admission); `TaskCreated`/`TaskUpdated` with a
`due_at` open it, without one it is not tracked, `TaskCompleted`/`TaskDeleted`
close it. Closed tasks are forgotten once beyond the allowed lateness.
"""

from __future__ import annotations

import bisect
import statistics
from typing import Any

from features.agent import AgentBase, AsOf, Folded, Inference
from features.model import ALLOWED_LATENESS_MS, Manifest, Param
from features.timeutil import MS_PER_DAY

RECENT_GLOBAL = 100
RECENT_PER_PROJECT = 50
MIN_VALUES = 5
MIN_PROJECT_VALUES = 3
MAX_IDS = 3

MANIFEST = Manifest(
    id="overdue-task",
    version="1.0.0",
    ttl_seconds=30 * 60,
    freshness_sla_seconds=30,
    min_history=0,
    required_consents=("tasks",),
    reads=("task_created", "task_updated", "task_completed", "task_deleted"),
    cold_start={"lateness_tolerance_days": 1.0, "project_realness": {}},
    description="Typical lateness, per-project deadline realness, and overdue open tasks.",
)


def _ts_ms(ts: Any) -> int:
    return int(ts.seconds) * 1000 + int(ts.nanos) // 1_000_000


def median(values: list[float]) -> float:
    """numpy's median: the mean of the two middle values for an even count."""
    return float(statistics.median(values))


class Agent(AgentBase):
    __slots__ = ("entries", "projects", "tasks")

    def __init__(self) -> None:
        self.entries: list[tuple[int, int, int, str]] = []
        """Sorted by (occurred_ms, seq): oldest first."""
        self.projects: set[str] = set()
        self.tasks: dict[str, tuple[int, int, bool, int]] = {}
        """task_id -> (occurred_ms, seq, is_open, due_ms) of its latest event."""

    def apply(self, event: Folded, asof: AsOf) -> bool:
        kind = event.kind
        payload = event.payload
        if kind == "task_completed" and payload.HasField("due_at"):
            lateness = event.occurred_ms - _ts_ms(payload.due_at)
            project = payload.project_id
            bisect.insort(self.entries, (event.occurred_ms, event.seq, lateness, project))
            if project:
                self.projects.add(project)
            if len(self.entries) > RECENT_GLOBAL + RECENT_PER_PROJECT * len(self.projects) + 64:
                self._prune_entries()
        if kind in ("task_created", "task_updated", "task_completed", "task_deleted"):
            self._track(event)
        return True

    def _track(self, event: Folded) -> None:
        payload = event.payload
        current = self.tasks.get(payload.task_id)
        if current is not None and (current[0], current[1]) > (event.occurred_ms, event.seq):
            return
        # An update without a due date untracks the task but its time is remembered, so an
        # older event arriving later cannot reopen it.
        is_open = event.kind in ("task_created", "task_updated") and payload.HasField("due_at")
        due = _ts_ms(payload.due_at) if is_open else 0
        self.tasks[payload.task_id] = (event.occurred_ms, event.seq, is_open, due)

    def _prune_entries(self) -> None:
        keep_global = len(self.entries) - RECENT_GLOBAL
        per_project: dict[str, int] = {}
        kept: list[tuple[int, int, int, str]] = []
        for index in range(len(self.entries) - 1, -1, -1):
            entry = self.entries[index]
            seen = per_project.get(entry[3], 0)
            per_project[entry[3]] = seen + 1
            if index >= keep_global or (entry[3] and seen < RECENT_PER_PROJECT):
                kept.append(entry)
        kept.reverse()
        self.entries = kept

    def on_asof(self, asof: AsOf) -> bool:
        horizon = asof.watermark_ms - ALLOWED_LATENESS_MS
        closed = [
            t for t, (occ, _, is_open, _) in self.tasks.items() if not is_open and occ < horizon
        ]
        # Closed or untracked tasks beyond the allowed lateness cannot be touched by an admitted event.
        for task_id in closed:
            del self.tasks[task_id]
        return True

    def on_watermark(self, asof: AsOf) -> bool:
        return any(is_open for _, _, is_open, _ in self.tasks.values())

    def infer(self, asof: AsOf, preferences: dict[str, Any]) -> Inference:
        recent = [e[2] / MS_PER_DAY for e in self.entries[-RECENT_GLOBAL:]]
        values: dict[str, Any] | None = None
        inferred_tolerance = None
        if len(recent) >= MIN_VALUES:
            inferred_tolerance = median(recent)
            by_project: dict[str, list[float]] = {}
            for entry in reversed(self.entries):
                if entry[3]:
                    bucket = by_project.setdefault(entry[3], [])
                    if len(bucket) < RECENT_PER_PROJECT:
                        bucket.append(entry[2] / MS_PER_DAY)
            realness = {
                project: 1.0 / (1.0 + max(0.0, median(vals) - inferred_tolerance))
                for project, vals in sorted(by_project.items())
                if len(vals) >= MIN_PROJECT_VALUES
            }
            values = {"lateness_tolerance_days": inferred_tolerance, "project_realness": realness}
        tolerance = preferences.get(
            "lateness_tolerance_days",
            inferred_tolerance if inferred_tolerance is not None else 1.0,
        )
        try:
            tolerance_ms = float(tolerance) * MS_PER_DAY
        except (TypeError, ValueError):
            tolerance_ms = float(MS_PER_DAY)
        overdue = sorted(
            (due, task_id)
            for task_id, (_, _, is_open, due) in self.tasks.items()
            if is_open and due + tolerance_ms < asof.watermark_ms
        )
        extras = {
            "overdue_count": len(overdue),
            "overdue_task_ids": [task_id for _, task_id in overdue[:MAX_IDS]],
        }
        return Inference(values, extras)

    def snippet(self, params: dict[str, Param], extras: dict[str, Any]) -> str:
        tolerance = params["lateness_tolerance_days"].value
        lax = sorted(p for p, score in params["project_realness"].value.items() if score < 0.5)
        text = (
            f"{extras['overdue_count']} open tasks are overdue beyond the usual "
            f"{tolerance:.1f} days of lateness"
        )
        if lax:
            text += f"; deadlines in {', '.join(lax[:3])} are usually soft"
        return text + "."
