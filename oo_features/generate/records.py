"""What a generated event is before it becomes JSON or protobuf (`Record`), and the
generator's shared constants (agent ids, start date, day length, reactions)."""

from __future__ import annotations

import datetime as dt

from features.registry import agent_ids

AGENT_IDS = agent_ids(include_shadow=False)
"""The registered agents (tips name them in `TipShown`)."""
DEFAULT_START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
_MAX_DEFAULT_DAYS = 300
_DAY = 86_400
_HOUR = 3_600
_EPOCH = dt.date(1970, 1, 1)

Record = tuple
"""A generated event before it becomes protobuf or JSON:
``(occurred_at_s, event_id, user_id, utc_offset_minutes | None, source, payload_kind, data)``
where `payload_kind` is the `Event.payload` oneof name and `data` a tuple of the
payload's fields in field-number order (timestamps as epoch seconds, `None` when unset)."""

_SIGNAL_EXCLUDED = frozenset({"tip_shown", "tip_reaction"})
_NEVER_DELAYED = frozenset({"profile_updated", "consent_changed", "user_deleted"})
_REACTIONS = (1, 2, 3, 4)  # DONE, LIKE, DISMISS, SNOOZE
_REACTION_NAMES = {
    0: "REACTION_UNSPECIFIED",
    1: "REACTION_DONE",
    2: "REACTION_LIKE",
    3: "REACTION_DISMISS",
    4: "REACTION_SNOOZE",
}


def default_start(days: int) -> dt.datetime:
    """2026-01-01, moved earlier when `days` > 300 so the data ends before 2026-10-29."""
    return DEFAULT_START - dt.timedelta(days=max(0, days - _MAX_DEFAULT_DAYS))
