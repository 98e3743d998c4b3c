"""The API's routers put together: probes and metrics at the root, resources under `/v1`."""

from __future__ import annotations

from fastapi import APIRouter

from serving.api.deps import AuthDep
from serving.api.models import ErrorOut
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
