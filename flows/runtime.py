"""Process-level tuning shared by the long-running jobs (flow, backfill, benchmarks)."""

from __future__ import annotations

import gc


def tune_gc() -> None:
    """Collect cycles rarely: per-user state is many small acyclic containers.

    With the default thresholds the cyclic collector keeps rescanning every
    user's state (a third of the flow's CPU in a py-spy profile of the
    1M-event benchmark). Nothing in the engine relies on cycle collection, so
    freeze what exists at start-up and collect far less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(200_000, 50, 100)
