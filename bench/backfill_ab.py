"""`oo-features backfill` of two source trees, interleaved: CPU time per event and wall time.

Runs the real command (`python -m oo_features.cli backfill LOG --processes N`, a subprocess
with `PYTHONPATH=<tree>` and the tree as working directory) over one event log, alternating
A B B A ... `--rounds` times per tree and configuration, each run into a fresh SQLite file (and,
with `--redis`, under a fresh key prefix of the local Redis, deleted afterwards). For each run it
records the wall time and the CPU time of the command and its children (`getrusage`), so the
figures that survive a shared machine are CPU microseconds per event and the ratios B/A of
interleaved runs; wall events/s is printed beside them with the load average. Each tree's
fixed cost (start-up, imports: the same command over the log's first line, the lesser of two
runs) is subtracted once from its CPU figures (`--processes N` forks its children after the
imports); wall figures are whole runs.

    .venv/bin/python bench/backfill_ab.py --a /tmp/base-tree --b . --log events.jsonl
    .venv/bin/python bench/backfill_ab.py --a . --b . --log events.jsonl --processes 1 2

`--a` and `--b` may be the same tree (e.g. to compare `--processes 1` with `2` only).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(tree: Path, log: Path, url: str, prefix: str, processes: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and its children) of one backfill."""
    cmd = [sys.executable, "-m", "oo_features.cli", "backfill", str(log), "--store-url", url,
           "--key-prefix", prefix, "--processes", str(processes),
           "--rejects", str(log.parent / f"{prefix}.rejects")]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("OO_")}
    env["PYTHONPATH"] = str(tree)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = os.times().elapsed
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = os.times().elapsed - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):  # 1: the log had rejected lines
        raise SystemExit(f"backfill of {tree} exited {done.returncode}:\n{done.stderr[-3000:]}")
    (log.parent / f"{prefix}.rejects").unlink(missing_ok=True)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _redis_url() -> str:
    sys.path.insert(0, str(ROOT))
    from oo_features import services as oo_services

    state = oo_services.state_dir()
    endpoints = oo_services.running_endpoints(state) or oo_services.up(state)
    return endpoints.redis_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="source tree A (before)")
    parser.add_argument("--b", type=Path, required=True, help="source tree B (after)")
    parser.add_argument("--log", type=Path, required=True, help="event log (JSONL)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per tree and configuration")
    parser.add_argument("--processes", type=int, nargs="+", default=[1])
    parser.add_argument("--redis", action="store_true", help="also into the local Redis")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args(argv)
    log = args.log.resolve()
    events = sum(1 for _ in log.open("rb"))
    trees = {"A": args.a.resolve(), "B": args.b.resolve()}
    redis_url = _redis_url() if args.redis else None
    kinds = ([] if args.skip_sqlite else ["sqlite"]) + (["redis"] if redis_url else [])
    work = Path(tempfile.mkdtemp(prefix="bench-backfill-ab-"))
    runs: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    print(f"log: {events:,} lines; load {os.getloadavg()[0]:.1f} at start", flush=True)
    first = work / "first-line.jsonl"
    with log.open("rb") as handle:
        first.write_bytes(handle.readline())
    fixed = {}
    for name, tree in trees.items():
        fixed[name] = min(
            _run(tree, first, f"sqlite:///{work}/fixed{i}{name}.db", f"fixed{i}{name}", 1)[1]
            for i in range(2)
        )
        print(f"fixed cost of {name}: {fixed[name]:.2f} CPU s", flush=True)
    for i in range(args.rounds):
        for kind in kinds:
            for processes in args.processes:
                for name in ("A", "B") if i % 2 == 0 else ("B", "A"):
                    prefix = f"bab{uuid.uuid4().hex[:8]}"
                    url = f"sqlite:///{work / prefix}.db" if kind == "sqlite" else str(redis_url)
                    wall, cpu = _run(trees[name], log, url, prefix, processes)
                    cpu -= fixed[name]  # `--processes N` forks: the children share it
                    runs.setdefault((kind, name, processes), []).append((wall, cpu))
                    if kind == "redis":
                        sys.path.insert(0, str(ROOT))
                        from oo_features.services import delete_keys

                        delete_keys(str(redis_url), prefix)
                    for f in work.glob(prefix + ".db*"):
                        f.unlink()
                    print(f"round {i} {kind} -p {processes} {name}: {events / wall:>8,.0f} "
                          f"events/s wall ({wall:.1f} s), {1e6 * cpu / events:6.1f} CPU us/event, "
                          f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    print("\nmedians (wall events/s; CPU us/event):")
    for (kind, name, processes), values in sorted(runs.items()):
        wall = statistics.median(w for w, _ in values)
        cpu = statistics.median(c for _, c in values)
        print(f"  {kind:<6} -p {processes} {name}: {events / wall:>9,.0f} events/s; "
              f"{1e6 * cpu / events:6.1f} CPU us/event ({events / cpu:,.0f} events per CPU s)")  # fmt: skip
    for kind in kinds:
        for processes in args.processes:
            a, b = runs[(kind, "A", processes)], runs[(kind, "B", processes)]
            cpu_ratio = statistics.median(bc / ac for (_, ac), (_, bc) in zip(a, b, strict=True))
            wall_ratio = statistics.median(aw / bw for (aw, _), (bw, _) in zip(a, b, strict=True))
            print(f"  {kind} -p {processes}: CPU B/A {cpu_ratio:.3f}, speed B/A {wall_ratio:.2f} "
                  "(medians of per-round ratios)")  # fmt: skip
        if len(args.processes) > 1:
            one, many = min(args.processes), max(args.processes)
            for name in ("A", "B"):
                ratio = statistics.median(
                    w1 / wn
                    for (w1, _), (wn, _) in zip(
                        runs[(kind, name, one)], runs[(kind, name, many)], strict=True
                    )
                )
                print(f"  {kind} {name}: -p {many} / -p {one} speed {ratio:.2f} (per-round median)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
