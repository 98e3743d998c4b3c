"""Every dependency of the routes, declared once as an `Annotated` alias.

Route signatures then read like sentences (`store: StoreDep`). The objects
themselves are built by `serving.app` (factory arguments or lifespan) and kept
on `app.state`; tests swap them by passing their own to `create_app`, or the
registry and clock through `app.dependency_overrides`.

Every dependency is `async def`: FastAPI runs a plain `def` dependency in the shared
thread pool, so a route that never touches the store would still queue behind store calls
when the store stalls. Store calls themselves go through `StoreGuardDep` (ADR 0010).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from connectors import clock
from connectors.codec import USER_ID_PATTERN
from connectors.sinks import EventSink
from connectors.store.base import FeatureStore
from features.model import Manifest
from serving.after import AfterResponse
from serving.freshness import FreshnessMonitor
from serving.metrics import Metrics
from serving.orchestrator import OrchestratorClient
from serving.settings import Settings
from serving.store_guard import StoreGuard


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> FeatureStore:
    return request.app.state.store


async def get_sink(request: Request) -> EventSink:
    return request.app.state.sink


async def get_orchestrator(request: Request) -> OrchestratorClient | None:
    """None when `OO_ORCHESTRATOR_URL` is unset: every tip is a fallback."""
    return request.app.state.orchestrator


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_freshness_monitor(request: Request) -> FreshnessMonitor:
    return request.app.state.freshness


async def get_store_guard(request: Request) -> StoreGuard:
    return request.app.state.store_guard


async def get_after(request: Request) -> AfterResponse:
    """The after-answer work (events, tip ledger); made by the lifespan."""
    return request.app.state.after


@lru_cache(maxsize=1)
def get_manifests() -> dict[str, Manifest]:
    """The registered agents by id (imported on first use: the registry imports every agent)."""
    from features import registry

    return {manifest.id: manifest for manifest in registry.manifests()}


async def registered_manifests() -> dict[str, Manifest]:
    """`get_manifests` as a dependency that runs on the event loop, not in a thread."""
    return get_manifests()


async def now_ms() -> int:
    """Wall-clock time, UTC epoch milliseconds (freshness of snippets, event times)."""
    return clock.now_ms()


@dataclass(frozen=True, slots=True)
class Serving:
    """What the busiest routes (`POST /v1/recommend`, `POST /v1/features/batch`) take from the
    app, as one dependency: FastAPI solves each declared dependency anew on every request
    (its cache key, its scopes, its call), about a tenth of a recommend's CPU for the eight
    that route had (ADR 0053). The objects are the ones the single aliases below hand out."""

    store: FeatureStore
    guard: StoreGuard
    manifests: dict[str, Manifest]
    orchestrator: OrchestratorClient | None
    after: AfterResponse
    metrics: Metrics
    now_ms: int
    """Wall-clock time of the request, UTC epoch milliseconds (as `NowMsDep`)."""


async def get_serving(request: Request) -> Serving:
    state = request.app.state
    return Serving(
        store=state.store,
        guard=state.store_guard,
        manifests=get_manifests(),
        orchestrator=state.orchestrator,
        after=state.after,
        metrics=state.metrics,
        now_ms=clock.now_ms(),
    )


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[FeatureStore, Depends(get_store)]
StoreGuardDep = Annotated[StoreGuard, Depends(get_store_guard)]
AfterDep = Annotated[AfterResponse, Depends(get_after)]
SinkDep = Annotated[EventSink, Depends(get_sink)]
OrchestratorDep = Annotated[OrchestratorClient | None, Depends(get_orchestrator)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
FreshnessDep = Annotated[FreshnessMonitor, Depends(get_freshness_monitor)]
ManifestsDep = Annotated[dict[str, Manifest], Depends(registered_manifests)]
NowMsDep = Annotated[int, Depends(now_ms)]
ServingDep = Annotated[Serving, Depends(get_serving)]

UserIdPath = Annotated[
    str,
    Path(
        pattern=USER_ID_PATTERN,
        description="The user's id: 1-128 characters of A-Z a-z 0-9 _ . : -",
        examples=["u-42"],
    ),
]

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <OO_API_TOKEN>`")


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless the request carries the configured bearer token.

    Without a configured token the server only ever binds loopback (see
    `serving.settings.check_bind`), and the check is off. `serving.limits.V1Gate` makes the
    same check first, before the body is read; this one declares the scheme in OpenAPI and
    guards a router mounted without the gate.
    """
    token = request.app.state.settings.api_token
    if token is None:
        return
    expected = token.get_secret_value().encode()
    given = credentials.credentials.encode() if credentials is not None else b""
    if credentials is None or not hmac.compare_digest(given, expected):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


AuthDep = Depends(require_token)
