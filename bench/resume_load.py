"""Bytewax's own resume load, with and without the planner statistic of ADR 0024.

No Kafka, no store, no engine code on the path: a one-step Bytewax dataflow keeps a random
`--blob`-byte state for each of `--keys` keys in `--partitions` recovery partitions (built once
under `--dir`, statistic removed), then resumes a fresh copy of it `--trials` times each way
(plain, then steered with `flows.recovery_dir.steer_resume_query`), in turn, with one more
item to process. It prints the CPU time of each resume (`time.process_time()`, this process:
Bytewax runs in it) and the median of the per-trial ratios steered / plain: the measurement
of Bytewax's bundled SQLite that the unit test's plan check (Python's SQLite) cannot give.

    .venv/bin/python bench/resume_load.py --keys 20000 --partitions 12 --trials 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.recovery_dir import steer_resume_query  # noqa: E402


def _flow(items: list[tuple[str, int]], out: list[tuple[str, int]], blob: int) -> Dataflow:
    flow = Dataflow("resume_load")
    keyed = op.input("inp", flow, TestingSource(items))

    def keep(state: bytes | None, value: int) -> tuple[bytes | None, int]:
        return (state if value == 0 else os.urandom(blob)), 1

    op.output("out", op.stateful_map("state", keyed, keep), TestingSink(out))
    return flow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--blob", type=int, default=10_000, help="bytes of state per key")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--dir", help="work directory (default: a temporary one, removed)")
    args = parser.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="oo-resume-load-"))
    pristine = root / "pristine"
    first = [(f"u{k:06d}", 1) for k in range(args.keys)]
    try:
        if not pristine.exists():
            pristine.mkdir(parents=True)
            init_db_dir(pristine, args.partitions)
            run_main(_flow(first, [], args.blob), recovery_config=RecoveryConfig(pristine))
            for part in pristine.glob("part-*.sqlite3"):
                with sqlite3.connect(part) as conn:
                    conn.execute("DROP TABLE IF EXISTS sqlite_stat1")
                conn.close()
        probe = [*first, (first[1][0], 0)]  # the source resumes after `first`: one item
        cpu: dict[bool, list[float]] = {False: [], True: []}
        for trial in range(args.trials):
            for steered in (False, True):
                run = root / "run"
                shutil.rmtree(run, ignore_errors=True)
                shutil.copytree(pristine, run)
                out: list[tuple[str, int]] = []
                t = time.process_time()
                if steered:
                    steer_resume_query(run)
                run_main(_flow(probe, out, args.blob), recovery_config=RecoveryConfig(run))
                cpu[steered].append(time.process_time() - t)
                assert out == [(first[1][0], 1)], out
                name = "steered" if steered else "plain"
                print(f"trial {trial} {name:>7}: resume CPU {cpu[steered][-1]:.2f} s", flush=True)
        ratios = [s / p for p, s in zip(cpu[False], cpu[True], strict=True)]
        print(
            f"{args.keys:,} keys x {args.blob:,} B in {args.partitions} partitions: resume CPU "
            f"median plain {statistics.median(cpu[False]):.2f} s, steered "
            f"{statistics.median(cpu[True]):.2f} s; steered / plain (median of per-trial "
            f"ratios) {statistics.median(ratios):.2f}; load {os.getloadavg()[0]:.1f}"
        )
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
