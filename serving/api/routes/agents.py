"""The agent registry as the API sees it, and the online agreement of a shadow version."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status

from connectors.store.base import FeatureStore
from features.agreement import DEFAULT_TOLERANCE, AgreementReport, inferred_values
from serving.api.deps import ManifestsDep, StoreDep, StoreGuardDep
from serving.api.models import AgentsOut, AgreementOut, ErrorOut, ManifestOut

router = APIRouter(prefix="/agents", tags=["agents"])

AGREEMENT_TIMEOUT_S = 120.0
"""A scan of the store is slow by nature; it gets its own bound, not the per-read one."""


@router.get("", response_model=AgentsOut, summary="Every registered agent's manifest and stage")
async def list_agents(manifests: ManifestsDep) -> AgentsOut:
    return AgentsOut(
        agents=[ManifestOut(**manifests[agent_id].as_dict()) for agent_id in sorted(manifests)]
    )


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
