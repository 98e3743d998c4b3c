"""`momentum-same`: exactly momentum, as a shadow of it (agreement is 100 % by construction)."""

from __future__ import annotations

import dataclasses

from features.agents import momentum

MANIFEST = dataclasses.replace(
    momentum.MANIFEST, id="momentum-same", shadows="momentum", description="momentum, again."
)


class Agent(momentum.Agent):
    __slots__ = ()
