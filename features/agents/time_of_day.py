"""`time-of-day`: when in the day the user gets things done.

State: done events per (local day, local hour) for the last 28 days (plus a
small margin because D can step back a day when the user's UTC offset moves
west). `tz` is the profile zone and never inferred.

Readings where docs/features.md is silent: the 28-day window is the local dates
D-27..D; `quiet_start`/`quiet_end` keep their cold-start values (source
`cold_start`) when no hour is below the baseline, while the other parameters
are inferred.
"""

from __future__ import annotations

from typing import Any

from features.agent import AgentBase, AsOf, Folded, Inference, drop_below
from features.model import Manifest, Param

WINDOW_DAYS = 28
MIN_DONE = 10

MANIFEST = Manifest(
    id="time-of-day",
    version="1.0.0",
    ttl_seconds=6 * 3600,
    freshness_sla_seconds=60,
    min_history=0,
    required_consents=("tasks",),
    reads=("task_completed", "profile_updated"),
    cold_start={
        "preferred_hour": 9,
        "quiet_start": 22,
        "quiet_end": 7,
        "peak_hours": [9, 10, 11],
        "tz": "UTC",
    },
    description="Preferred hour, quiet hours and peak hours of completions over 28 days.",
)


def hour_histogram(counts: dict[int, int], day: int) -> list[int]:
    """Done events per local hour over the local dates day-27..day from (day*24+hour) counts."""
    hist = [0] * 24
    lo = (day - WINDOW_DAYS + 1) * 24
    hi = (day + 1) * 24
    for key, n in counts.items():
        if lo <= key < hi:
            hist[key % 24] += n
    return hist


def percentile_linear(values: list[int], q: float) -> float:
    """numpy's default (linear) percentile, for the same float result."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    t = pos - lo
    if lo + 1 >= len(ordered):
        return float(ordered[lo])
    a, b = ordered[lo], ordered[lo + 1]
    diff = b - a
    if t >= 0.5:
        return b - diff * (1 - t)
    return a + diff * t


def longest_quiet_run(hist: list[int], baseline: float) -> tuple[int, int] | None:
    """(first hour, length) of the longest circular run of hours below `baseline`; ties: smallest first hour."""
    below = [h < baseline for h in hist]
    if not any(below):
        return None
    if all(below):
        return 0, 24
    best: tuple[int, int] | None = None
    for start in range(24):
        if not below[start] or below[(start - 1) % 24]:
            continue
        length = 0
        while below[(start + length) % 24]:
            length += 1
        if best is None or length > best[1]:
            best = (start, length)
    return best


class Agent(AgentBase):
    __slots__ = (
        "_pruned_day",
        "counts",
    )

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def apply(self, event: Folded, asof: AsOf) -> bool:
        if event.kind == "profile_updated":
            return True
        if event.kind != "task_completed":
            return False
        key = event.day * 24 + event.hour
        self.counts[key] = self.counts.get(key, 0) + 1
        return event.day > asof.day - WINDOW_DAYS

    def on_asof(self, asof: AsOf) -> bool:
        if not self._prune_due(asof):
            return True
        floor = (asof.day - WINDOW_DAYS - 3) * 24
        drop_below(self.counts, floor)
        return True

    def infer(self, asof: AsOf, preferences: dict[str, Any]) -> Inference:
        hist = hour_histogram(self.counts, asof.day)
        extras: dict[str, Any] = {"hist": hist}
        context = {"tz": asof.tz or "UTC"}
        total = sum(hist)
        if total < MIN_DONE:
            return Inference(None, extras, context)
        preferred = hist.index(max(hist))  # the most done; ties: the earliest hour
        values: dict[str, Any] = {"preferred_hour": preferred}
        run = longest_quiet_run(hist, total / 24)
        if run is not None:
            start, length = run
            values["quiet_start"] = start
            values["quiet_end"] = (start + length) % 24
        q75 = percentile_linear(hist, 75)
        values["peak_hours"] = [h for h in range(24) if hist[h] > 0 and hist[h] >= q75]
        return Inference(values, extras, context)

    def snippet(self, params: dict[str, Param], extras: dict[str, Any]) -> str:
        hours = params["peak_hours"].value
        peaks = ", ".join(f"{h}:00" for h in hours[:4]) + (" and more" if len(hours) > 4 else "")
        return (
            f"Gets most done around {params['preferred_hour'].value}:00 (peaks {peaks}); "
            f"quiet from {params['quiet_start'].value}:00 to {params['quiet_end'].value}:00 "
            f"({params['tz'].value})."
        )
