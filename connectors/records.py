"""What a source hands the flow: an accepted event or a rejected record, never an exception.

Kafka messages and event-log lines are decoded and validated here. A record
that fails becomes a `Rejected` carrying the original bytes, where it came
from and the reason, so it can be routed to the dead-letter topic or the
rejects file while the rest go on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from connectors.codec import check
from connectors.exceptions import ConnectorError
from connectors.jsonl import parse_event
from proto import events_pb2 as pb


@dataclass(slots=True)
class Accepted:
    """A decoded, validated event (read-only by convention: one is built per event, and a frozen
    dataclass costs 2.5 times as much to build)."""

    event: pb.Event
    ingest_ms: int
    """Kafka timestamp of the message (or read time for files)."""
    kind: str
    """The payload oneof name, read while validating."""
    occurred_ms: int
    """occurred_at in ms, read while validating."""
    source: tuple[str, int] | None = None
    """(topic, partition) of the Kafka message; None for files (no stable position, ADR 0009)."""
    offset: int = -1
    """Kafka offset of the message in `source` (the user's history marker, ADR 0009)."""

    @classmethod
    def of(cls, event: pb.Event, ingest_ms: int) -> Accepted:
        """An Accepted for an event validated elsewhere."""
        ts = event.occurred_at
        kind = event.WhichOneof("payload") or ""
        return cls(event, ingest_ms, kind, ts.seconds * 1000 + ts.nanos // 1_000_000)

    def __reduce__(
        self,
    ) -> tuple[Any, tuple[bytes, int, str, int, tuple[str, int] | None, int]]:
        # Crossing a process boundary (Bytewax cluster exchange): the wire form is the contract.
        return _rebuild_accepted, (
            self.event.SerializeToString(),
            self.ingest_ms,
            self.kind,
            self.occurred_ms,
            self.source,
            self.offset,
        )


def _rebuild_accepted(
    data: bytes,
    ingest_ms: int,
    kind: str,
    occurred_ms: int,
    source: tuple[str, int] | None = None,
    offset: int = -1,
) -> Accepted:
    return Accepted(pb.Event.FromString(data), ingest_ms, kind, occurred_ms, source, offset)


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    raw: bytes
    origin: str
    """topic name or file path."""
    partition: int
    """Kafka partition, or -1 for files."""
    offset: int
    """Kafka offset, or the 1-based line number for files."""
    key: bytes | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            ("oo.reason", self.reason.encode()),
            ("oo.topic", self.origin.encode()),
            ("oo.partition", str(self.partition).encode()),
            ("oo.offset", str(self.offset).encode()),
        ]

    def as_json_line(self) -> str:
        return json.dumps(
            {
                "line": self.offset,
                "source": self.origin,
                "reason": self.reason,
                "raw": self.raw.decode("utf-8", "replace"),
            }
        )


def decode_line(
    path: str, line_no: int, line: str, *, ingest_ms: int, now_s: float | None = None
) -> Accepted | Rejected | None:
    """One event-log line into an Accepted or a Rejected; None for a blank line."""
    if not line.strip():
        return None
    try:
        # The fast path (json.loads + descriptor tables), same errors as json_format's.
        event = parse_event(line)
        kind, occurred_ms = check(event, now_s=now_s)
    except ConnectorError as exc:
        return Rejected(f"line {line_no}: {exc}", line.rstrip("\n").encode(), path, -1, line_no)
    return Accepted(event, ingest_ms, kind, occurred_ms)
