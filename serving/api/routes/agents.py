"""The agent registry as the API sees it."""

from __future__ import annotations

from fastapi import APIRouter

from serving.api.deps import ManifestsDep
from serving.api.models import AgentsOut, ManifestOut

router = APIRouter(prefix="/agents", tags=["agents"])


@router.get("", response_model=AgentsOut, summary="Every registered agent's manifest and stage (live or shadow)")
async def list_agents(manifests: ManifestsDep) -> AgentsOut:
    return AgentsOut(
        agents=[ManifestOut(**manifests[agent_id].as_dict()) for agent_id in sorted(manifests)]
    )
