"""The user's reaction to a tip, published as `TipReaction` and joined to the tip ledger."""

from __future__ import annotations

import logging

from fastapi import APIRouter, status

from serving import events
from serving.api.deps import AfterDep, NowMsDep
from serving.api.models import AcceptedOut, FeedbackIn

log = logging.getLogger(__name__)

router = APIRouter(prefix="/feedback", tags=["feedback"])


@router.post(
    "",
    response_model=AcceptedOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Record the user's reaction to a shown tip",
)
async def post_feedback(body: FeedbackIn, after: AfterDep, now_ms: NowMsDep) -> AcceptedOut:
    event = events.tip_reaction(body.user_id, body.tip_id, body.reaction)
    # Published and joined to the tip in the ledger after the answer (serving.after), in order
    # behind the tip's own record (a tip the ledger lacks: nothing joined).
    after.emit_event(event)
    after.record_reaction(
        user_id=body.user_id,
        tip_id=body.tip_id,
        reaction=body.reaction,
        reaction_id=event.event_id,
        at_ms=now_ms,
    )
    log.info("reaction from user %s to tip %s queued", body.user_id, body.tip_id)
    return AcceptedOut(event_id=event.event_id)
