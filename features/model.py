"""The vocabulary every agent and every consumer of features shares.

A `Manifest` describes an agent; a `Param` is one inferred parameter with its
provenance; an `AgentOutput` is what an agent hands to the store after an
event changed it; an `Incoming` is one validated event as `UserState.apply` folds it.
Plain data, picklable, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Self

from proto import events_pb2 as pb

Source = Literal["inferred", "cold_start", "user"]

ALLOWED_LATENESS_MS = 7 * 86_400_000


@dataclass(frozen=True, slots=True)
class Manifest:
    """What the registry, the flow, the store and the API know about an agent."""

    id: str
    version: str
    ttl_seconds: int
    freshness_sla_seconds: int
    min_history: int
    required_consents: tuple[str, ...]
    reads: tuple[str, ...]
    """Payload kinds (the `Event.payload` oneof names) whose events the agent folds in."""
    cold_start: dict[str, Any]
    """Each parameter's cold-start default; the keys are the agent's parameters."""
    description: str = ""
    shadows: str | None = None
    """The id of the live agent this one is a candidate to replace (a *shadow*): folded,
    computed and stored like any agent, but never in a prompt or a tip, and read only on
    request. Promotion is a manifest change (docs/adr/0016-shadow-versions-and-promotion.md)."""

    @property
    def stage(self) -> Literal["live", "shadow"]:
        return "shadow" if self.shadows else "live"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "ttl_seconds": self.ttl_seconds,
            "freshness_sla_seconds": self.freshness_sla_seconds,
            "min_history": self.min_history,
            "required_consents": list(self.required_consents),
            "reads": list(self.reads),
            "cold_start": dict(self.cold_start),
            "description": self.description,
            "shadows": self.shadows,
            "stage": self.stage,
        }


@dataclass(slots=True)
class Incoming:
    """One validated event as the fold takes it (`UserState.apply`): the event, when it reached
    the engine, and two values that are the event's own, read once.

    `kind` (the payload oneof name) and `occurred_ms` (`occurred_at` in ms) are what the event
    says: build one with `Incoming.of(event, ingest_ms)`, or from a decoder that read them
    while validating (`connectors.records.Accepted`, a subclass). Read-only by convention (not
    frozen: one is built per event, and a frozen dataclass costs 2.5 times as much to build).
    """

    event: pb.Event
    ingest_ms: int | None
    """When the event reached the engine (Kafka timestamp, or read time for files); None when
    nothing says (then the state's ingest time does not move)."""
    kind: str
    """The payload oneof name ("" for an event without payload)."""
    occurred_ms: int
    """`occurred_at` in epoch milliseconds."""

    @classmethod
    def of(cls, event: pb.Event, ingest_ms: int | None = None) -> Self:
        """The record of `event`, its kind and occurrence read from the event itself."""
        ts = event.occurred_at
        kind = event.WhichOneof("payload") or ""
        return cls(event, ingest_ms, kind, ts.seconds * 1000 + ts.nanos // 1_000_000)


@dataclass(slots=True)
class Param:
    """One parameter: its value, where it came from, and the inferred value beside a user's.

    Read-only by convention (not frozen: several are built per agent and write, and a frozen
    dataclass costs 2.5 times as much to build)."""

    value: Any
    source: Source
    inferred_value: Any = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "source": self.source}
        if self.source == "user":
            out["inferred_value"] = self.inferred_value
        return out


@dataclass(frozen=True, slots=True)
class AgentOutput:
    """An agent's current view of a user, ready for the store."""

    agent_id: str
    version: str
    params: dict[str, Param]
    extras: dict[str, Any]
    """Derived values that are not parameters but are stored and used by the snippet."""
    snippet: str | None
    """None while the agent is in cold start (a cold-start agent emits no snippet)."""
    ttl_seconds: int
    event_time_ms: int
    """Occurred-at of the newest event folded into this agent's state."""
    cold_start: bool = False
