"""Kafka topic names of the engine and which events go where: the one place that builds them."""

from __future__ import annotations

from proto import events_pb2 as pb

SIGNALS = "oo.signals.v1"
FEEDBACK = "oo.feedback.v1"
DEADLETTER = "oo.deadletter.v1"
TOMBSTONES = "oo.tombstones.v1"
"""Compacted: one record per deleted user, key = user_id (ADR 0008, `connectors.tombstones`)."""

FEEDBACK_PAYLOADS = frozenset({"tip_shown", "tip_reaction"})


def event_topics(prefix: str = "") -> list[str]:
    """The two event topics the flow reads, signals then feedback, with `prefix`.

    >>> event_topics("t-")
    ['t-oo.signals.v1', 't-oo.feedback.v1']
    """
    return [prefix + SIGNALS, prefix + FEEDBACK]


def engine_topics(prefix: str = "") -> list[str]:
    """Every topic the flow reads or writes: the event topics and the dead letters."""
    return [*event_topics(prefix), prefix + DEADLETTER]


def topic_for(event: pb.Event, *, prefix: str = "") -> str:
    """The topic an event is published to: feedback or signals (control events included)."""
    kind = event.WhichOneof("payload")
    return prefix + (FEEDBACK if kind in FEEDBACK_PAYLOADS else SIGNALS)
