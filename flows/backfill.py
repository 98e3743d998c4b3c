"""Batch backfill: the features of an event log, with the same code and the same writes as the stream.

Events are taken in file order and decoded in batches of lines as the flow's file source
reads them; each user's events are folded in file order into that user's `UserState` with
the flow's own fold (`flows.folding.Pending`). What changed is written once per *span* of
at least `SPAN_LINES` lines (ADR 0023) and `SPAN_LINES_PER_USER` lines per user it touched
(ADR 0030), not once per batch: the stored features do not depend on how
events are grouped into writes (the engine's promise, tested), so a user folded many times in
a span costs one `build_write` and one store write. Writes go to the store in chunks of
`WRITE_CHUNK` users (one SQLite transaction, one Redis pipeline each). No Bytewax: a plain loop.

Memory: what a span holds beyond every user's state is one `Pending` per user it touched
(what changed, and the fold's rebuild base: one pickle of the state plus at most
`REBASE_EVENTS` events, ADR 0011). When the span is written, each user's rebuild base is
carried into the next span (`Pending.successor()`). The events held by all the rebuild bases,
carried or not, are bounded by `HELD_EVENTS`, not by when spans end (ADR 0038): once they may
exceed it, the users holding the most drop their bases (`Pending.forget_base()`) until at most
`HELD_AFTER_TRIM` are held, and such a user's next fold takes a new base (a pickle of its
state, ~85 us; the users dropped first hold the most events). So the events held are at most
`HELD_EVENTS` plus one batch of lines; one base per user. An event is held as its line, not
decoded (`_held_line`; decoded again only to rebuild, ADR 0043), and a base is renewed only by
a trim, never for the events behind it nor for its age in wall-clock seconds
(`Pending(renew_aged=False)`: that rule bounds a quiet user in the flow, and in a backfill it
only made a slow run pickle more).

Failure behaviour: a line that is not a valid event, and an event whose fold raised, is a
reject (line number and reason) and the other lines go on; the state of a user whose fold
raised is as before that event. A store error propagates (what was written stays; a re-run
writes the same again).
"""

from __future__ import annotations

import gc
import re
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from operator import attrgetter
from pathlib import Path
from typing import Any

from connectors.bytewax_io import LINES_PER_BATCH
from connectors.jsonl import rejects_path_for
from connectors.line_fast import fast_line_plain
from connectors.records import Accepted, Rejected, RejectsFile, decode_line
from connectors.store.base import FeatureStore, UserWrite
from features.state import UserState
from flows.folding import Pending, Written, build_write

SPAN_LINES = 200_000
"""Lines folded between two writes of the users they touched (ADR 0023), at least."""
SPAN_LINES_PER_USER = 64
"""... and at least this many lines per user the span touched (ADR 0030, ADR 0038): with many
users of few events each, a span of `SPAN_LINES` wrote every user after a handful of events, and
computing and writing a user's outputs costs about as much as thirty folds. 16 wrote each user
of issue 13's log (2,000,000 events of 50,000 users) three times; 64 writes each once. What a
span holds does not grow with its length (`HELD_EVENTS`)."""
HELD_EVENTS = 2_000_000
"""Events held, in all, by the users' rebuild bases (ADR 0011), carried or not, before the
largest holders drop theirs (ADR 0038). An event is held as its line (`_held_line`, ADR 0043:
about 400 bytes with its line number and ingest time, against about 1.5 KB decoded): ~0.8 GB
at most."""
REBASE_EVENTS = sys.maxsize
"""A user's base is never renewed for the events held since it (ADR 0043): the first is a
fresh state (free), and only a trim (`HELD_EVENTS`) makes a user take a new one, a pickle.
Holding a line costs less than pickling the state to hold fewer."""
HELD_AFTER_TRIM = HELD_EVENTS // 2
"""... down to this many: a trim scans every user's `Pending`, so it runs at most once per
`HELD_EVENTS - HELD_AFTER_TRIM` events folded."""
WRITE_CHUNK = 500
"""Users per `write_batch` call: one SQLite transaction / one Redis pipeline each. Small enough
that `--processes N` sharing one SQLite file never hold its writer lock for long (the store's
busy timeout is 10 s), large enough that a span's writes cost few round trips."""


