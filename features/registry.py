"""The agent registry: every module under `features/agents/` that exposes `MANIFEST` and `Agent`.

Adding an agent is a manifest plus one module; nothing else in the flow, the
store or the API names agents. The generator, the test reference and the
benchmarks take their agent list from here too.

Failure behaviour: a module under the package that is not a well-formed agent
(no `MANIFEST`, a `MANIFEST` that is not a `Manifest`, no `Agent`, an `Agent`
that is not an `AgentBase` or leaves `apply`, `infer` or `snippet` undefined,
a `reads` kind that is not an event payload, two modules with one id) makes
`discover` raise `AgentModuleError` naming the module and what is wrong, so a
malformed agent stops every process at start-up instead of being skipped.
Modules whose name starts with `_` are helpers and are not agents.

>>> sorted(REGISTRY)
['context', 'focus-area', 'momentum', 'overdue-task', 'recent-patterns', 'time-of-day']
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
from collections.abc import Mapping
from types import ModuleType

import features.agents
from features.agent import AgentBase
from features.model import Manifest
from proto import events_pb2 as pb

REQUIRED_METHODS = ("apply", "infer", "snippet")
PAYLOAD_KINDS = frozenset(f.name for f in pb.Event.DESCRIPTOR.oneofs_by_name["payload"].fields)
_SEMVER = re.compile(r"^\d+\.\d+\.\d+$")


class AgentModuleError(RuntimeError):
    """A module under the agents package is not a well-formed agent (the message says which)."""


def check_agent(module_name: str, manifest: object, agent: object) -> list[str]:
    """What is missing or wrong in one agent module (empty when it is well formed)."""
    problems: list[str] = []
    if manifest is None:
        problems.append("no MANIFEST")
    elif not isinstance(manifest, Manifest):
        problems.append(
            f"MANIFEST is a {type(manifest).__name__}, expected features.model.Manifest"
        )
    if agent is None:
        problems.append("no Agent class")
    elif not (isinstance(agent, type) and issubclass(agent, AgentBase)):
        problems.append("Agent is not a subclass of features.agent.AgentBase")
    else:
        for method in REQUIRED_METHODS:
            if getattr(agent, method) is getattr(AgentBase, method):
                problems.append(f"Agent does not define {method}()")
    if isinstance(manifest, Manifest):
        if not _SEMVER.match(manifest.version):
            problems.append(f"MANIFEST.version {manifest.version!r} is not semver (x.y.z)")
        if manifest.ttl_seconds <= 0 or manifest.freshness_sla_seconds <= 0:
            problems.append("MANIFEST.ttl_seconds and freshness_sla_seconds must be positive")
        if not manifest.cold_start:
            problems.append("MANIFEST.cold_start names no parameter")
        unknown = sorted(set(manifest.reads) - PAYLOAD_KINDS)
        if unknown:
            problems.append(f"MANIFEST.reads names unknown payload kinds {unknown}")
    return problems


def discover(package: ModuleType = features.agents) -> dict[str, type[AgentBase]]:
    """Every agent module of `package` by manifest id; raises `AgentModuleError` on a bad one."""
    found: dict[str, type[AgentBase]] = {}
    modules: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        name = f"{package.__name__}.{info.name}"
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise AgentModuleError(f"agent module {name}: import failed: {exc!r}") from exc
        manifest = getattr(module, "MANIFEST", None)
        agent = getattr(module, "Agent", None)
        problems = check_agent(name, manifest, agent)
        if problems:
            raise AgentModuleError(f"agent module {name}: " + "; ".join(problems))
        assert isinstance(manifest, Manifest) and isinstance(agent, type)
        assert issubclass(agent, AgentBase)
        if manifest.id in found:
            raise AgentModuleError(
                f"agent module {name}: id {manifest.id!r} is already used by {modules[manifest.id]}"
            )
        agent.MANIFEST = manifest
        found[manifest.id] = agent
        modules[manifest.id] = name
    return found


AGENT_PACKAGES_ENV = "OO_AGENT_PACKAGES"
"""Comma-separated importable packages whose modules are agents too (beside `features.agents`):
how a deployment or a test adds a shadow version without touching the engine."""


def build_registry(packages: list[ModuleType]) -> dict[str, type[AgentBase]]:
    """The agents of every package, ids unique across them, every `shadows` naming a live agent."""
    found: dict[str, type[AgentBase]] = {}
    for package in packages:
        for agent_id, agent in discover(package).items():
            if agent_id in found:
                raise AgentModuleError(
                    f"agent module {agent.__module__}: id {agent_id!r} is already used by "
                    f"{found[agent_id].__module__}"
                )
            found[agent_id] = agent
    for agent in found.values():
        target = agent.MANIFEST.shadows
        if target is None:
            continue
        if target not in found:
            raise AgentModuleError(
                f"agent module {agent.__module__}: MANIFEST.shadows names {target!r}, "
                f"which is not a registered agent (registered: {sorted(found)})"
            )
        if found[target].MANIFEST.shadows is not None:
            raise AgentModuleError(
                f"agent module {agent.__module__}: MANIFEST.shadows names {target!r}, "
                "itself a shadow; a shadow shadows a live agent"
            )
    return found


def _configured_packages() -> list[ModuleType]:
    packages = [features.agents]
    for name in os.environ.get(AGENT_PACKAGES_ENV, "").split(","):
        if name.strip():
            try:
                packages.append(importlib.import_module(name.strip()))
            except Exception as exc:
                raise AgentModuleError(
                    f"{AGENT_PACKAGES_ENV}: package {name.strip()!r} does not import: {exc!r}"
                ) from exc
    return packages


REGISTRY: Mapping[str, type[AgentBase]] = build_registry(_configured_packages())


def agent_ids(*, include_shadow: bool = True) -> tuple[str, ...]:
    """Every registered agent id, sorted (the order generators and benchmarks use)."""
    return tuple(
        a for a in sorted(REGISTRY) if include_shadow or REGISTRY[a].MANIFEST.shadows is None
    )


def manifests() -> list[Manifest]:
    """Every registered agent's manifest (shadows included: check `stage`), by id."""
    return [REGISTRY[agent_id].MANIFEST for agent_id in sorted(REGISTRY)]


def manifest(agent_id: str) -> Manifest:
    return REGISTRY[agent_id].MANIFEST
