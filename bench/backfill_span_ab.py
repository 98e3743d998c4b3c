"""Backfill CPU with and without the per-user span rule (ADR 0030), interleaved in one process.

    .venv/bin/python bench/backfill_span_ab.py LOG 0 16 0 16

Runs `flows.backfill.backfill(LOG, <fresh SQLite file>, span_lines_per_user=N)` for each N given,
in order, and prints lines, writes, CPU time (`time.process_time`) per line and wall events/s.
The stores are temporary files, deleted afterwards.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.store import open_store
from flows.backfill import backfill
from flows.runtime import tune_gc


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    log, factors = argv[0], [int(x) for x in argv[1:]]
    tune_gc()
    with tempfile.TemporaryDirectory(prefix="oo-span-ab-") as where:
        for run, per_user in enumerate(factors):
            store = open_store(f"sqlite:///{where}/run{run}.db")
            cpu, wall = time.process_time(), time.perf_counter()
            report = backfill(log, store, span_lines_per_user=per_user)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            store.close()
            print(
                f"span_lines_per_user={per_user}: {report.lines:,} lines, {report.writes:,} "
                f"writes, CPU {cpu:.1f} s = {1e6 * cpu / report.lines:.1f} us a line, wall "
                f"{wall:.1f} s = {report.lines / wall:,.0f} events/s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