@dataclass(slots=True)
class BackfillReport:
    lines: int = 0
    accepted: int = 0
    rejected: int = 0
    users: int = 0
    writes: int = 0


def _batches(path: Path) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, the lines) of each batch of `LINES_PER_BATCH` lines. Bytes,
    like the flow's file source: a line that is not UTF-8 is that line's reject."""
    with path.open("rb") as handle:
        first = 1
        while lines := list(islice(handle, LINES_PER_BATCH)):
            yield first, lines
            first += len(lines)


def backfill(
    path: str | Path,
    store: FeatureStore,
    *,
    rejects_path: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    partition: tuple[int, int] | None = None,
    span_lines: int = SPAN_LINES,
    span_lines_per_user: int = SPAN_LINES_PER_USER,
    keep: list[object] | None = None,
) -> BackfillReport:
    """Fold every event of `path` into per-user state and write the features to `store`.

    Each user touched in a span is written once at the end of the span (and at the end of the
    file). A span ends after a batch of lines once it has at least `span_lines` lines and at
    least `span_lines_per_user` lines per user it touched; the store ends the same whatever
    they are (`span_lines` >= 1, `span_lines_per_user` >= 0).
    `progress` is called with the number of lines of each batch read and folded.

    With `partition=(i, n)`, only the users of partition `i` of `n` (`user_partition`) are
    folded and written, and a line that is not an event is a reject of partition 0 only:
    `n` such runs over one file write what one run writes (flows/backfill_processes.py).
    Partition `i`'s first span is `i / n` of a span longer, so the partitions' writes do not
    all start on the same line, and its spans need `n * span_lines_per_user` lines read per
    user touched (it folds about one line in `n`).

    The run's big structures (every user's state, `Pending` and write dedupe) are freed before
    the cyclic garbage collector is switched back on (ADR 0047), or, with `keep`, appended to
    it instead: a caller about to exit (a `--processes` child) lets the exit free them.
    """
    if span_lines < 1:
        raise ValueError(f"span_lines must be >= 1; got {span_lines}")
    if span_lines_per_user < 0:
        raise ValueError(f"span_lines_per_user must be >= 0; got {span_lines_per_user}")
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(
            f"event log {source} "
            + ("is a directory, not a file" if source.is_dir() else "does not exist")
        )
    rejects_file = rejects_path_for(source, rejects_path)
    states: dict[str, UserState] = {}
    written: dict[str, Written] = {}  # each user's write dedupe (this run is the only writer)
    pending: dict[str, Pending] = {}  # the users touched in this span, in first-touch order
    carried: dict[str, Pending] = {}  # rebuild bases carried from the span before (ADR 0029)
    report = BackfillReport()
    # Partition i of n writes its spans i/n of a span later than partition 0: n processes
    # sharing one SQLite file then take its writer lock in turn, not all at the same line
    # (the stored result does not depend on where spans end).
    span = 0 if partition is None else -(span_lines * partition[0] // partition[1])
    held_at_most = 0  # events the rebuild bases may hold: an upper bound, exact after a trim
    # A span counts every line read, but partition i of n folds about 1/n of them: without the
    # factor, each process of `--processes n` wrote its users n times as often as one process.
    per_user_lines = span_lines_per_user * (1 if partition is None else partition[1])
    with _cyclic_gc_off(), RejectsFile(rejects_file) as rejects:
        name = str(source)
        for first_line_no, batch in _batches(source):
            now_s = time.time()
            ingest_ms = int(now_s * 1000)
            per_user: dict[str, list[Accepted]] = {}
            owner: int | None = None
            accepted = 0
            for line_no, line in enumerate(batch, first_line_no):
                if partition is not None:
                    owner = line_owner(line, partition[1])
                    if owner is not None and owner != partition[0]:
                        continue
                # `decode_line`'s own first step, called here (it runs once a line): the
                # fast path's good line is that `Accepted`, its event plain (the fold only
                # reads it, ADR 0054); anything else, `decode_line`.
                got = fast_line_plain(line, now_s)
                if got is not None:
                    event, kind, occurred_ms = got
                    user_id = event.user_id
                    # A line the fast path builds has no escape in its user id nor any
                    # escaped quote: a partition read from its bytes is its user's.
                    if (
                        owner is None
                        and partition is not None
                        and user_partition(user_id, partition[1]) != partition[0]
                    ):
                        continue
                    record = Accepted(event, ingest_ms, kind, occurred_ms, (name, line_no, line))
                else:
                    decoded = decode_line(name, line_no, line, ingest_ms=ingest_ms, now_s=now_s)
                    if decoded is None:
                        continue
                    if partition is not None and not _mine(decoded, owner, partition):
                        continue
                    if decoded.__class__ is not Accepted:
                        report.rejected += 1
                        rejects.add(decoded)  # type: ignore[arg-type]
                        continue
                    record = decoded  # type: ignore[assignment]
                    user_id = record.event.user_id
                accepted += 1
                events = per_user.get(user_id)
                if events is None:
                    per_user[user_id] = [record]
                else:
                    events.append(record)
            for user_id, events in per_user.items():
                user = pending.get(user_id)
                if user is None:
                    user = carried.pop(user_id, None)
                    if user is None:
                        user = Pending(
                            renew_aged=False,
                            rebase_events=REBASE_EVENTS,
                            hold=_held_line,
                            unhold=_line_again,
                        )
                    pending[user_id] = user
                    if user_id not in states:
                        states[user_id] = UserState(user_id)
                        written[user_id] = {}
                user.fold(states[user_id], events)
                if user.failed:  # folding raised: the event is a reject, the state as before
                    for failed in user.take_failed():
                        report.rejected += 1
                        accepted -= 1
                        rejects.add(failed)
            report.accepted += accepted
            report.lines += len(batch)
            span += len(batch)
            held_at_most += len(batch)
            if span >= span_lines and span >= per_user_lines * len(pending):
                report.writes += _write_span(store, states, written, pending)
                carried.update((user_id, user.successor()) for user_id, user in pending.items())
                pending.clear()
                span = 0
            if held_at_most > HELD_EVENTS:
                held_at_most = _trim(pending, carried, HELD_AFTER_TRIM)
            if progress is not None:
                progress(len(batch))
        report.writes += _write_span(store, states, written, pending)
        report.users = len(states)
        # Freed while the collector is still off (ADR 0047): its allocation count has grown
        # all run, so the first allocation after it is back on triggers a young-generation
        # collection that would otherwise scan every state still alive (1.1 s in a profile
        # of issue 13's log's first 400,000 lines).
        if keep is not None:
            keep.append((states, written, pending, carried))
        del states, written, pending, carried
    return report


@contextmanager
def _cyclic_gc_off() -> Iterator[None]:
    """The cyclic garbage collector off for the run (ADR 0038): what a backfill builds (states,
    pendings, decoded events) is acyclic and freed by reference counting, and every container
    it keeps was otherwise scanned once by a young-generation collection (3.5 % of the CPU on a
    quarter of issue 13's log). A test checks that a backfill leaves no cyclic garbage."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _write_span(
    store: FeatureStore,
    states: dict[str, UserState],
    written: dict[str, Written],
    pending: dict[str, Pending],
) -> int:
    """Write every user touched in the span, in user-id order, `WRITE_CHUNK` users a call.

    A chunk is written by a writer thread while this one builds the next (ADR 0043): the store
    call waits for Redis or runs SQLite's statements without the GIL, so that wait overlaps
    `build_write`. Chunks still land one after the other, in the same order; a store error
    is raised here, at the latest when the next chunk is handed over."""
    writes: list[UserWrite] = []
    count = 0
    with ThreadPoolExecutor(1, thread_name_prefix="backfill-write") as writer:
        landing: Future[list[str]] | None = None
        # In user-id order (ADR 0047): SQLite's rows are keyed by user id, so consecutive
        # writes land in neighbouring B-tree pages (0.66x the SQLite write a user against
        # first-touch order); the store ends the same whatever the order.
        for user_id in sorted(pending):
            user = pending[user_id]
            write = build_write(states[user_id], user, written=written[user_id])
            if write is not None:
                writes.append(write)
                if len(writes) == WRITE_CHUNK:
                    if landing is not None:
                        landing.result()
                    landing = writer.submit(store.write_batch, writes)
                    count += len(writes)
                    writes = []
        if landing is not None:
            landing.result()
    if writes:
        store.write_batch(writes)
        count += len(writes)
    return count


