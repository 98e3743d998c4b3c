"""The agent registry as the API sees it, an agent's inference on a given history, and the
online agreement of a shadow version."""

from __future__ import annotations

import json
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from pydantic import ValidationError

from connectors.records import Accepted, Rejected, decode_line
from connectors.store.base import FeatureStore
from features.agreement import DEFAULT_TOLERANCE, AgreementReport, inferred_values
from features.state import UserState
from flows.folding import Pending, whole_write
from serving.api.deps import ManifestsDep, StoreDep, StoreGuardDep
from serving.api.models import (
    MAX_INFER_BYTES,
    AgentsOut,
    AgreementOut,
    ErrorOut,
    InferIn,
    InferOut,
    InferredOut,
    ManifestOut,
    ParamOut,
)

router = APIRouter(prefix="/agents", tags=["agents"])

MAX_NAMED_ERRORS = 50

AGREEMENT_TIMEOUT_S = 120.0
"""A scan of the store is slow by nature; it gets its own bound, not the per-read one."""


@router.get("", response_model=AgentsOut, summary="Every registered agent's manifest and stage")
async def list_agents(manifests: ManifestsDep) -> AgentsOut:
    return AgentsOut(
        agents=[ManifestOut(**manifests[agent_id].as_dict()) for agent_id in sorted(manifests)]
    )


async def _bounded_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_INFER_BYTES:
        raise HTTPException(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            f"the body is {declared} bytes; at most {MAX_INFER_BYTES}",
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_INFER_BYTES:
            raise HTTPException(
                status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                f"the body is over {MAX_INFER_BYTES} bytes",
            )
    return bytes(body)


def _decode(events: list[dict[str, Any]]) -> tuple[list[Accepted], list[dict[str, Any]]]:
    """Every event through the engine's own decoding and validation (`decode_line`)."""
    accepted: list[Accepted] = []
    errors: list[dict[str, Any]] = []
    for index, raw in enumerate(events):
        line = json.dumps(raw, ensure_ascii=False, separators=(",", ":"))
        record = decode_line("events", index + 1, line, ingest_ms=0)
        if isinstance(record, Rejected) or record is None:
            reason = "empty event" if record is None else record.reason.split(": ", 1)[-1]
            errors.append({"index": index, "event_id": raw.get("eventId"), "reason": reason})
        else:
            accepted.append(record)
    users = sorted({a.event.user_id for a in accepted})
    if len(users) > 1:
        errors.append(
            {"index": None, "event_id": None, "reason": f"events of several users: {users[:5]}"}
        )
    return accepted, errors


def infer(agent_id: str, accepted: list[Accepted]) -> InferOut:
    """Fold the events as the flow does (`Pending.fold`) and take the agent's write."""
    if not accepted:
        return InferOut(agent_id=agent_id, user_id=None, events=0, features=None)
    user_id = accepted[0].event.user_id
    state = UserState(user_id)
    pending = Pending()
    pending.fold(state, accepted)
    failed = [r.raw.decode("utf-8", "replace")[:200] for r in pending.take_failed()]
    write = whole_write(state)
    agent = None if write is None else write.agents.get(agent_id)
    features = None
    if agent is not None:
        features = InferredOut(
            version=agent.version,
            params={name: ParamOut(**param) for name, param in agent.params.items()},
            extras=agent.extras,
            snippet=agent.snippet if agent.ttl_seconds > 0 else None,
        )
    return InferOut(
        agent_id=agent_id, user_id=user_id, events=len(accepted), failed=failed, features=features
    )


@router.post(
    "/{agent_id}/infer",
    response_model=InferOut,
    summary="The agent's parameters and snippet as the engine computes them from given events",
    responses={
        404: {"model": ErrorOut, "description": "Unknown agent."},
        413: {"model": ErrorOut, "description": "The body is over 8 MiB."},
        422: {"description": "Invalid body or events: each bad event named by index and reason."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": InferIn.model_json_schema()}},
        }
    },
)
async def infer_agent(agent_id: str, request: Request, manifests: ManifestsDep) -> InferOut:
    """Offline simulation: fold one user's events (canonical JSON, in the given order) exactly
    as the flow does and answer the agent's output. Nothing is stored or published."""
    if agent_id not in manifests:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent {agent_id!r}; see GET /v1/agents")
    raw = await _bounded_body(request)
    try:
        body = InferIn.model_validate_json(raw)
    except ValidationError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"loc": e["loc"], "msg": e["msg"]} for e in exc.errors()[:MAX_NAMED_ERRORS]],
        ) from None
    accepted, errors = await anyio.to_thread.run_sync(_decode, body.events)
    if errors:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            {"invalid_events": len(errors), "errors": errors[:MAX_NAMED_ERRORS]},
        )
    return await anyio.to_thread.run_sync(infer, agent_id, accepted)


def _online_agreement(
    store: FeatureStore, incumbent: str, shadow: str, tolerance: float, limit: int
) -> tuple[AgreementReport, int, bool]:
    report = AgreementReport(incumbent, shadow, tolerance=tolerance)
    user_ids = sorted(store.user_ids())
    for user_id in user_ids[:limit]:
        user = store.read_user(user_id)
        if user is None or incumbent not in user.agents or shadow not in user.agents:
            continue
        report.add(
            user_id,
            inferred_values(user.agents[incumbent].params),
            inferred_values(user.agents[shadow].params),
        )
    return report, min(limit, len(user_ids)), len(user_ids) > limit


@router.get(
    "/{agent_id}/agreement",
    response_model=AgreementOut,
    summary="How often a shadow agent agrees with the agent it shadows, over the stored users",
    responses={
        404: {"model": ErrorOut, "description": "No such agent."},
        409: {"model": ErrorOut, "description": "The agent is live, not a shadow."},
    },
)
async def agreement(
    agent_id: Annotated[str, Path(description="The shadow agent's id")],
    manifests: ManifestsDep,
    store: StoreDep,
    guard: StoreGuardDep,
    tolerance: Annotated[
        float, Query(ge=0, description="Numbers agree within this absolute difference")
    ] = DEFAULT_TOLERANCE,
    limit: Annotated[
        int, Query(ge=1, le=1_000_000, description="At most this many users (by id) are read")
    ] = 100_000,
) -> AgreementOut:
    manifest = manifests.get(agent_id)
    if manifest is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent {agent_id!r}")
    if manifest.shadows is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"agent {agent_id!r} is live; agreement needs a shadow"
        )
    report, scanned, truncated = await guard.call(
        _online_agreement,
        store,
        manifest.shadows,
        agent_id,
        tolerance,
        limit,
        timeout_s=AGREEMENT_TIMEOUT_S,
    )
    body: dict[str, Any] = report.as_dict()
    return AgreementOut(**body, users_scanned=scanned, truncated=truncated)
