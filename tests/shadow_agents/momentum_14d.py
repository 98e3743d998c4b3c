"""`momentum-14d`: momentum with a 14-day baseline, a shadow of `momentum`."""

from __future__ import annotations

import dataclasses

from features.agents import momentum

MANIFEST = dataclasses.replace(
    momentum.MANIFEST,
    id="momentum-14d",
    version="1.1.0",
    shadows="momentum",
    description="Completions today against a 14-day baseline (shadow of momentum).",
)


class Agent(momentum.Agent):
    __slots__ = ()
    baseline_days = 14
