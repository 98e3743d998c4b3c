"""CPU cost of the fold alone (`UserState.apply`) and of a user's whole output, two trees A/B.

    nice -n 19 .venv/bin/python bench/fold_cost.py --a /tmp/base-worktree --b . \
        [--log .oo/bench/ts-150u-100d-1.jsonl] [--lines 150000] [--rounds 4]

Each round runs one child process per tree (A B, then B A, ...), with `PYTHONPATH=<tree>`
and the tree as working directory. A child decodes the first `--lines` lines of the log with
`connectors.records.decode_line` (untimed), groups them per user in log order, and then times
in CPU seconds (`time.process_time`), after `flows.runtime.tune_gc()`:

- **fold**: every user's events through a fresh `UserState.apply`, nothing else;
- **output**: `flows.folding.whole_write` of each user's state after every `--every` events
  (what a training row or an inference answer costs: all agents' parameters and snippets).

It prints both per round and the medians and minima per tree (fold in us per event, output in us per
call) and the ratio B/A: the fold's cost per event before and after a change, measured side
by side, which survives a shared machine better than absolutes. The log defaults to the one
`bench/training_set.py --users 150` generates (`.oo/bench/`), made here when missing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
from connectors.records import decode_line
from features.state import UserState
from flows.folding import whole_write
from flows.runtime import tune_gc

path, lines, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
per_user = {}
now_s = time.time()
with open(path, "rb") as handle:
    for line_no, line in enumerate(handle, start=1):
        if line_no > lines:
            break
        record = decode_line(path, line_no, line, ingest_ms=0, now_s=now_s)
        if record is not None and hasattr(record, "event"):
            record.origin = None
            per_user.setdefault(record.event.user_id, []).append(record)
tune_gc()
events = sum(len(v) for v in per_user.values())
t0 = time.process_time()
for user_id, records in per_user.items():
    apply = UserState(user_id).apply
    for record in records:
        apply(record)
fold = time.process_time() - t0
calls = 0
out_s = 0.0
for user_id, records in per_user.items():
    state = UserState(user_id)
    for at in range(0, len(records), every):
        for record in records[at : at + every]:
            state.apply(record)
        t1 = time.process_time()
        whole_write(state, computed_at_ms=0)
        out_s += time.process_time() - t1
        calls += 1
print(json.dumps({"events": events, "fold_s": fold, "calls": calls, "output_s": out_s}))
"""


def _child(tree: Path, log: Path, lines: int, every: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(log.resolve()), str(lines), str(every)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="source tree A (before)")
    parser.add_argument("--b", type=Path, required=True, help="source tree B (after)")
    parser.add_argument("--log", type=Path, default=ROOT / ".oo/bench/ts-150u-100d-1.jsonl")
    parser.add_argument("--lines", type=int, default=150_000)
    parser.add_argument("--every", type=int, default=100, help="events between two outputs")
    parser.add_argument("--rounds", type=int, default=4, help="runs per tree")
    args = parser.parse_args(argv)
    if not args.log.exists():
        sys.path.insert(0, str(ROOT))
        from oo_features.generate import ChaosOptions, write_jsonl

        args.log.parent.mkdir(parents=True, exist_ok=True)
        with args.log.open("w") as out:
            write_jsonl(out, 150, 100, 1, chaos=ChaosOptions(out_of_order=0.05, duplicates=0.02))
    trees = {"A": args.a.resolve(), "B": args.b.resolve()}
    fold: dict[str, list[float]] = {"A": [], "B": []}
    output: dict[str, list[float]] = {"A": [], "B": []}
    for i in range(args.rounds):
        for name in ("A", "B") if i % 2 == 0 else ("B", "A"):
            r = _child(trees[name], args.log, args.lines, args.every)
            fold[name].append(1e6 * r["fold_s"] / r["events"])
            output[name].append(1e6 * r["output_s"] / r["calls"])
            print(
                f"  round {i} {name}: fold {fold[name][-1]:.2f} us/event, "
                f"output {output[name][-1]:.0f} us/call ({int(r['events'])} events)",
                flush=True,
            )
    for label, pick in (("median", statistics.median), ("min", min)):
        f = {k: pick(v) for k, v in fold.items()}
        o = {k: pick(v) for k, v in output.items()}
        print(
            f"{label} fold CPU: A {f['A']:.2f} us/event, B {f['B']:.2f} us/event "
            f"(B/A {f['B'] / f['A']:.2f}); {label} output CPU: A {o['A']:.0f} us/call, "
            f"B {o['B']:.0f} us/call (B/A {o['B'] / o['A']:.2f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
