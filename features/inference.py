"""The inference rules shared by all agents (docs/features.md, "How every agent infers").

1. below `min_history` feedback events, or when the agent's own data guard
   fails, every parameter is its cold-start default (`source = cold_start`);
2. an exception inside an agent's inference gives its cold-start defaults and
   is counted in `INFERENCE_ERRORS[agent_id]`, never raised;
3. a parameter the user set is never overwritten: `source = user`, with the
   still-computed value beside it as `inferred_value`.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from features.agent import AgentBase, AsOf, Inference
from features.model import AgentOutput, Manifest, Param

log = logging.getLogger(__name__)

INFERENCE_ERRORS: Counter[str] = Counter()
"""Per agent id: inferences that raised (exported as `inference_errors{agent}` by the flow)."""


_CONTAINERS = (list, dict, set)
_SCALARS = (bool, int, float, str, type(None))


def _fresh(default: Any) -> Any:
    """A copy of a cold-start default that no caller can share with the manifest."""
    if isinstance(default, _CONTAINERS):
        return copy.deepcopy(default) if default else type(default)()
    return default


def _copier(default: Any) -> Callable[[Any], Any] | None:
    """What `_fresh` does to `default`, chosen once per manifest: None (a scalar, shared), the
    container's own type (empty, or a flat list of scalars: a shallow copy is the deep copy),
    else `_fresh`."""
    if not isinstance(default, _CONTAINERS):
        return None
    kind = type(default)
    if kind in _CONTAINERS and (
        not default or (kind is list and all(type(v) in _SCALARS for v in default))
    ):
        return kind
    return _fresh


_Field = tuple[str, Any, "Callable[[Any], Any] | None"]


class _Plan:
    """A manifest's parameters as `evaluate` walks them: (name, default, copier), made once.
    Hashed by identity: a cold key (`evaluate_plain`) names the manifest through it."""

    __slots__ = ("fields", "manifest")

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.fields: tuple[_Field, ...] = tuple(
            (name, default, _copier(default)) for name, default in manifest.cold_start.items()
        )


_PLANS: dict[str, _Plan] = {}


def _plan(manifest: Manifest) -> _Plan:
    plan = _PLANS.get(manifest.id)
    if plan is None or plan.manifest is not manifest:
        plan = _PLANS[manifest.id] = _Plan(manifest)
    return plan


def _infer(
    agent: AgentBase, manifest: Manifest, asof: AsOf, preferences: dict[str, Any], events: int
) -> Inference:
    """Rules 1 and 2: the agent's inference, or its cold start (no values)."""
    if events < manifest.min_history:
        return Inference(values=None, extras={})
    try:
        return agent.infer(asof, preferences)
    except Exception:
        INFERENCE_ERRORS[manifest.id] += 1
        log.exception("inference failed in agent %s; serving its cold-start values", manifest.id)
        return Inference(values=None, extras={})


def _params(plan: _Plan, inference: Inference, preferences: dict[str, Any]) -> dict[str, Param]:
    """Rule 3 and the cold-start defaults: every parameter of the manifest, in its order."""
    values = inference.values or {}
    context = inference.context
    params: dict[str, Param] = {}
    for name, default, copier in plan.fields:
        if name in context:
            inferred, source = context[name], "cold_start"
        else:
            inferred = values.get(name)
            source = "inferred"
            if inferred is None:
                inferred, source = (default if copier is None else copier(default)), "cold_start"
        if name in preferences:
            params[name] = Param(preferences[name], "user", inferred)
        else:
            params[name] = Param(inferred, source)  # type: ignore[arg-type]
    return params


def _snippet(agent: AgentBase, params: dict[str, Param], extras: dict[str, Any]) -> str | None:
    try:
        return agent.snippet(params, extras)
    except Exception:
        INFERENCE_ERRORS[agent.MANIFEST.id] += 1
        log.exception("snippet failed in agent %s", agent.MANIFEST.id)
        return None


def evaluate(
    agent: AgentBase,
    asof: AsOf,
    *,
    preferences: dict[str, Any],
    feedback_events: int,
    event_time_ms: int,
) -> AgentOutput:
    manifest = agent.MANIFEST
    inference = _infer(agent, manifest, asof, preferences, feedback_events)
    cold = inference.values is None
    params = _params(_plan(manifest), inference, preferences)
    return AgentOutput(
        agent_id=manifest.id,
        version=manifest.version,
        params=params,
        extras=inference.extras,
        snippet=None if cold else _snippet(agent, params, inference.extras),
        ttl_seconds=manifest.ttl_seconds,
        event_time_ms=event_time_ms,
        cold_start=cold,
    )


ColdKey = tuple[_Plan, tuple[tuple[str, str], ...]]
"""A cold start's parameters, named: the agent's plan and the context values (strings)."""

PlainOutput = tuple[
    "dict[str, dict[str, Any]] | None", dict[str, Any], "str | None", "ColdKey | None"
]
"""An `AgentOutput` as a store write takes it: (`{name: Param.as_dict()}`, extras, snippet,
cold key). When every parameter is its cold-start default or a context value (source
`cold_start`, nothing pinned, no snippet) the parameters are None and the cold key names them
(`cold_params(key)` builds them): outputs with equal cold keys have equal parameters, so a
writer can encode them once and build them only when it writes them (`flows.folding`)."""


def cold_params(key: ColdKey) -> dict[str, dict[str, Any]]:
    """The parameters (as `Param.as_dict()`) a cold key names, fresh copies of the defaults."""
    plan, context_items = key
    context = dict(context_items)
    as_dicts: dict[str, dict[str, Any]] = {}
    for name, default, copier in plan.fields:
        if name in context:
            as_dicts[name] = {"value": context[name], "source": "cold_start"}
        else:
            value = default if copier is None else copier(default)
            as_dicts[name] = {"value": value, "source": "cold_start"}
    return as_dicts


def evaluate_plain(
    agent: AgentBase,
    asof: AsOf,
    *,
    preferences: dict[str, Any],
    feedback_events: int,
) -> PlainOutput:
    """`evaluate` as the write path takes it (`flows.folding.build_write`): the same parameters
    (as `Param.as_dict()`), extras and snippet, without the `Param` and `AgentOutput` objects
    a write throws away."""
    manifest = agent.MANIFEST
    plan = _plan(manifest)
    inference = _infer(agent, manifest, asof, preferences, feedback_events)
    extras = inference.extras
    if inference.values is None and not preferences:
        # Cold start, nothing pinned: each parameter is its default or a context value, source
        # `cold_start`, and there is no snippet.
        context = inference.context
        if not context:
            return None, extras, None, (plan, ())
        items = tuple(context.items())
        if all(type(v) is str for _, v in items):
            return None, extras, None, (plan, items)
    params = _params(plan, inference, preferences)
    as_dicts: dict[str, dict[str, Any]] = {}
    for name, param in params.items():
        if param.source == "user":
            as_dicts[name] = param.as_dict()
        else:
            as_dicts[name] = {"value": param.value, "source": param.source}
    snippet = None if inference.values is None else _snippet(agent, params, extras)
    return as_dicts, extras, snippet, None
