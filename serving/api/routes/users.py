"""A user's features, and the user's deletion (right to be forgotten)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from starlette.concurrency import run_in_threadpool

from connectors.exceptions import ConnectorError
from connectors.store.base import StoredAgent, StoredUser
from features.model import Manifest
from serving import events
from serving.api.deps import (
    ManifestsDep,
    NowMsDep,
    SettingsDep,
    SinkDep,
    StoreDep,
    StoreGuardDep,
    UserIdPath,
)
from serving.api.models import (
    AgentFeaturesOut,
    DeletedOut,
    ErrorOut,
    FeaturesOut,
    ParamOut,
    SnippetOut,
    iso_ms,
)
from serving.features_json import forget_stored
from serving.tips import eligible_agents, is_fresh

log = logging.getLogger(__name__)

router = APIRouter(prefix="/users", tags=["users"])


def _agent_out(agent: StoredAgent, *, now_ms: int) -> AgentFeaturesOut:
    snippet = None
    if is_fresh(agent, now_ms=now_ms) and agent.snippet_expires_at_ms is not None:
        snippet = SnippetOut(
            text=agent.snippet or "",
            expires_at=iso_ms(agent.snippet_expires_at_ms),
            expires_at_ms=agent.snippet_expires_at_ms,
        )
    return AgentFeaturesOut(
        version=agent.version,
        event_time=iso_ms(agent.event_time_ms),
        event_time_ms=agent.event_time_ms,
        ingest_time=iso_ms(agent.ingest_time_ms),
        ingest_time_ms=agent.ingest_time_ms,
        computed_at=iso_ms(agent.computed_at_ms),
        computed_at_ms=agent.computed_at_ms,
        params={name: ParamOut(**param) for name, param in agent.params.items()},
        extras=agent.extras,
        snippet=snippet,
    )


@router.get(
    "/{user_id}/features",
    response_model=FeaturesOut,
    summary="The user's freshest parameters and unexpired snippets, per eligible agent",
    responses={404: {"model": ErrorOut, "description": "Unknown or deleted user."}},
)
async def read_features(
    user_id: UserIdPath,
    store: StoreDep,
    guard: StoreGuardDep,
    manifests: ManifestsDep,
    now_ms: NowMsDep,
    include_shadow: Annotated[
        bool, Query(description="Also return shadow versions (`stage: shadow` agents).")
    ] = False,
) -> FeaturesOut:
    user = await guard.call(store.read_user, user_id, now_ms=now_ms)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no features for user {user_id!r}")
    return features_out(user, manifests, now_ms=now_ms, include_shadow=include_shadow)


def features_out(
    user: StoredUser,
    manifests: Mapping[str, Manifest],
    *,
    now_ms: int,
    include_shadow: bool = False,
) -> FeaturesOut:
    """The answer of `GET /v1/users/{id}/features` for a stored user (also used by the batch);
    shadow versions only when asked for."""
    eligible = eligible_agents(user, manifests, include_shadow=include_shadow)
    return FeaturesOut(
        user_id=user.user_id,
        agents={a.agent_id: _agent_out(a, now_ms=now_ms) for a in eligible},
        feedback=user.feedback,
    )


@router.delete(
    "/{user_id}",
    response_model=DeletedOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Delete every stored trace of the user now and tell the flow to drop its state",
    responses={
        503: {
            "model": ErrorOut,
            "description": "Stored data deleted, but `UserDeleted` was not confirmed: retry.",
        }
    },
)
async def delete_user(
    user_id: UserIdPath,
    store: StoreDep,
    guard: StoreGuardDep,
    sink: SinkDep,
    settings: SettingsDep,
    now_ms: NowMsDep,
    request: Request,
) -> DeletedOut:
    tombstones = request.app.state.tombstones
    # The store goes first so reads answer 404 at once; the durable tombstone (ADR 0008)
    # then keeps the user deleted through any refill or replay; the event makes the flow
    # drop its state (and every event up to now_ms, also on replay). Neither must be lost,
    # so both are confirmed; a retry of the whole call is harmless.
    try:
        await guard.call(store.delete_user, user_id, deleted_at_ms=now_ms)
    finally:
        # The batch writer's cross-call tables hold snippet texts and times without user ids:
        # emptied whole, after the store's delete (a batch read made before it fills tables
        # of its own, dropped with it). Even when the delete failed: it may have applied.
        forget_stored()
    event = events.user_deleted(user_id, now_ms)
    try:
        if tombstones is not None:
            await run_in_threadpool(
                lambda: tombstones.publish(user_id, now_ms, timeout_s=settings.kafka_timeout_s)
            )
        await run_in_threadpool(
            lambda: sink.emit_confirmed(event, timeout_s=settings.kafka_timeout_s)
        )
    except ConnectorError as exc:  # EventSinkError included
        log.error("user %s deleted from the store; deletion not confirmed: %s", user_id, exc)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "stored data deleted, but the deletion event was not confirmed; retry the request",
        ) from exc
    log.info("user %s deleted (event %s)", user_id, event.event_id)
    return DeletedOut(
        user_id=user_id,
        deleted_at=iso_ms(now_ms),
        deleted_at_ms=now_ms,
        event_id=event.event_id,
    )
