"""One reader for event-log lines: `produce` (`jsonl.read_events`) and the flows
(`records.decode_line`: `backfill`, `flow --from`) both go through `jsonl.read_line`, so
they accept the same lines and refuse the others for the same reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from connectors import jsonl, records
from connectors.jsonl import MAX_LINE_CHARS, LineError, read_events, read_line
from connectors.records import Accepted, Rejected, decode_line

GOOD = (
    '{"eventId":"e1","userId":"u-1","occurredAt":"2026-01-02T03:04:05Z",'
    '"taskCompleted":{"taskId":"t1"}}'
)
LINES: list[bytes] = [
    b"\xef\xbb\xbf" + GOOD.encode() + b"\n",  # a byte-order mark on line 1: framing
    GOOD.encode() + b"\r\n",
    b"\n",
    b"   \t\n",
    b"\xef\xbb\xbf" + GOOD.encode() + b"\n",  # a byte-order mark later: part of the line
    b"not json\n",
    b'{"eventId": "e2"\n',
    b"\xff\xfe garbage\n",
    b" " * (MAX_LINE_CHARS + 10) + b"\n",  # blank, however long
    b'{"x":"' + b"a" * MAX_LINE_CHARS + b'"}\n',
    GOOD.replace('"u-1"', '"bad user"').encode() + b"\n",
    GOOD.replace('"2026-01-02T03:04:05Z"', '"1990-01-01T00:00:00Z"').encode() + b"\n",
    b'{"eventId":"e3","userId":"u-1","occurredAt":"2026-01-02T03:04:05Z",'
    b'"preferenceSet":{"agentId":"a","param":"p","valueJson":"' + b"[" * 300 + b'"}}\n',
    b'{"eventId":"e4","userId":"u-1","occurredAt":"2026-01-02T03:04:05Z",'
    b'"preferenceSet":{"agentId":"a","param":"p","valueJson":"NaN"}}\n',
    b"[1, 2]\n",
    b'{"eventId":"e5","eventId":"e6","userId":"u-1","occurredAt":"2026-01-02T03:04:05Z",'
    b'"taskCompleted":{"taskId":"t1"}}\n',
]


def produce_view(lines: list[bytes]) -> dict[int, tuple[str, Any]]:
    out: dict[int, tuple[str, Any]] = {}
    for line_no, item in read_events(lines, now_s=1_800_000_000):
        if isinstance(item, LineError):
            out[line_no] = ("rejected", (item.reason, item.text))
        else:
            out[line_no] = ("accepted", item.SerializeToString())
    return out


def flow_view(lines: list[bytes]) -> dict[int, tuple[str, Any]]:
    out: dict[int, tuple[str, Any]] = {}
    for line_no, line in enumerate(lines, start=1):
        record = decode_line("f.jsonl", line_no, line, ingest_ms=0, now_s=1_800_000_000)
        if record is None:
            continue
        if isinstance(record, Rejected):
            prefix = f"line {line_no}: "
            assert record.reason.startswith(prefix) and record.offset == line_no
            row = json.loads(record.as_json_line())
            out[line_no] = ("rejected", (record.reason.removeprefix(prefix), row["raw"]))
        else:
            assert isinstance(record, Accepted)
            out[line_no] = ("accepted", record.event.SerializeToString())
    return out


def test_produce_and_the_flows_read_every_line_alike() -> None:
    produced, flowed = produce_view(LINES), flow_view(LINES)
    assert produced == flowed
    assert {n for n, (verdict, _) in produced.items() if verdict == "accepted"} == {1, 2}
    assert 3 not in produced and 4 not in produced and 9 not in produced  # blank lines
    reason = produced[10][1][0]
    assert reason == f"line is {MAX_LINE_CHARS + 9} characters long; at most {MAX_LINE_CHARS}"


def test_both_go_through_the_one_line_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    assert records.read_line is jsonl.read_line
    seen: list[int] = []

    def spy(line_no: int, line: bytes | str, *args: Any, **kwargs: Any) -> Any:
        seen.append(line_no)
        return read_line(line_no, line, *args, **kwargs)

    monkeypatch.setattr(jsonl, "read_line", spy)
    monkeypatch.setattr(records, "read_line", spy)
    produce_view(LINES[:2])
    flow_view(LINES[:2])
    assert seen == [1, 2, 1, 2]


def test_read_line_answers() -> None:
    event, kind, occurred_ms = read_line(1, GOOD.encode(), now_s=1_800_000_000)  # type: ignore[misc]
    assert (event.event_id, kind, occurred_ms) == ("e1", "task_completed", 1_767_323_045_000)
    assert read_line(2, b"  \n") is None
    error = read_line(3, b"\xff\n")
    assert isinstance(error, Exception) and "expected UTF-8 text" in str(error)
