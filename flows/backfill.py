"""Batch backfill: the features of an event log, with the same code and the same writes as the stream.

Events are taken in file order, in batches of lines as the flow's file source
reads them; within a batch each user's events are folded in order and written
once, exactly as the streaming flow does. No Bytewax: a plain loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from connectors.bytewax_io import LINES_PER_BATCH
from connectors.folding import fold_batch
from connectors.records import Accepted, Rejected, decode_line
from connectors.store.base import FeatureStore
from features.state import UserState


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
) -> BackfillReport:
    """Fold every event of `path` into per-user state and write the features to `store`."""
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(
            f"event log {source} "
            + ("is a directory, not a file" if source.is_dir() else "does not exist")
        )
    rejects_file = Path(rejects_path) if rejects_path else Path(str(source) + ".rejects.jsonl")
    states: dict[str, UserState] = {}
    report = BackfillReport()
    with rejects_file.open("w", encoding="utf-8") as rejects:
        for batch in _batches(source):
            now_s = time.time()
            per_user: dict[str, list[Accepted]] = {}
            for line_no, line in batch:
                record = decode_line(
                    str(source), line_no, line, ingest_ms=int(now_s * 1000), now_s=now_s
                )
                if record is None:
                    continue
                if isinstance(record, Rejected):
                    report.rejected += 1
                    rejects.write(record.as_json_line() + "\n")
                    continue
                report.accepted += 1
                per_user.setdefault(record.event.user_id, []).append(record)
            writes = []
            failed: list[Rejected] = []
            for user_id, events in per_user.items():
                state = states.get(user_id)
                if state is None:
                    state = states[user_id] = UserState(user_id)
                write = fold_batch(state, events, failed=failed)
                if write is not None:
                    writes.append(write)
            for record in failed:  # folding raised: the event is a reject, the state as before
                report.rejected += 1
                report.accepted -= 1
                rejects.write(record.as_json_line() + "\n")
            if writes:
                store.write_batch(writes)
                report.writes += len(writes)
            report.lines += len(batch)
            if progress is not None:
                progress(len(batch))
    report.users = len(states)
    return report
