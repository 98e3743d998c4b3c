"""Realistic synthetic `oo.events.v1` events, deterministic per seed.

Used by `oo-features generate`, the tests, the benchmarks and the demo.

What the data looks like
------------------------
Each user (`u00000`, `u00001`, ...) gets their own `random.Random` (seeded from
``f"{seed}/{index}"``), so a user's events do not depend on how many other users
are generated. A user has:

- a home IANA time zone, announced by a `ProfileUpdated` just before their first
  local day (local midnight minus a minute); some users (about 15 %) travel for
  2-10 days to a zone at least 2 h away, and about a third of those also update
  their profile to the travel zone and back;
- an offset habit: most users' events carry `utc_offset_minutes` (the real
  offset of the zone they are in at that instant, DST included), some only
  mostly, and about 20 % never (so the profile zone applies);
- a chronotype: quiet nights (sleep window with almost no activity), one main
  and one secondary peak hour, a later and flatter weekend profile, and a
  weekend activity factor (0.15-0.9 of weekdays);
- 3-10 projects, each with its own deadline discipline (mean lateness from 1.5
  days early to 4 days late);
- tasks: `TaskCreated` with a due date (about 10 % without one), sometimes a
  `TaskUpdated` moving the due date, a `TaskCompleted` (with `due_at` and
  `project_id`) on the day the project's discipline puts it, sometimes a
  `TaskDeleted`, and some neglected (left open, so overdue);
- habits, calendar entries, moods (1-5), context changes, tips shown (1-3 agent
  ids) and most of them reacted to; occasionally a `PreferenceSet` on a real
  agent parameter (sometimes cleared later with an empty `value_json`), a
  `ConsentChanged` revoking `tasks` (often granted again a few days later), and
  rarely a `UserDeleted` (a third of those users come back later as new users).

Roughly 5-15 events per user per day (about 10 on average). Events come out
sorted by `occurred_at` (stable: ties keep generation order).

Time
----
Day `d` is the local date ``start.date() + d`` for every user (the UTC date of
`start`; its time of day is ignored). Without `start` the first date is
2026-01-01, moved earlier by ``days - 300`` days when ``days > 300`` so the
output always ends before 2026-10-29: deterministic, and never in the future
for the validator.

Chaos (off by default)
----------------------
`ChaosOptions` fractions are relative to the number of base events `N`; each
kind is injected ``floor(F * N + phase)`` times (spread evenly with a seeded
random phase), and `GenerateStats` reports the exact counts:

- ``out_of_order``: the event is held back and delivered later (70 %: 1 min to
  3 h, 30 %: 3 h to 6 days, always within the 7-day allowed lateness).
  `ProfileUpdated`, `ConsentChanged` and `UserDeleted` are never delayed.
- ``duplicates``: the identical event is delivered again 1 min to 3 days later.
- ``too_late``: a new signal event (`MoodLogged` or `TaskCompleted`, id
  ``{user}-late-{n}``) is delivered right after one of the user's signal events,
  with `occurred_at` 7 days and 1 h to 3 days before it, so an engine drops it.
  Users who were deleted in the stream are skipped.
- ``invalid``: a raw line that is not an Event (`DecodeError`) or an Event that
  breaks validation (bad user id, mood 9, unknown time zone, offset out of
  range, no payload, empty id, occurred before 2000). Only `generate_lines`
  emits these; `generate_events` skips them.

The base events are identical with and without chaos; chaos draws from its own
random stream.

Modules
-------
`records` (what a generated event is, shared constants), `zones` (time zones, random draws),
`people` (the simulated users and their days), `chaos` (delivery trouble), `wire` (canonical
JSON and protobuf); this package joins them into the streams below.

JSON
----
`generate_lines` formats the canonical protobuf JSON itself (about 10x faster
than `json_format`); the result is byte-identical to `connectors.codec.to_json`
(tested).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import TextIO

from oo_features.generate.chaos import ChaosOptions, GenerateStats, _chaos
from oo_features.generate.people import generate_records
from oo_features.generate.records import AGENT_IDS, DEFAULT_START, Record, default_start
from oo_features.generate.wire import format_event, record_to_event
from proto import events_pb2 as pb

__all__ = [
    "AGENT_IDS",
    "DEFAULT_START",
    "ChaosOptions",
    "GenerateStats",
    "Record",
    "default_start",
    "format_event",
    "generate_events",
    "generate_lines",
    "generate_records",
    "record_to_event",
    "write_jsonl",
]


def _stream(
    users: int,
    days: int,
    seed: int,
    start: dt.datetime | dt.date | None,
    chaos: ChaosOptions | None,
    stats: GenerateStats,
) -> Iterator[Record | str]:
    records = generate_records(users, days, seed, start)
    if chaos is not None and chaos.active:
        yield from _chaos(records, chaos, seed, stats)
        return
    for rec in records:
        stats.events += 1
        yield rec


def generate_events(
    users: int,
    days: int,
    seed: int,
    start: dt.datetime | dt.date | None = None,
    *,
    chaos: ChaosOptions | None = None,
    stats: GenerateStats | None = None,
) -> Iterator[pb.Event]:
    """Synthetic events in delivery order; with `chaos`, everything but the invalid lines."""
    stats = GenerateStats() if stats is None else stats
    for item in _stream(users, days, seed, start, chaos, stats):
        if isinstance(item, str):
            continue
        stats.lines += 1
        yield record_to_event(item)


def generate_lines(
    users: int,
    days: int,
    seed: int,
    start: dt.datetime | dt.date | None = None,
    *,
    chaos: ChaosOptions | None = None,
    stats: GenerateStats | None = None,
) -> Iterator[str]:
    """Synthetic events as canonical-JSON lines (no newline), invalid lines mixed in by `chaos`."""
    stats = GenerateStats() if stats is None else stats
    fmt = format_event
    for item in _stream(users, days, seed, start, chaos, stats):
        stats.lines += 1
        yield item if isinstance(item, str) else fmt(item)


def write_jsonl(
    out: TextIO,
    users: int,
    days: int,
    seed: int,
    start: dt.datetime | dt.date | None = None,
    *,
    chaos: ChaosOptions | None = None,
) -> GenerateStats:
    """Write `generate_lines` to `out`, one per line; return the counts."""
    stats = GenerateStats()
    chunk: list[str] = []
    for line in generate_lines(users, days, seed, start, chaos=chaos, stats=stats):
        chunk.append(line)
        if len(chunk) >= 8192:
            chunk.append("")
            out.write("\n".join(chunk))
            chunk.clear()
    if chunk:
        chunk.append("")
        out.write("\n".join(chunk))
    return stats
