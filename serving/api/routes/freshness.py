"""Freshness SLA reporting: every agent's lag and compliance, and one user's freshness.

Definitions in `serving/README.md` ("Freshness"). `breaching` is the background check's
verdict (`serving.freshness.FreshnessMonitor`); the numbers are computed on each request.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from connectors.codec import USER_ID_PATTERN
from connectors.store.base import FreshnessSummary, StoredUser, UserFreshness
from serving.api.deps import (
    FreshnessDep,
    ManifestsDep,
    NowMsDep,
    StoreDep,
    StoreGuardDep,
    UserIdPath,
)
from serving.api.models import (
    AgentFreshnessOut,
    ErrorOut,
    FreshnessOut,
    HistoryAgentOut,
    HistoryPointOut,
    LagOut,
    StaleUserOut,
    UserAgentFreshnessOut,
    UserFreshnessOut,
    iso_ms,
)
from serving.freshness import WORST_DEFAULT, compliance
from serving.tips import consent_granted

router = APIRouter(tags=["freshness"])

_USER_ID_RE = re.compile(USER_ID_PATTERN)


@router.get(
    "/freshness",
    response_model=FreshnessOut,
    summary="Per agent: lag percentiles, users within SLA, worst offenders, and the history",
)
async def freshness(
    store: StoreDep,
    guard: StoreGuardDep,
    manifests: ManifestsDep,
    monitor: FreshnessDep,
    now_ms: NowMsDep,
    worst: Annotated[int, Query(ge=0, le=100, description="Worst offenders listed.")] = (
        WORST_DEFAULT
    ),
) -> FreshnessOut:
    summary: FreshnessSummary = await guard.call(
        lambda: monitor.summarize(store, manifests, at_ms=now_ms, worst_n=worst)
    )
    active = summary.active_users
    agents: dict[str, AgentFreshnessOut] = {}
    for agent_id in sorted(manifests):
        sla_ms = manifests[agent_id].freshness_sla_seconds * 1000
        lag = summary.lag.get(agent_id)
        agents[agent_id] = AgentFreshnessOut(
            sla_seconds=manifests[agent_id].freshness_sla_seconds,
            lag_ms=LagOut(
                p50=lag.p50_ms if lag else None,
                p99=lag.p99_ms if lag else None,
                samples=lag.samples if lag else 0,
            ),
            users_within_sla=active - min(summary.stale_users.get(agent_id, 0), active),
            active_users=active,
            compliance=compliance(summary, agent_id),
            breaching=agent_id in monitor.breaching,
            worst=[
                StaleUserOut(user_id=u, staleness_ms=ms, within_sla=ms < sla_ms)
                for u, ms in summary.worst
                # Only valid user ids are ever named (a store stamped before the stamper
                # checked keys may still hold junk ones).
                if _USER_ID_RE.fullmatch(u)
            ],
        )
    history = [
        HistoryPointOut(
            t=point.t_ms,
            agents={
                a: HistoryAgentOut(
                    lag_p50_ms=p.lag_p50_ms,
                    lag_p99_ms=p.lag_p99_ms,
                    compliance=p.compliance,
                    breaching=p.breaching,
                )
                for a, p in point.agents.items()
            },
        )
        for point in list(monitor.history)
    ]
    return FreshnessOut(
        generated_at=iso_ms(now_ms),
        generated_at_ms=now_ms,
        window_s=monitor.window_s,
        objective=monitor.objective,
        check_interval_s=monitor.check_interval_s,
        checked_at_ms=monitor.checked_at_ms,
        pending_users=summary.pending_users,
        agents=agents,
        history=history,
    )


@router.get(
    "/users/{user_id}/freshness",
    response_model=UserFreshnessOut,
    summary="Per eligible agent: the user's lag, age, staleness and whether it is within SLA",
    responses={404: {"model": ErrorOut, "description": "No event and no features of the user."}},
)
async def user_freshness(
    user_id: UserIdPath,
    store: StoreDep,
    guard: StoreGuardDep,
    manifests: ManifestsDep,
    now_ms: NowMsDep,
) -> UserFreshnessOut:
    def read() -> tuple[UserFreshness | None, StoredUser | None]:
        return store.user_freshness(user_id), store.read_user(user_id, now_ms=now_ms)

    stamps, user = await guard.call(read)
    if stamps is None and user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no freshness for user {user_id!r}")
    staleness = stamps.staleness_ms(now_ms) if stamps is not None else 0
    consents = user.consents if user is not None else {}
    stored = user.agents if user is not None else {}
    agents: dict[str, UserAgentFreshnessOut] = {}
    # Every eligible agent, also those the flow has not written yet: reflection is per user
    # (the flow writes all of a user's changed agents at once), so staleness is the user's.
    for agent_id in sorted(manifests):
        manifest = manifests[agent_id]
        if not consent_granted(manifest, consents):
            continue
        agent = stored.get(agent_id)
        agents[agent_id] = UserAgentFreshnessOut(
            lag_ms=None if agent is None else max(agent.computed_at_ms - agent.ingest_time_ms, 0),
            age_ms=None if agent is None else max(now_ms - agent.computed_at_ms, 0),
            staleness_ms=staleness,
            within_sla=staleness < manifest.freshness_sla_seconds * 1000,
        )
    return UserFreshnessOut(
        user_id=user_id,
        newest_event_ingest_ms=(
            stamps.newest_ingest_ms if stamps else (user.newest_ingest_ms if user else None)
        ),
        reflected_ingest_ms=(
            stamps.reflected_ingest_ms if stamps else (user.newest_ingest_ms if user else None)
        ),
        pending_since_ms=stamps.pending_since_ms if stamps else None,
        agents=agents,
    )
