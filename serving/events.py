"""The API's own events: `TipShown`, `TipReaction`, `UserDeleted`, built for the event log.

Each builder returns a new `oo.events.v1.Event` with a fresh `event_id`, the user id, source
`tip-api` and its payload; where they go (Kafka or the file log) is `connectors.sinks`.
Builders never raise for a valid input; an unknown reaction is a `KeyError` (the routes
validate it first).

>>> event = tip_reaction("u-1", "tip-9", "like")
>>> (event.user_id, event.source, event.WhichOneof("payload"), event.tip_reaction.tip_id)
('u-1', 'tip-api', 'tip_reaction', 'tip-9')
>>> user_deleted("u-1", 1_700_000_000_000).occurred_at.ToMilliseconds()
1700000000000
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from proto import events_pb2 as pb

__all__ = ["EVENT_SOURCE", "REACTIONS", "tip_reaction", "tip_shown", "user_deleted"]

EVENT_SOURCE = "tip-api"

REACTIONS: dict[str, int] = {
    "done": pb.REACTION_DONE,
    "like": pb.REACTION_LIKE,
    "dismiss": pb.REACTION_DISMISS,
    "snooze": pb.REACTION_SNOOZE,
}


def _envelope(user_id: str, occurred_at_ms: int | None) -> pb.Event:
    event = pb.Event(event_id=str(uuid.uuid4()), user_id=user_id, source=EVENT_SOURCE)
    if occurred_at_ms is None:
        event.occurred_at.GetCurrentTime()
    else:
        event.occurred_at.FromMilliseconds(occurred_at_ms)
    return event


def tip_shown(
    user_id: str, tip_id: str, agent_ids: Iterable[str], *, shown_at_ms: int | None = None
) -> pb.Event:
    """Occurred at `shown_at_ms` (the answer's time, which the ledger also records), else now."""
    event = _envelope(user_id, shown_at_ms)
    event.tip_shown.tip_id = tip_id
    event.tip_shown.agent_ids.extend(agent_ids)
    return event


def tip_reaction(user_id: str, tip_id: str, reaction: str) -> pb.Event:
    event = _envelope(user_id, None)
    event.tip_reaction.tip_id = tip_id
    event.tip_reaction.reaction = REACTIONS[reaction]  # type: ignore[assignment]
    return event


def user_deleted(user_id: str, deleted_at_ms: int) -> pb.Event:
    """Occurred at the deletion time the store's tombstone carries, so both agree."""
    event = _envelope(user_id, deleted_at_ms)
    event.user_deleted.SetInParent()
    return event
