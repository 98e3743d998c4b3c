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
from typing import Any

from features.agent import AgentBase, AsOf, Inference
from features.model import AgentOutput, Param

log = logging.getLogger(__name__)

INFERENCE_ERRORS: Counter[str] = Counter()
"""Per agent id: inferences that raised (exported as `inference_errors{agent}` by the flow)."""


_CONTAINERS = (list, dict, set)


def _fresh(default: Any) -> Any:
    """A copy of a cold-start default that no caller can share with the manifest."""
    if isinstance(default, _CONTAINERS):
        return copy.deepcopy(default) if default else type(default)()
    return default


def evaluate(
    agent: AgentBase,
    asof: AsOf,
    *,
    preferences: dict[str, Any],
    feedback_events: int,
    event_time_ms: int,
) -> AgentOutput:
    manifest = agent.MANIFEST
    inference: Inference
    if feedback_events < manifest.min_history:
        inference = Inference(values=None, extras={})
    else:
        try:
            inference = agent.infer(asof, preferences)
        except Exception:
            INFERENCE_ERRORS[manifest.id] += 1
            log.exception(
                "inference failed in agent %s; serving its cold-start values", manifest.id
            )
            inference = Inference(values=None, extras={})
    cold = inference.values is None
    values = inference.values or {}
    context = inference.context
    params: dict[str, Param] = {}
    for name, default in manifest.cold_start.items():
        if name in context:
            inferred, source = context[name], "cold_start"
        else:
            inferred = values.get(name)
            source = "inferred"
            if inferred is None:
                inferred, source = _fresh(default), "cold_start"
        if name in preferences:
            params[name] = Param(preferences[name], "user", inferred)
        else:
            params[name] = Param(inferred, source)  # type: ignore[arg-type]
    snippet = None
    if not cold:
        try:
            snippet = agent.snippet(params, inference.extras)
        except Exception:
            INFERENCE_ERRORS[manifest.id] += 1
            log.exception("snippet failed in agent %s", manifest.id)
    return AgentOutput(
        agent_id=manifest.id,
        version=manifest.version,
        params=params,
        extras=inference.extras,
        snippet=snippet,
        ttl_seconds=manifest.ttl_seconds,
        event_time_ms=event_time_ms,
        cold_start=cold,
    )
