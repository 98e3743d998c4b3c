"""CPU of the training set's read phase (`flows.training_set._read_events`), this checkout against
a base commit, interleaved in one process.

    nice -n 19 .venv/bin/python bench/training_read_ab.py --base 65eb481 --rounds 3

Loads the base commit's `flows/training_set.py` (from git; its imports resolve to this
checkout) beside this checkout's, and reads `bench/training_set.py`'s log (generate it first
with that script) with the spine's users, each side in turn (A B, then B A, ...), measuring
process CPU time. The read phase alone resolves what the whole run's spread (±10-15 % on a
shared machine) hides. Prints each run, the medians and the paired B/A ratios.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import inspect
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.records import RejectsFile  # noqa: E402
from flows import training_set as new  # noqa: E402
from flows.runtime import tune_gc  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="65eb481", help="the commit to compare with (A)")
    parser.add_argument("--log", type=Path, default=ROOT / ".oo/bench/ts-1000u-100d-1.jsonl")
    parser.add_argument(
        "--spine", type=Path, default=ROOT / ".oo/bench/ts-1000u-100d-1-10000.spine.jsonl"
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side")
    args = parser.parse_args()
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{args.base}:flows/training_set.py"],
        capture_output=True,
        check=True,
    ).stdout
    spec = importlib.util.spec_from_loader("training_set_base", loader=None)
    assert spec is not None
    base = importlib.util.module_from_spec(spec)
    sys.modules["training_set_base"] = base  # dataclasses look their module up
    exec(compile(source, "training_set_base", "exec"), base.__dict__)
    spine = new.read_spine(args.spine)
    horizons: dict[str, int] = {}
    for row in spine:
        horizons[row.user_id] = max(row.as_of_ms, horizons.get(row.user_id, row.as_of_ms))
    sides = {"A": base, "B": new}
    tune_gc()
    now_s = time.time()
    cpu: dict[str, list[float]] = {"A": [], "B": []}
    for i in range(args.rounds):
        for name in ("A", "B") if i % 2 == 0 else ("B", "A"):
            module = sides[name]
            read = module._read_events
            second = list(inspect.signature(read).parameters)[1]
            users = set(horizons) if second == "wanted" else horizons  # before ADR 0032: a set
            with RejectsFile("/tmp/training_read_ab.rejects.jsonl") as rejects:
                gc.collect()
                started = time.process_time()
                kept = read(
                    args.log,
                    users,
                    module.TrainingReport(),
                    rejects,
                    None,
                    int(now_s * 1000),
                    now_s,
                )
                cpu[name].append(time.process_time() - started)
            del kept
            print(f"round {i} {name}: CPU {cpu[name][-1]:.2f} s", flush=True)
    a, b = statistics.median(cpu["A"]), statistics.median(cpu["B"])
    ratios = [round(y / x, 3) for x, y in zip(cpu["A"], cpu["B"], strict=True)]
    print(f"read phase median CPU: A {a:.2f} s, B {b:.2f} s, B/A {b / a:.2f}; paired B/A {ratios}")


if __name__ == "__main__":
    main()
