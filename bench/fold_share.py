"""The CPU share of the fold's fault handling in the flow's fold path (issue 10, "Speed").

What ADR 0011's fault handling adds to folding: a rollback base per user (a pickle of the state,
at most once per 64 events or 30 s, kept across write windows by `successor()`), the list of
events folded since it, and a `try` around `UserState.apply`. This runs, in one process, the
flow's per-batch loop without the dataflow and the store (group a batch of lines per user,
`Pending.fold` with a history marker, one `build_write` with write dedupe, `successor()`) over
the first `--lines` events of a log, decoded once beforehand (untimed), alternately with this
tree's `Pending.fold` and with the same fold minus the fault handling, `--rounds` times each,
and prints the CPU time (`time.process_time`) per event of both and the median per-round ratio.

    .venv/bin/python bench/fold_share.py --log events.jsonl --lines 150000 --rounds 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors import flow_metrics  # noqa: E402
from connectors.records import Accepted, decode_line  # noqa: E402
from features.state import UserState  # noqa: E402
from flows.folding import HistoryStart, Pending, build_write  # noqa: E402


def fold_unguarded(self: Pending, state: UserState, batch: list[Accepted]) -> None:
    """`Pending.fold` minus the fault handling: no base, no events kept, no `try`."""
    if self.history is not None:
        self.history.mark(batch)
    drops: Counter[str] | None = None
    newest = self.seen_ingest_ms
    touched = self.touched
    apply = state.apply
    for item in batch:
        ingest = item.ingest_ms
        if newest is None or ingest > newest:
            newest = ingest
        applied = apply(item)
        if not applied.admitted:
            if drops is None:
                drops = Counter()
            drops[applied.dropped or "unknown"] += 1
            continue
        self.admitted = True
        if applied.deleted:
            self.deleted_at = state.tombstone_ms
            touched.clear()
            self.feedback_changed = False
            continue
        if applied.changed:
            touched |= applied.changed
        if applied.removed:
            touched |= applied.removed
        if applied.feedback_changed:
            self.feedback_changed = True
    self.seen_ingest_ms = newest
    if drops:
        flow_metrics.count_drops(drops)


def _loop(batches: list[list[Accepted]], fold: Any) -> float:
    Pending.fold = fold  # type: ignore[method-assign]
    states: dict[str, UserState] = {}
    pendings: dict[str, Pending] = {}
    written: dict[str, dict[str, int]] = {}
    t0 = time.process_time()
    for batch in batches:
        per_user: dict[str, list[Accepted]] = {}
        for record in batch:
            per_user.setdefault(record.event.user_id, []).append(record)
        for user_id, events in per_user.items():
            state = states.get(user_id)
            if state is None:
                state = states[user_id] = UserState(user_id)
            pending = pendings.get(user_id) or Pending(history=HistoryStart())
            pending.fold(state, events)
            build_write(state, pending, computed_at_ms=0, written=written.setdefault(user_id, {}))
            pendings[user_id] = pending.successor()
    return time.process_time() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--log", type=Path, required=True, help="event log (JSONL)")
    parser.add_argument("--lines", type=int, default=150_000)
    parser.add_argument("--batch", type=int, default=5_000, help="lines per batch (flow: 5,000)")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    now = time.time()
    records = []
    with args.log.open("rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            if line_no > args.lines:
                break
            record = decode_line(str(args.log), line_no, line, ingest_ms=int(now * 1000), now_s=now)
            if isinstance(record, Accepted):
                records.append(record)
    batches = [records[i : i + args.batch] for i in range(0, len(records), args.batch)]
    guarded = Pending.fold
    cpu: dict[str, list[float]] = {"with": [], "without": []}
    for i in range(args.rounds):
        for name in ("with", "without") if i % 2 == 0 else ("without", "with"):
            cpu[name].append(_loop(batches, guarded if name == "with" else fold_unguarded))
    Pending.fold = guarded  # type: ignore[method-assign]
    n = len(records)
    ratio = statistics.median(a / b for a, b in zip(cpu["with"], cpu["without"], strict=True))
    print(f"{n:,} events, batches of {args.batch:,} lines, {args.rounds} rounds: "
          f"with fault handling {1e6 * statistics.median(cpu['with']) / n:.1f} CPU us/event, "
          f"without {1e6 * statistics.median(cpu['without']) / n:.1f}; median per-round "
          f"ratio {ratio:.3f} (fault handling {100 * (ratio - 1):+.1f} %)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
