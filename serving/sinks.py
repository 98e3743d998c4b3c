"""Where the API's own events go: `TipShown`, `TipReaction`, `UserDeleted`.

`EventSink` is the one seam. `KafkaEventSink` publishes through the connectors'
`EventProducer` (topic by the rule of `connectors.topics.topic_for`: feedback to
`oo.feedback.v1`, deletions to `oo.signals.v1`); `FileEventSink` appends
canonical-JSON lines to an event-log file when Kafka is not configured
(embedded mode), so the same events can be replayed into a flow later.

`emit` is fire-and-forget (a failure is logged with the event id and counted,
never raised into a request); `emit_confirmed` waits for the broker or the
disk and raises `EventSinkError`, for events that must not be lost (deletion).
Nothing here logs event content beyond the event id, kind and user id.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from connectors import codec
from connectors.exceptions import ConnectorError
from proto import events_pb2 as pb
from serving.exceptions import EventSinkError, ServingError

log = logging.getLogger(__name__)

EVENT_SOURCE = "tip-api"

REACTIONS: dict[str, int] = {
    "done": pb.REACTION_DONE,
    "like": pb.REACTION_LIKE,
    "dismiss": pb.REACTION_DISMISS,
    "snooze": pb.REACTION_SNOOZE,
}

FailureObserver = Callable[[str], None]
"""Called with the payload kind of an event the sink could not deliver."""


# --- events ----------------------------------------------------------------------------


def _envelope(user_id: str, occurred_at_ms: int | None) -> pb.Event:
    event = pb.Event(event_id=str(uuid.uuid4()), user_id=user_id, source=EVENT_SOURCE)
    if occurred_at_ms is None:
        event.occurred_at.GetCurrentTime()
    else:
        event.occurred_at.FromMilliseconds(occurred_at_ms)
    return event


def tip_shown(user_id: str, tip_id: str, agent_ids: Iterable[str]) -> pb.Event:
    event = _envelope(user_id, None)
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


def _describe(event: pb.Event) -> str:
    return f"{event.WhichOneof('payload')} {event.event_id} for user {event.user_id}"


# --- sinks -----------------------------------------------------------------------------


@runtime_checkable
class EventSink(Protocol):
    """Where the API's events are written. Safe to call from worker threads."""

    kind: str
    """`kafka` or `file` (reported by /ready)."""

    def emit(self, event: pb.Event) -> None:
        """Queue the event; a delivery failure is logged and counted, never raised."""

    def emit_confirmed(self, event: pb.Event, *, timeout_s: float) -> None:
        """Write the event and wait for its confirmation; `EventSinkError` otherwise."""

    def check(self, *, timeout_s: float) -> str:
        """`ok` (Kafka reachable) or `disabled` (no Kafka: file log); `EventSinkError` if down."""

    def poll(self) -> None:
        """Serve pending delivery reports (called periodically by the app)."""

    def close(self, *, timeout_s: float) -> None: ...


class KafkaEventSink:
    """Publishes through `connectors.kafka.EventProducer` (idempotent, acks=all, validated).

    Give it a `producer`, or a `factory` that builds one: the producer is then
    made on first use and again after a failure (at most once every
    `retry_after_s`), so the API starts, and says "not ready", while Kafka is down.
    """

    kind = "kafka"

    def __init__(
        self,
        producer: Any | None = None,
        *,
        factory: Callable[[], Any] | None = None,
        on_failure: FailureObserver | None = None,
        retry_after_s: float = 5.0,
    ) -> None:
        if producer is None and factory is None:
            raise ValueError("KafkaEventSink needs a producer or a factory")
        self._producer = producer
        self._factory = factory
        self._on_failure = on_failure
        self._retry_after_s = retry_after_s
        self._failed_at: float | None = None
        self._last_failure = ""
        self._lock = threading.Lock()

    def _client(self) -> Any:
        """The producer, made now if needed; `EventSinkError` while Kafka is unreachable."""
        with self._lock:
            if self._producer is not None:
                return self._producer
            assert self._factory is not None
            now = time.monotonic()
            if self._failed_at is not None and now - self._failed_at < self._retry_after_s:
                raise EventSinkError(f"Kafka unreachable: {self._last_failure}")
            try:
                self._producer = self._factory()
            except ConnectorError as exc:
                self._failed_at, self._last_failure = now, str(exc)
                raise EventSinkError(f"Kafka unreachable: {exc}") from exc
            self._failed_at = None
            return self._producer

    def _failed(self, event: pb.Event, reason: object) -> None:
        log.error("event not delivered: %s: %s", _describe(event), reason)
        if self._on_failure is not None:
            self._on_failure(event.WhichOneof("payload") or "unknown")

    def _report(self, event: pb.Event, error: Exception | None) -> None:
        if error is not None:
            self._failed(event, error)

    def emit(self, event: pb.Event) -> None:
        try:
            self._client().publish(event, on_delivery=self._report)
        except (ServingError, ConnectorError) as exc:
            self._failed(event, exc)

    def emit_confirmed(self, event: pb.Event, *, timeout_s: float) -> None:
        outcome: list[Exception | None] = []

        def on_delivery(_: pb.Event, error: Exception | None) -> None:
            outcome.append(error)

        producer = self._client()
        try:
            producer.publish(event, on_delivery=on_delivery)
            producer.flush(timeout_s)
        except ConnectorError as exc:
            raise EventSinkError(f"{_describe(event)} not confirmed: {exc}") from exc
        if not outcome:
            raise EventSinkError(f"{_describe(event)} not confirmed within {timeout_s}s")
        if outcome[0] is not None:
            raise EventSinkError(f"{_describe(event)} refused by Kafka: {outcome[0]}")

    def check(self, *, timeout_s: float) -> str:
        try:
            self._client().ping(timeout_s)
        except ConnectorError as exc:
            raise EventSinkError(f"Kafka unreachable: {exc}") from exc
        return "ok"

    def poll(self) -> None:
        if self._producer is not None:
            self._producer.poll(0)

    def close(self, *, timeout_s: float) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None


class FileEventSink:
    """Appends canonical-JSON events, one a line, to a local event-log file (embedded mode)."""

    kind = "file"

    def __init__(self, path: Path | str, *, on_failure: FailureObserver | None = None) -> None:
        self.path = Path(path)
        self._on_failure = on_failure
        self._lock = threading.Lock()

    def _append(self, event: pb.Event, *, sync: bool) -> None:
        line = codec.to_json(event) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(line)
                if sync:
                    out.flush()
                    os.fsync(out.fileno())

    def emit(self, event: pb.Event) -> None:
        try:
            self._append(event, sync=False)
        except OSError as exc:
            log.error("event not written to %s: %s: %s", self.path, _describe(event), exc)
            if self._on_failure is not None:
                self._on_failure(event.WhichOneof("payload") or "unknown")

    def emit_confirmed(self, event: pb.Event, *, timeout_s: float) -> None:
        try:
            self._append(event, sync=True)
        except OSError as exc:
            raise EventSinkError(f"{_describe(event)} not written to {self.path}: {exc}") from exc

    def check(self, *, timeout_s: float) -> str:
        return "disabled"

    def poll(self) -> None:
        return None

    def close(self, *, timeout_s: float) -> None:
        return None
