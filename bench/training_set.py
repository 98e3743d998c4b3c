"""`oo-features training-set` throughput: events/s on one core over a generated log and spine.

    nice -n 19 .venv/bin/python bench/training_set.py [--users 1000] [--days 100] [--rows 10000]

Generates (once, cached under .oo/bench/) a log of `--users` x `--days` (about 10 events a
user a day, 5 % delivered out of order, 2 % duplicated) and a spine of `--rows` rows: random
users of the log, `as_of` uniform over the log's time span. Then runs `flows.training_set` in
this process, `--runs` times, and prints per run: events, rows, seconds, events/s (lines of
the log over the whole run: reading, decoding, folding, writing the rows), refolds, folds,
peak RSS, then a bare `decode_line` pass and the flow's plain loop (`backfill` into no
store: decode, fold, write step) over the same log right after; the ratios to those survive
a loaded machine better than events/s. Target (issue 12): >= 30,000 events/s over 1,000,000 events and 10,000 rows.

    nice -n 19 .venv/bin/python bench/training_set.py --against /tmp/base-worktree --pairs 2

`--against TREE` instead runs `training_set` alone in child processes, this tree (B) and
TREE (A) alternately (A B, then B A, ...), `--pairs` times each, and prints each run's
events/s and CPU seconds and the median CPU ratio B/A: a change's effect measured side by
side, which survives a shared machine better than absolutes.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.runtime import tune_gc
from flows.training_set import training_set
from oo_features.generate import ChaosOptions, write_jsonl


def prepare(users: int, days: int, rows: int, seed: int) -> tuple[Path, Path, int]:
    where = Path(".oo/bench")
    where.mkdir(parents=True, exist_ok=True)
    log = where / f"ts-{users}u-{days}d-{seed}.jsonl"
    if not log.exists():
        with log.open("w") as out:
            write_jsonl(
                out, users, days, seed, chaos=ChaosOptions(out_of_order=0.05, duplicates=0.02)
            )
    ids: set[str] = set()
    lo, hi, lines = "9999", "0000", 0
    with log.open() as handle:
        for line in handle:
            lines += 1
            e = json.loads(line)
            ids.add(e["userId"])
            lo, hi = min(lo, e["occurredAt"]), max(hi, e["occurredAt"])
    from flows.training_set import parse_as_of

    rng = random.Random(seed)
    start, end = parse_as_of(lo), parse_as_of(hi)
    spine = where / f"ts-{users}u-{days}d-{seed}-{rows}.spine.jsonl"
    users_sorted = sorted(ids)
    with spine.open("w") as out:
        for _ in range(rows):
            ms = rng.randint(start, end)
            as_of = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + "Z"
            out.write(json.dumps({"user_id": rng.choice(users_sorted), "as_of": as_of}) + "\n")
    return log, spine, lines


def decode_only(log: Path) -> float:
    """Seconds of a bare pass of `decode_line` over the log (the floor of any reader)."""
    from connectors.records import decode_line

    started = time.perf_counter()
    now_s = time.time()
    name = str(log)
    with log.open("rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            decode_line(name, line_no, line, ingest_ms=0, now_s=now_s)
    return time.perf_counter() - started


class _NoStore:
    """A store that takes writes and keeps nothing: `backfill` then is decode + fold + write step."""

    def write_batch(self, writes: list, *, now_ms: int | None = None) -> list[str]:  # type: ignore[type-arg]
        return []


def plain_loop(log: Path) -> tuple[float, float]:
    """Wall and CPU seconds of `flows.backfill.backfill` of the log into no store: the flow's
    own per-event work (decode, fold, write step), the yardstick of the flow benchmarks."""
    from flows.backfill import backfill

    started, cpu0 = time.perf_counter(), time.process_time()
    backfill(log, _NoStore(), rejects_path=log.with_suffix(".plain.rejects.jsonl"))  # type: ignore[arg-type]
    return time.perf_counter() - started, time.process_time() - cpu0


CHILD = r"""
import io, json, sys, time
from flows.runtime import tune_gc
from flows.training_set import training_set
log, spine = sys.argv[1], sys.argv[2]
tune_gc()
started, cpu0 = time.perf_counter(), time.process_time()
report = training_set(log, spine, io.StringIO(), rejects_path=log + ".ab.rejects.jsonl")
print(json.dumps({"lines": report.lines, "rows": report.rows,
                  "wall": time.perf_counter() - started, "cpu": time.process_time() - cpu0}))
"""


def against(tree: Path, log: Path, spine: Path, pairs: int) -> None:
    """Interleaved child runs of `training_set` in this tree (B) and `tree` (A)."""
    import statistics
    import subprocess

    here = Path(__file__).resolve().parents[1]
    trees = {"A": tree.resolve(), "B": here}
    cpu: dict[str, list[float]] = {"A": [], "B": []}
    for i in range(pairs):
        for name in ("A", "B") if i % 2 == 0 else ("B", "A"):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(log.resolve()), str(spine.resolve())],
                cwd=trees[name],
                env={**__import__("os").environ, "PYTHONPATH": str(trees[name])},
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            cpu[name].append(r["cpu"])
            print(
                f"  pair {i} {name}: {r['lines']} events, {r['rows']} rows, {r['wall']:.1f} s, "
                f"{r['lines'] / r['wall']:,.0f} events/s, CPU {r['cpu']:.1f} s "
                f"({r['lines'] / r['cpu']:,.0f} events per CPU second)",
                flush=True,
            )
    a, b = statistics.median(cpu["A"]), statistics.median(cpu["B"])
    print(f"median CPU: A {a:.1f} s, B {b:.1f} s; B/A {b / a:.2f} ({a / b:.2f}x as fast)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--against", type=Path, help="a tree to compare with (A), interleaved")
    parser.add_argument("--pairs", type=int, default=2, help="runs per tree with --against")
    args = parser.parse_args()
    log, spine, lines = prepare(args.users, args.days, args.rows, args.seed)
    if args.against is not None:
        against(args.against, log, spine, args.pairs)
        return
    tune_gc()
    print(f"log {log} ({lines} lines), spine {spine} ({args.rows} rows)")
    for run in range(args.runs):
        out = io.StringIO()
        started, cpu0 = time.perf_counter(), time.process_time()
        report = training_set(log, spine, out, rejects_path=log.with_suffix(".rejects.jsonl"))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        del out
        cpu1 = time.process_time()
        bare = decode_only(log)
        bare_cpu = time.process_time() - cpu1
        loop, loop_cpu = plain_loop(log)
        print(
            f"run {run + 1}: {report.lines} events, {report.rows} rows, {seconds:.1f} s, "
            f"{report.lines / seconds:,.0f} events/s (CPU {cpu:.1f} s: "
            f"{report.lines / cpu:,.0f} events per CPU second), refolds {report.refolds}, "
            f"folds {report.folded}, peak RSS {rss_mb:,.0f} MB; bare decode pass right after: "
            f"{bare:.1f} s, {report.lines / bare:,.0f} events/s (CPU {bare_cpu:.1f} s) "
            f"(training-set / decode: wall {seconds / bare:.2f}, CPU {cpu / bare_cpu:.2f}); "
            f"plain loop (backfill into no store) right after: {loop:.1f} s, "
            f"{report.lines / loop:,.0f} events/s, CPU {loop_cpu:.1f} s "
            f"(training-set / plain loop: wall {seconds / loop:.2f}, CPU {cpu / loop_cpu:.2f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
