"""`overdue-task`: how late the user usually is, per project, and what is overdue now.

State: lateness entries `(occurred_ms, seq, lateness_ms, project_id)` sorted
by recency, keeping only what can still matter (the 100 most recent overall
and the 50 most recent of each project), and the open tasks with a due date.

Readings where docs/features.md is silent: recency is by `occurred_at`, ties by
admission order (later admitted = more recent); `median_global` in
`project_realness` is the *inferred* median even when the user pinned the
tolerance; done events with an empty `project_id` count for the tolerance but
not for a project. `overdue_count` / `overdue_task_ids` are extras computed
with the effective tolerance (the user's if set, else inferred, else 1.0)
against the as-of time (the watermark); ids are ordered most overdue first,
ties by task id. A task's state comes from its event with the greatest
`occurred_at` (ties: the later admission); `TaskCreated`/`TaskUpdated` with a
`due_at` open it, without one it is not tracked, `TaskCompleted`/`TaskDeleted`
close it. Closed tasks are forgotten once beyond the allowed lateness. At most
`MAX_OPEN_TASKS` (64) open tasks are tracked: beyond that the one whose latest
event is oldest is forgotten, so the state stays bounded for people who never
close anything (`overdue_count` then counts among the 64 most recently touched).
"""

from __future__ import annotations

import bisect
import statistics
import sys
import zlib
from array import array
from typing import Any

from features.agent import AgentBase, AsOf, Folded, Inference
from features.model import ALLOWED_LATENESS_MS, Manifest, Param
from features.timeutil import MS_PER_DAY

RECENT_GLOBAL = 100
RECENT_PER_PROJECT = 50
MIN_VALUES = 5
MIN_PROJECT_VALUES = 3
MAX_IDS = 3
MAX_OPEN_TASKS = 64
"""Open tasks tracked per user; beyond it the least recently touched is forgotten (bounded state)."""

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


def median(values: list[float]) -> float:
    """numpy's median: the mean of the two middle values for an even count."""
    return float(statistics.median(values))


