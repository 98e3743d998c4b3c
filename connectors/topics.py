"""Kafka topic names of the engine and which events go where."""

from __future__ import annotations

from proto import events_pb2 as pb

SIGNALS = "oo.signals.v1"
FEEDBACK = "oo.feedback.v1"
DEADLETTER = "oo.deadletter.v1"
TOMBSTONES = "oo.tombstones.v1"
"""Compacted: one record per deleted user, key = user_id (ADR 0008, `connectors.tombstones`)."""

FEEDBACK_PAYLOADS = frozenset({"tip_shown", "tip_reaction"})


def topic_for(event: pb.Event, *, prefix: str = "") -> str:
    """The topic an event is published to: feedback or signals (control events included)."""
    kind = event.WhichOneof("payload")
    return prefix + (FEEDBACK if kind in FEEDBACK_PAYLOADS else SIGNALS)
