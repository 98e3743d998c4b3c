"""The API's routers put together: probes and metrics at the root, resources under `/v1`."""

from __future__ import annotations

from fastapi import APIRouter

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

v1_router = APIRouter(
    prefix="/v1",
    dependencies=[AuthDep],
    responses={401: {"model": ErrorOut, "description": "Missing or invalid bearer token."}},
)
for resource in (agents, users, features, recommend, feedback, freshness):
    v1_router.include_router(resource.router)

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(metrics.router)
api_router.include_router(dashboard.router)
api_router.include_router(v1_router)

# The routes whose valid bodies can be larger than `OO_MAX_BODY_BYTES` (serving/limits.py).
BODY_LIMITS = (
    BodyLimit("POST", r"/v1/features/batch", BATCH_BODY_BYTES),
    BodyLimit("POST", r"/v1/agents/[^/]+/infer", MAX_INFER_BYTES),
)