class Agent(AgentBase):
    __slots__ = (
        "_memo",
        "_pruned_day",
        "late",
        "occ",
        "open_due",
        "project_names",
        "projects",
        "tasks",
    )

    def __init__(self) -> None:
        # Lateness entries as parallel arrays, oldest first (a year of history stays a few KB).
        # Ties in occurred_at keep admission order: later admitted = more recent.
        self.occ = array("q")
        self.late = array("q")
        self.projects = array("H")
        """Index into `project_names`; 0 is "no project"."""
        self.project_names: list[str] = [""]
        self.tasks: dict[str, tuple[int, int, bool, int]] = {}
        """task_id -> (occurred_ms, seq, is_open, due_ms) of its latest event."""
        self.open_due: list[tuple[int, str]] = []
        """(due_ms, task_id) of the open tasks, sorted: overdue ones are a prefix."""
        self._memo: tuple[float | None, dict[str, Any] | None] | None = None
        """Tolerance and parameters of the current entries (not part of the state)."""

    def __getstate__(self) -> dict[str, Any]:
        # open_due is derived from tasks and the memo is a cache: neither is pickled. The
        # columns go as they are: `UserState` compresses the whole state at once (ADR 0060).
        return {
            "occ": self.occ,
            "late": self.late,
            # One byte a project index while there are fewer than 256 projects.
            "projects": bytes(self.projects.tolist())
            if len(self.project_names) < 256
            else self.projects,
            "project_names": self.project_names,
            "tasks": self.tasks,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Before ADR 0060 the two integer columns were compressed here, one by one.
        occ, late = state["occ"], state["late"]
        self.occ = array("q", zlib.decompress(occ)) if isinstance(occ, bytes) else occ
        self.late = array("q", zlib.decompress(late)) if isinstance(late, bytes) else late
        packed = state["projects"]
        self.projects = array("H", list(packed)) if isinstance(packed, bytes) else packed
        self.project_names = state["project_names"]
        self.tasks = state["tasks"]
        self.open_due = sorted(
            (due, t) for t, (_, _, is_open, due) in self.tasks.items() if is_open
        )
        self._memo = None

    def apply(self, event: Folded, asof: AsOf) -> bool:
        kind = event.kind
        payload = event.payload
        occurred = event.occurred_ms
        # A due date whose seconds read other than 0 is set: its presence is asked only for 0
        # (reading an unset message field does not set it).
        if kind == "task_completed":
            due = payload.due_at
            if due.seconds or payload.HasField("due_at"):
                lateness = occurred - (due.seconds * 1000 + due.nanos // 1_000_000)
                self._add_lateness(occurred, lateness, payload.project_id)
            self._track(payload.task_id, occurred, event.seq, False, 0)
        elif kind == "task_created" or kind == "task_updated":
            # An update without a due date untracks the task but its time is remembered, so an
            # older event arriving later cannot reopen it.
            due = payload.due_at
            if due.seconds or payload.HasField("due_at"):
                self._track(
                    payload.task_id,
                    occurred,
                    event.seq,
                    True,
                    due.seconds * 1000 + due.nanos // 1_000_000,
                )
            else:
                self._track(payload.task_id, occurred, event.seq, False, 0)
        elif kind == "task_deleted":
            self._track(payload.task_id, occurred, event.seq, False, 0)
        return True

    def _add_lateness(self, occurred: int, lateness: int, project: str) -> None:
        try:
            index = self.project_names.index(project)
        except ValueError:
            index = len(self.project_names)
            self.project_names.append(sys.intern(project))
        pos = bisect.bisect_right(self.occ, occurred)
        self.occ.insert(pos, occurred)
        self.late.insert(pos, lateness)
        self.projects.insert(pos, index)
        self._memo = None
        if len(self.occ) > RECENT_GLOBAL + RECENT_PER_PROJECT * (len(self.project_names) - 1) + 64:
            self._prune_entries()

    def _track(self, task_id: str, occurred: int, seq: int, is_open: bool, due: int) -> None:
        """The task's latest event (by `occurred_at`, ties: the later admission) sets its state."""
        task_id = sys.intern(task_id)
        tasks = self.tasks
        current = tasks.get(task_id)
        if current is not None:
            then = current[0]
            if then > occurred or (then == occurred and current[1] > seq):
                return
            if current[2]:
                self.open_due.remove((current[3], task_id))
        tasks[task_id] = (occurred, seq, is_open, due)
        if is_open:
            bisect.insort(self.open_due, (due, task_id))
            if len(self.open_due) > MAX_OPEN_TASKS:
                self._forget_stalest_open_task()

    def _forget_stalest_open_task(self) -> None:
        stalest = min((self.tasks[t][:2], t) for _, t in self.open_due)[1]
        entry = self.tasks.pop(stalest)
        self.open_due.remove((entry[3], stalest))

    def _prune_entries(self) -> None:
        keep_global = len(self.occ) - RECENT_GLOBAL
        per_project: dict[int, int] = {}
        kept = []
        for index in range(len(self.occ) - 1, -1, -1):
            project = self.projects[index]
            seen = per_project.get(project, 0)
            per_project[project] = seen + 1
            if index >= keep_global or (project and seen < RECENT_PER_PROJECT):
                kept.append(index)
        kept.reverse()
        self.occ = array("q", (self.occ[i] for i in kept))
        self.late = array("q", (self.late[i] for i in kept))
        self.projects = array("H", (self.projects[i] for i in kept))

    def on_asof(self, asof: AsOf) -> bool:
        if not self._prune_due(asof):
            return True
        horizon = asof.watermark_ms - ALLOWED_LATENESS_MS
        # Closed or untracked tasks beyond the allowed lateness cannot be touched by an admitted event.
        closed = [
            t for t, (occ, _, is_open, _) in self.tasks.items() if not is_open and occ < horizon
        ]
        for task_id in closed:
            del self.tasks[task_id]
        return True

    def on_watermark(self, asof: AsOf) -> bool:
        return bool(self.open_due)

    def _lateness_params(self) -> tuple[float | None, dict[str, Any] | None]:
        if self._memo is not None:
            return self._memo
        recent = [ms / MS_PER_DAY for ms in self.late[-RECENT_GLOBAL:]]
        result: tuple[float | None, dict[str, Any] | None] = (None, None)
        if len(recent) >= MIN_VALUES:
            tolerance = median(recent)
            by_project: dict[int, list[float]] = {}
            # Most recent first: each project's latest RECENT_PER_PROJECT values.
            for project, ms in zip(reversed(self.projects), reversed(self.late), strict=True):
                if project:
                    bucket = by_project.get(project)
                    if bucket is None:
                        by_project[project] = [ms / MS_PER_DAY]
                    elif len(bucket) < RECENT_PER_PROJECT:
                        bucket.append(ms / MS_PER_DAY)
            realness = {
                self.project_names[project]: 1.0 / (1.0 + max(0.0, median(vals) - tolerance))
                for project, vals in by_project.items()
                if len(vals) >= MIN_PROJECT_VALUES
            }
            values = {
                "lateness_tolerance_days": tolerance,
                "project_realness": dict(sorted(realness.items())),
            }
            result = (tolerance, values)
        self._memo = result
        return result

    def infer(self, asof: AsOf, preferences: dict[str, Any]) -> Inference:
        inferred_tolerance, values = self._lateness_params()
        tolerance = preferences.get(
            "lateness_tolerance_days",
            inferred_tolerance if inferred_tolerance is not None else 1.0,
        )
        try:
            tolerance_ms = float(tolerance) * MS_PER_DAY
        except (TypeError, ValueError):
            tolerance_ms = float(MS_PER_DAY)
        limit = asof.watermark_ms - tolerance_ms
        count = bisect.bisect_left(self.open_due, limit, key=lambda entry: entry[0])
        extras = {
            "overdue_count": count,
            "overdue_task_ids": [task_id for _, task_id in self.open_due[: min(count, MAX_IDS)]],
        }
        return Inference(None if values is None else dict(values), extras)

    def snippet(self, params: dict[str, Param], extras: dict[str, Any]) -> str:
        tolerance = params["lateness_tolerance_days"].value
        lax = sorted(p for p, score in params["project_realness"].value.items() if score < 0.5)
        text = (
            f"{extras['overdue_count']} open "
            f"{'task is' if extras['overdue_count'] == 1 else 'tasks are'} overdue beyond the usual "
            f"{tolerance:.1f} days of lateness"
        )
        if lax:
            text += f"; deadlines in {', '.join(lax[:3])} are usually soft"
        return text + "."
