"""One tip for a user: the orchestrator's when it answers well and in time, else the fallback's."""

from __future__ import annotations

import functools
import logging
import time
import uuid

import orjson
from fastapi import APIRouter, HTTPException, Response, status

from serving import events
from serving.api.deps import ServingDep
from serving.api.models import ErrorOut, RecommendIn, RecommendOut
from serving.exceptions import OrchestratorError
from serving.orchestrator import Answer
from serving.prompt import PROMPT_VERSION, assemble_prompt
from serving.tips import eligible_agents, fallback_tip, fresh_snippets

log = logging.getLogger(__name__)

router = APIRouter(prefix="/recommend", tags=["recommend"])

NOT_CONFIGURED = "orchestrator_not_configured"
NO_FRESH_SNIPPETS = "no_fresh_snippets"


def answer_json(
    tip: Answer | None,
    tip_id: str | None,
    agents: list[str],
    *,
    fallback_reason: str | None = None,
    reason: str | None = None,
) -> Response:
    """`RecommendOut` as its model serialises it, written straight to JSON (no validation of
    what this route built itself; `tests/unit/test_serving_app.py` checks the equality)."""
    body = {
        "tip": None if tip is None else {"tip_id": tip_id, "text": tip.text, "kind": tip.kind},
        "agents": agents,
        "fallback": fallback_reason is not None,
        "fallback_reason": fallback_reason,
        "reason": reason,
    }
    return Response(orjson.dumps(body), media_type="application/json")


@router.post(
    "",
    response_model=RecommendOut,
    summary="A tip built from the user's fresh snippets",
    responses={404: {"model": ErrorOut, "description": "Unknown or deleted user."}},
)
async def recommend(body: RecommendIn, serving: ServingDep) -> Response:
    store, manifests, orchestrator = serving.store, serving.manifests, serving.orchestrator
    after, metrics, now_ms = serving.after, serving.metrics, serving.now_ms
    user = await serving.guard.call(store.read_user, body.user_id, now_ms=now_ms)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no features for user {body.user_id!r}")
    snippets = fresh_snippets(eligible_agents(user, manifests), manifests, now_ms=now_ms)
    if not snippets:
        metrics.tips.labels("none").inc()
        log.info("no tip for user %s: no fresh snippet", body.user_id)
        return answer_json(None, None, [], reason=NO_FRESH_SNIPPETS)

    answer: Answer | None = None
    fallback_reason: str | None = NOT_CONFIGURED
    agent_ids = [s.agent_id for s in snippets]
    latency_ms: float | None = None
    if orchestrator is not None:
        started = time.perf_counter()
        try:
            answer = await orchestrator.complete(assemble_prompt(snippets, body.context))
            fallback_reason = None
        except OrchestratorError as exc:
            fallback_reason = exc.reason
            log.warning("orchestrator failed for user %s: %s", body.user_id, exc)
        latency_ms = (time.perf_counter() - started) * 1000
    if answer is None:
        chosen = fallback_tip(snippets)
        assert chosen is not None  # snippets is not empty
        answer, agent_ids = chosen
        metrics.fallbacks.labels(fallback_reason or "error").inc()

    tip_id = uuid.uuid4().hex
    # Published and recorded after the answer, by serving.after's workers: the event log and
    # the ledger never slow a tip down, and the request pays only for queueing them (the
    # ledger's tip pickled first for its process, a few microseconds: ADR 0058).
    after.emit(
        "tip_shown",
        functools.partial(events.tip_shown, body.user_id, tip_id, agent_ids, shown_at_ms=now_ms),
    )
    after.record_served_tip(
        tip_id=tip_id,
        user=user,
        shown_at_ms=now_ms,
        answer=answer,
        agent_ids=agent_ids,
        snippets=snippets,
        fallback_reason=fallback_reason,
        prompt_version=PROMPT_VERSION if orchestrator is not None else None,
        model=orchestrator.model if orchestrator is not None else None,
        orchestrator_latency_ms=latency_ms,
        now_ms=now_ms,
    )
    metrics.tips.labels("fallback" if fallback_reason else "orchestrator").inc()
    log.info(
        "tip %s for user %s from agents %s (fallback: %s)",
        tip_id,
        body.user_id,
        ",".join(agent_ids),
        fallback_reason or "no",
    )
    return answer_json(answer, tip_id, agent_ids, fallback_reason=fallback_reason)