_held_line: Callable[[Accepted], Any] = attrgetter("ingest_ms", "origin")
"""What the backfill holds of an event folded since a rebuild base: its ingest time and its
origin (path, line number, line bytes: made by the decoder anyway), not the decoded event.
The decoded event is then freed right after its fold, while it is still in the CPU's caches,
instead of long after (ADR 0038 measured about 5 us an event freed late), and a held event
costs about a quarter of the memory."""


def _line_again(held: tuple[int, tuple[str, int, bytes]]) -> Accepted:
    """The `Accepted` of a held line (`_held_line`), decoded again for a rebuild (rare: only
    after a fold raised). The line was accepted with an earlier clock, and the only rule that
    depends on the clock (not more than a day in the future) only accepts more as it moves:
    the same event, kind and time."""
    ingest_ms, (path, line_no, line) = held
    record = decode_line(path, line_no, line, ingest_ms=ingest_ms)
    assert isinstance(record, Accepted), record
    return record


def _trim(pending: dict[str, Pending], carried: dict[str, Pending], budget: int) -> int:
    """Drop rebuild bases, the largest holders first, until those of `pending` and `carried`
    hold at most `budget` events; return the events they then hold. A carried base dropped is
    its whole entry (a carried `Pending` holds nothing else in the backfill)."""
    held = {user_id: user.held() for user_id, user in pending.items()}
    held.update((user_id, user.held()) for user_id, user in carried.items())
    total = sum(held.values())
    if total <= budget:
        return total
    for user_id in sorted(held, key=held.__getitem__, reverse=True):
        user = pending.get(user_id)
        if user is None:
            del carried[user_id]
        else:
            user.forget_base()
        total -= held[user_id]
        if total <= budget:
            break
    return total


_USER_ID = re.compile(rb'"userId"\s*:\s*"([A-Za-z0-9_.:-]{1,128})"')


def user_partition(user_id: str, partitions: int) -> int:
    """Which of `partitions` owns a user: stable across processes and runs (crc32, not hash())."""
    return zlib.crc32(user_id.encode()) % partitions


def line_owner(line: bytes, partitions: int) -> int | None:
    """The partition of a line's user read from its bytes without decoding, or None when the
    bytes do not say it unambiguously (no `"userId"` or several): then the line is decoded."""
    if b"\\u" in line:  # an escaped key could spell "userId" in a way the pattern misses
        return None
    found = _USER_ID.findall(line)
    if len(found) != 1:
        return None
    return user_partition(found[0].decode(), partitions)


def _mine(record: Accepted | Rejected, owner: int | None, partition: tuple[int, int]) -> bool:
    """A decoded line is partition i's when its event's user is, or (a reject) when its bytes
    named partition i's user, or (a reject naming nobody) when i is 0."""
    if isinstance(record, Rejected):
        return (0 if owner is None else owner) == partition[0]
    return user_partition(record.event.user_id, partition[1]) == partition[0]
