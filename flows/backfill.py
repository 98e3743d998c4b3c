"""Batch backfill: the features of an event log, with the same code and the same writes as the stream.

Events are taken in file order, in batches of lines as the flow's file source
reads them; within a batch each user's events are folded in order and written
once, exactly as the streaming flow does. No Bytewax: a plain loop.
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from connectors.bytewax_io import LINES_PER_BATCH
from connectors.jsonl import rejects_path_for
from connectors.records import Accepted, Rejected, RejectsFile, decode_line
from connectors.store.base import FeatureStore
from features.state import UserState
from flows.folding import Written, fold_batch


@dataclass(slots=True)
class BackfillReport:
    lines: int = 0
    accepted: int = 0
    rejected: int = 0
    users: int = 0
    writes: int = 0


def _batches(path: Path) -> Iterator[list[tuple[int, bytes]]]:
    # Bytes, like the flow's file source: a line that is not UTF-8 is that line's reject.
    with path.open("rb") as handle:
        batch: list[tuple[int, bytes]] = []
        for line_no, line in enumerate(handle, start=1):
            batch.append((line_no, line))
            if len(batch) == LINES_PER_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch


def backfill(
    path: str | Path,
    store: FeatureStore,
    *,
    rejects_path: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    partition: tuple[int, int] | None = None,
) -> BackfillReport:
    """Fold every event of `path` into per-user state and write the features to `store`.

    With `partition=(i, n)`, only the users of partition `i` of `n` (`user_partition`) are
    folded and written, and a line that is not an event is a reject of partition 0 only:
    `n` such runs over one file write what one run writes (flows/backfill_processes.py).
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(
            f"event log {source} "
            + ("is a directory, not a file" if source.is_dir() else "does not exist")
        )
    rejects_file = rejects_path_for(source, rejects_path)
    states: dict[str, UserState] = {}
    written: dict[str, Written] = {}  # each user's write dedupe (this run is the only writer)
    report = BackfillReport()
    with RejectsFile(rejects_file) as rejects:
        for batch in _batches(source):
            now_s = time.time()
            per_user: dict[str, list[Accepted]] = {}
            owner: int | None = None
            for line_no, line in batch:
                if partition is not None:
                    owner = line_owner(line, partition[1])
                    if owner is not None and owner != partition[0]:
                        continue
                record = decode_line(
                    str(source), line_no, line, ingest_ms=int(now_s * 1000), now_s=now_s
                )
                if record is None:
                    continue
                if partition is not None and not _mine(record, owner, partition):
                    continue
                if isinstance(record, Rejected):
                    report.rejected += 1
                    rejects.add(record)
                    continue
                report.accepted += 1
                per_user.setdefault(record.event.user_id, []).append(record)
            writes = []
            failed: list[Rejected] = []
            for user_id, events in per_user.items():
                state = states.get(user_id)
                if state is None:
                    state = states[user_id] = UserState(user_id)
                    written[user_id] = {}
                write = fold_batch(state, events, failed=failed, written=written[user_id])
                if write is not None:
                    writes.append(write)
            for record in failed:  # folding raised: the event is a reject, the state as before
                report.rejected += 1
                report.accepted -= 1
                rejects.add(record)
            if writes:
                store.write_batch(writes)
                report.writes += len(writes)
            report.lines += len(batch)
            if progress is not None:
                progress(len(batch))
    report.users = len(states)
    return report


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
