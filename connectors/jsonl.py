"""Event-log files: JSONL (one canonical-JSON `oo.events.v1.Event` per line) read line by line.

`read_events` turns a file or stdin into ``(line_no, Event | LineError)`` pairs:
every line is parsed and validated, a bad line becomes a `LineError` carrying
its text and the reason, never an exception, so a caller can publish the good
ones and report the bad ones with their line numbers.

Parsing has a fast path (`connectors.line_fast`, ADR 0022): orjson on the line's bytes,
the Event built by code generated per line shape, `codec.check`'s rules checked on the
values already parsed, for the shapes integrations actually write (camelCase names, plain
types, UTC timestamps ending in ``Z``). Anything else (snake_case names, nulls, numbers
as strings, offsets in timestamps, unknown fields, escaped quotes, duplicate keys, bad
JSON, and every line that breaks a contract rule) goes to `codec.from_json` and
`codec.check`, so every error message is json_format's or `codec`'s own and the result is
the same whichever path ran (tests/unit/test_line_reader_fast.py and test_codec.py).

This module reads; it never writes Kafka or the store.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from connectors import codec
from connectors.exceptions import ConnectorError, DecodeError, ValidationError
from connectors.line_fast import fast_line
from proto import events_pb2 as pb

__all__ = [
    "MAX_LINE_CHARS",
    "LineError",
    "open_source",
    "parse_event",
    "parse_fast",
    "read_events",
    "read_line",
    "rejects_path_for",
    "without_bom",
]

MAX_LINE_CHARS = 1024 * 1024
"""A longer line is refused before parsing (a valid event is at most `codec.MAX_EVENT_BYTES`
serialized; its JSON form is rarely more than a few times that)."""


@dataclass(frozen=True, slots=True)
class LineError:
    """A line that is not a valid Event: where it was, what it said, and why it was refused."""

    line_no: int
    text: str
    error: ConnectorError

    @property
    def reason(self) -> str:
        return str(self.error)

    @property
    def field(self) -> str | None:
        """The offending field for a validation error; None when the line did not parse."""
        return self.error.field if isinstance(self.error, ValidationError) else None


# --- fast path ---------------------------------------------------------------------------


def parse_fast(text: bytes | str) -> pb.Event | None:
    """The Event of one canonical-JSON line built by hand, or None when json_format must decide.

    Returns an Event only when `codec.from_json` would return an equal one.
    """
    got = fast_line(text, None, False)
    return None if got is None else got[0]


def _not_utf8(exc: UnicodeDecodeError) -> DecodeError:
    return DecodeError(f"expected UTF-8 text; byte {exc.start} is not valid UTF-8 ({exc.reason})")


def parse_event(line: bytes | str) -> pb.Event:
    """One JSONL line as an Event (not yet validated); raises `DecodeError`."""
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
    except UnicodeDecodeError as exc:
        raise _not_utf8(exc) from exc
    event = parse_fast(text)
    return event if event is not None else codec.from_json(text)


# --- reading -----------------------------------------------------------------------------


def open_source(source: str | Path) -> IO[bytes]:
    """The bytes of `source`: a path, or ``-`` for stdin (closing it leaves stdin open)."""
    if str(source) == "-":
        return open(sys.stdin.fileno(), "rb", closefd=False)
    return open(source, "rb")


def rejects_path_for(
    source: str | Path, explicit: str | Path | None = None, *, stdin_name: str = "stdin"
) -> Path:
    """Where the rejects of reading `source` go, for every command: `explicit` when given,
    else ``<source>.rejects.jsonl`` beside it (``./<stdin_name>.rejects.jsonl`` for ``-``).

    >>> str(rejects_path_for("logs/events.jsonl")), str(rejects_path_for("-"))
    ('logs/events.jsonl.rejects.jsonl', 'stdin.rejects.jsonl')
    """
    if explicit:
        return Path(explicit)
    if str(source) == "-":
        return Path(f"{stdin_name}.rejects.jsonl")
    return Path(f"{source}.rejects.jsonl")


def without_bom(line: bytes | str) -> bytes | str:
    """The first line of a file without its byte-order mark (file framing, not event text)."""
    if isinstance(line, bytes):
        return line.removeprefix(b"\xef\xbb\xbf")
    return line.removeprefix("\ufeff")


def read_line(
    line_no: int, line: bytes | str, now_s: float | None = None, validate: bool = True
) -> tuple[pb.Event, str, int] | ConnectorError | None:
    """The one reader of an event-log line, for every command (`produce`, `backfill`, `flow --from`).

    ``(event, payload kind, occurred_at in ms)`` for a good line (kind "" and -1 without
    `validate`), a `ConnectorError` saying why a bad line is refused, None for a blank line.
    The rules: a byte-order mark before line 1 is file framing and is dropped; a line longer
    than `MAX_LINE_CHARS` is refused before parsing; UTF-8 only; the fast path, else
    json_format, so the reasons are json_format's; with `validate`, `codec.check` (the
    contract's bounds, the field named). Never raises for what a line holds: anything a
    parser lets out becomes the returned error.
    """
    if line_no == 1:
        line = without_bom(line)
    got = fast_line(line, now_s, validate)
    if got is not None:
        return got
    try:
        if len(line) > MAX_LINE_CHARS:
            if not line.strip():
                return None
            raise DecodeError(f"line is {len(line)} characters long; at most {MAX_LINE_CHARS}")
        text = line.decode("utf-8") if type(line) is bytes else line
        if not text.strip():  # type: ignore[union-attr]
            return None
        event = codec.from_json(text)  # type: ignore[arg-type]
        if not validate:
            return event, "", -1
        kind, occurred_ms = codec.check(event, now_s=now_s, encoded_size=len(line))
    except UnicodeDecodeError as exc:
        return _not_utf8(exc)
    except ConnectorError as exc:
        return exc
    except Exception as exc:  # a parser's own failure: this line's reason, never a crash
        return DecodeError(f"{type(exc).__name__}: {exc!s:.200}")
    return event, kind, occurred_ms


def read_events(
    lines: Iterable[bytes | str], *, validate: bool = True, now_s: float | None = None
) -> Iterator[tuple[int, pb.Event | LineError]]:
    """``(line_no, Event | LineError)`` for every non-blank line; line numbers start at 1.

    Each line goes through `read_line` (the rules are there). With `validate`, an Event
    that parses but breaks a contract rule is a `LineError` naming the field. Blank lines
    are skipped (still numbered). Never raises for what a line holds.
    """
    read = read_line
    for line_no, line in enumerate(lines, start=1):
        got = read(line_no, line, now_s, validate)  # positional: this runs once a line
        if got.__class__ is tuple:
            yield line_no, got[0]  # type: ignore[index]
        elif got is not None:
            if line_no == 1:  # the text as read_line saw it
                line = without_bom(line)
            text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
            yield line_no, LineError(line_no, text.rstrip("\r\n"), got)  # type: ignore[arg-type]
