"""The user's reaction to a tip, published as `TipReaction`."""

from __future__ import annotations

import logging

from fastapi import APIRouter, BackgroundTasks, status

from serving import sinks
from serving.api.deps import ProducerDep
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
    body: FeedbackIn, background: BackgroundTasks, sink: ProducerDep
) -> AcceptedOut:
    event = sinks.tip_reaction(body.user_id, body.tip_id, body.reaction)
    background.add_task(sink.emit, event)
    log.info("reaction from user %s to tip %s queued", body.user_id, body.tip_id)
    return AcceptedOut(event_id=event.event_id)
