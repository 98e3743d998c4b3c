"""The API's routers put together: probes and metrics at the root, resources under `/v1`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from serving.api.deps import AuthDep
from serving.api.models import BATCH_BODY_BYTES, MAX_INFER_BYTES, ErrorOut
from serving.api.routes import (
    agents,
    dashboard,
    features,
    feedback,
    freshness,
    health,
    metrics,
    recommend,
    users,
)
from serving.limits import BodyLimit

V1_RESOURCES = (agents, users, features, recommend, feedback, freshness)
_V1_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing or invalid bearer token."}
}


def include_routes(app: FastAPI) -> None:
    """Every router straight into the app: probes, metrics and the dashboard at the root,
    the resources under `/v1` with the bearer check. One level of routers, not a tree:
    FastAPI matches an included router's routes by walking its includes on every request
    (about a tenth of a recommend's CPU for the three levels this had; ADR 0027)."""
    for root in (health, metrics, dashboard):
        app.include_router(root.router)
    for resource in V1_RESOURCES:
        app.include_router(
            resource.router, prefix="/v1", dependencies=[AuthDep], responses=_V1_RESPONSES
        )


# The routes whose valid bodies can be larger than `OO_MAX_BODY_BYTES` (serving/limits.py).
BODY_LIMITS = (
    BodyLimit("POST", r"/v1/features/batch", BATCH_BODY_BYTES),
    BodyLimit("POST", r"/v1/agents/[^/]+/infer", MAX_INFER_BYTES),
)
