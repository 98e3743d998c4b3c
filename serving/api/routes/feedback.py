"""The user's reaction to a tip, published as `TipReaction` and joined to the tip ledger."""

from __future__ import annotations

import logging

from fastapi import APIRouter, BackgroundTasks, status

from serving import events, ledger
from serving.api.deps import (
    MetricsDep,
    NowMsDep,
    SettingsDep,
    SinkDep,
    StoreDep,
    StoreGuardDep,
)
from serving.api.models import AcceptedOut, FeedbackIn

log = logging.getLogger(__name__)

router = APIRouter(prefix="/feedback", tags=["feedback"])


@router.post(
    "",
    response_model=AcceptedOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Record the user's reaction to a shown tip",
)
async def post_feedback(
    body: FeedbackIn,
    background: BackgroundTasks,
    sink: SinkDep,
    store: StoreDep,
    guard: StoreGuardDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    now_ms: NowMsDep,
) -> AcceptedOut:
    event = events.tip_reaction(body.user_id, body.tip_id, body.reaction)
    background.add_task(sink.emit, event)
    if settings.ledger_retention_ms > 0:
        # Joined to the tip in the ledger by tip id (a tip the ledger lacks: nothing joined).
        background.add_task(
            ledger.record_reaction,
            guard,
            store,
            user_id=body.user_id,
            tip_id=body.tip_id,
            reaction=body.reaction,
            reaction_id=event.event_id,
            at_ms=now_ms,
            metrics=metrics,
        )
    log.info("reaction from user %s to tip %s queued", body.user_id, body.tip_id)
    return AcceptedOut(event_id=event.event_id)
