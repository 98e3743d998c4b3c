"""What a source hands the flow: an accepted event or a rejected record, never an exception.

Kafka messages and event-log lines are decoded and validated here. A record
that fails becomes a `Rejected` carrying the original bytes, where it came
from and the reason, so it can be routed to the dead-letter topic or the
rejects file while the rest go on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from connectors.jsonl import read_line, without_bom
from features.model import Incoming
from proto import events_pb2 as pb

MAX_REASON_CHARS = 1000
_FIELD_IN_REASON = re.compile(r"field '([^']+)'")


def reject_json(
    line: int | None, source: str, reason: str, raw: str, field: str | None = None
) -> str:
    """The one rejects-file line every command writes (`produce`, `backfill`, `flow --from`):
    `{"line", "source", "reason", "field", "raw"}`; `field` is the event field the reason
    names (null when none), `reason` is cut to `MAX_REASON_CHARS`.

    >>> row = json.loads(reject_json(3, "a.jsonl", "line 3: field 'user_id': bad", "{}"))
    >>> row["field"], sorted(row)
    ('user_id', ['field', 'line', 'raw', 'reason', 'source'])
    """
    if field is None:
        named = _FIELD_IN_REASON.search(reason)
        field = named.group(1) if named else None
    return json.dumps(
        {
            "line": line,
            "source": source,
            "reason": reason[:MAX_REASON_CHARS],
            "field": field,
            "raw": raw,
        },
        ensure_ascii=False,
    )


"""A reason longer than this is cut (it lands in a Kafka header and a rejects file)."""


@dataclass(slots=True)
class Accepted(Incoming):
    """A decoded, validated event (read-only by convention: one is built per event, and a frozen
    dataclass costs 2.5 times as much to build): the fold's `Incoming`, with where it came from."""

    event: pb.Event
    ingest_ms: int
    """Kafka timestamp of the message (or read time for files)."""
    kind: str
    """The payload oneof name, read while validating."""
    occurred_ms: int
    """occurred_at in ms, read while validating."""
    origin: Any = None
    """Where it came from, for a dead letter if folding it fails: a Kafka message's value bytes
    (its topic, partition and offset are `source` and `offset`, its key the user id the source
    matched it against), or ``(path, line_no, line)`` for a file line (a reference: nothing is
    copied per event). Not the confluent-kafka message itself, which is then freed as soon as
    it is decoded (ADR 0056); one given here is read as before."""
    source: tuple[str, int] | None = None
    """(topic, partition) of the Kafka message; None for files (no stable position, ADR 0009)."""
    offset: int = -1
    """Kafka offset of the message in `source` (the user's history marker, ADR 0009)."""

    def __reduce__(
        self,
    ) -> tuple[Any, tuple[bytes, int, str, int, Any, tuple[str, int] | None, int]]:
        # Crossing a process boundary (Bytewax cluster exchange): the wire form is the contract.
        return _rebuild_accepted, (
            self.event.SerializeToString(),
            self.ingest_ms,
            self.kind,
            self.occurred_ms,
            self.where(),
            self.source,
            self.offset,
        )

    def where(self) -> tuple[str, int, int, bytes | None, bytes | None]:
        """(topic or path, partition or -1, offset or line number, original bytes, key)."""
        origin = self.origin
        if origin is None:
            return "", -1, -1, None, None
        if origin.__class__ is bytes:  # a Kafka message's value, keyed by its user (ADR 0056)
            topic, partition = self.source or ("", -1)
            return topic, partition, self.offset, origin, self.event.user_id.encode()
        if isinstance(origin, tuple):
            if len(origin) == 5:  # already resolved (crossed a process boundary)
                return origin  # type: ignore[return-value]
            path, line_no, line = origin
            raw = line.rstrip(b"\r\n") if isinstance(line, bytes) else line.rstrip("\r\n").encode()
            return path, -1, line_no, raw, None
        partition, offset = origin.partition(), origin.offset()
        return (
            origin.topic() or "",
            -1 if partition is None else partition,
            -1 if offset is None else offset,
            origin.value(),
            origin.key(),
        )

    def rejected(self, reason: str) -> Rejected:
        """This event as a dead letter (folding it failed): its original bytes and origin."""
        topic, partition, offset, raw, key = self.where()
        if raw is None:
            raw = self.event.SerializeToString()
        if key is None and partition >= 0:
            key = self.event.user_id.encode()
        return Rejected(reason[:MAX_REASON_CHARS], raw, topic, partition, offset, key)


def _rebuild_accepted(
    data: bytes,
    ingest_ms: int,
    kind: str,
    occurred_ms: int,
    where: Any = None,
    source: tuple[str, int] | None = None,
    offset: int = -1,
) -> Accepted:
    return Accepted(pb.Event.FromString(data), ingest_ms, kind, occurred_ms, where, source, offset)


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
            ("oo.reason", self.reason[:MAX_REASON_CHARS].encode("utf-8", "replace")),
            ("oo.topic", self.origin.encode()),
            ("oo.partition", str(self.partition).encode()),
            ("oo.offset", str(self.offset).encode()),
        ]

    def as_json_line(self) -> str:
        return reject_json(
            self.offset, str(self.origin), self.reason, self.raw.decode("utf-8", "replace")
        )


def decode_line(
    path: str, line_no: int, line: str | bytes, *, ingest_ms: int, now_s: float | None = None
) -> Accepted | Rejected | None:
    """One event-log line into an Accepted or a Rejected; None for a blank line.

    The line goes through `jsonl.read_line`, the reader `produce` uses too (same bounds,
    byte-order-mark rule and reasons). Never raises: whatever the line holds (bad UTF-8,
    deep nesting, huge numbers...), it is a `Rejected` with its line number and reason.
    """
    if line_no == 1:  # kept without its byte-order mark, for a dead letter too
        line = without_bom(line)
    got = read_line(line_no, line, now_s)
    if got.__class__ is tuple:
        event, kind, occurred_ms = got  # type: ignore[misc]
        return Accepted(event, ingest_ms, kind, occurred_ms, (path, line_no, line))
    if got is None:
        return None
    raw = line if isinstance(line, bytes) else line.encode("utf-8", "surrogateescape")
    return Rejected(
        f"line {line_no}: {got}"[:MAX_REASON_CHARS], raw.rstrip(b"\r\n"), path, -1, line_no
    )


class RejectsFile:
    """The one writer of a rejects file, for every command (format: `reject_json`; path:
    `jsonl.rejects_path_for`). `add(rejected)` writes a `Rejected`; `add_line(...)` a line
    refused before it became one (`produce`). `count` says how many were written.

    `mode` "w" truncates, "a" appends (the flow's sink, one file per worker); `lazy` creates
    the file only at the first reject (`produce` leaves no empty file). The parent folder is
    created. Raises `OSError` when the file cannot be opened or written.
    """

    def __init__(
        self, path: str | Path, *, source: str = "", mode: str = "w", lazy: bool = False
    ) -> None:
        self.path = Path(path)
        self.source = source
        self.count = 0
        self._mode = mode
        self._file: IO[str] | None = None
        if not lazy:
            self._open()

    def _open(self) -> IO[str]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open(self._mode, encoding="utf-8")
        return self._file

    def _write(self, line: str) -> None:
        handle = self._file if self._file is not None else self._open()
        handle.write(line + "\n")
        self.count += 1

    def add(self, rejected: Rejected) -> None:
        self._write(rejected.as_json_line())

    def add_line(self, line: int | None, reason: str, raw: str, field: str | None = None) -> None:
        self._write(reject_json(line, self.source, reason, raw, field))

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> RejectsFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
