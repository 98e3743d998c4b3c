"""The agent registry: every module under `features/agents/` that exposes `MANIFEST` and `Agent`.

Adding an agent is a manifest plus one module; nothing else in the flow, the
store or the API names agents.

>>> sorted(REGISTRY)
['focus-area', 'momentum', 'overdue-task', 'recent-patterns', 'time-of-day']
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping

import features.agents
from features.agent import AgentBase
from features.model import Manifest


def discover() -> dict[str, type[AgentBase]]:
    found: dict[str, type[AgentBase]] = {}
    for info in sorted(pkgutil.iter_modules(features.agents.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"features.agents.{info.name}")
        manifest = getattr(module, "MANIFEST", None)
        agent = getattr(module, "Agent", None)
        if not isinstance(manifest, Manifest) or agent is None:
            continue
        if manifest.id in found:
            raise RuntimeError(f"two agents share the id {manifest.id!r}")
        agent.MANIFEST = manifest
        found[manifest.id] = agent
    return found


REGISTRY: Mapping[str, type[AgentBase]] = discover()


def manifests() -> list[Manifest]:
    """Every registered agent's manifest, by id."""
    return [REGISTRY[agent_id].MANIFEST for agent_id in sorted(REGISTRY)]


def manifest(agent_id: str) -> Manifest:
    return REGISTRY[agent_id].MANIFEST
