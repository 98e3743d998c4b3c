"""Where the flow's CPU goes, per thread, for source trees run in turn over the same events.

Pre-loads one topic pair with `--events` generator events (as `bench/flow_ab.py` does), then
runs `oo-features flow --stop-at-end` of each tree (`--tree NAME=DIR`, repeatable) `--pairs`
times, alternating the order, each through a small launcher that reports, at exit, the
process's CPU, the main thread's (`time.thread_time`) and the store writer thread's (ADR 0026,
where the tree has one). `NAME` ending in `d` runs the tree with its store sink writing
directly on the worker (no writer thread), to tell the overlap's own cost from the writes'.
Figures are CPU µs an event, start-up not subtracted; medians per tree (ADR 0037).

    .venv/bin/python bench/flow_threads_ab.py --tree A=../wt-base --tree B=. --tree Bd=. \
        --events 200000 --pairs 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.flow_loops import preload  # noqa: E402
from bench.flow_run import _flow_cmd  # noqa: E402
from oo_features import services as oo_services  # noqa: E402
from oo_features.services import delete_keys, delete_topics  # noqa: E402

LAUNCHER = r"""
import atexit, os, resource, runpy, sys, time
spent = {"writer": 0.0}
import connectors.bytewax_io as bio
overlapped = getattr(bio, "_OverlappedStorePartition", None)
if overlapped is not None:
    run = overlapped._run
    def _run(self):
        try:
            run(self)
        finally:
            spent["writer"] += time.thread_time()
    overlapped._run = _run
    if os.environ.get("OO_BENCH_DIRECT_STORE"):
        from bytewax.outputs import StatefulSinkPartition
        class _Direct(StatefulSinkPartition):
            def __init__(self, writer):
                self._writer = writer
            def write_batch(self, items):
                self._writer.write_batch(items)
            def snapshot(self):
                return None
            def close(self):
                self._writer.close()
        def build_part(self, step_id, for_part, resume_state):
            return _Direct(bio._StorePartition(self.url, self.key_prefix, self.freshness, self.retry))
        bio.StoreSink.build_part = build_part
def report():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(os.environ["OO_BENCH_REPORT"], "w") as out:
        out.write(f"{usage.ru_utime + usage.ru_stime} {time.thread_time()} {spent['writer']}")
atexit.register(report)
sys.argv = ["oo-features", *sys.argv[1:]]
runpy.run_module("oo_features.cli", run_name="__main__")
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=DIR (repeat)")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=6_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pairs", type=int, default=2, help="runs per tree")
    args = parser.parse_args(argv)
    trees = {name: Path(path).resolve() for name, path in (t.split("=", 1) for t in args.tree)}
    found = oo_services.running_endpoints() or oo_services.up(echo=print)
    bootstrap, store = found.kafka_bootstrap, found.redis_url
    run = uuid.uuid4().hex[:8]
    prefix = f"bth{run}."
    rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in trees}
    try:
        preload(bootstrap, prefix, args.events, args.users, args.seed)
        names = list(trees)
        with tempfile.TemporaryDirectory() as tmp:
            launcher = Path(tmp) / "launch.py"
            launcher.write_text(LAUNCHER)
            for i in range(args.pairs):
                for name in names if i % 2 == 0 else names[::-1]:
                    cmd = _flow_cmd(
                        bootstrap, store, prefix, f"bth{run}{name}{i}", stop=True, extra=[]
                    )
                    report = Path(tmp) / f"{name}{i}.txt"
                    env = {
                        **os.environ,
                        "PYTHONPATH": str(trees[name]),
                        "OO_BENCH_REPORT": str(report),
                    }
                    if name.endswith("d"):
                        env["OO_BENCH_DIRECT_STORE"] = "1"
                    t0 = time.perf_counter()
                    done = subprocess.run(
                        [sys.executable, str(launcher), *cmd[3:]],
                        cwd=trees[name],
                        env=env,
                        capture_output=True,
                        text=True,
                    )
                    wall = time.perf_counter() - t0
                    if done.returncode != 0:
                        raise SystemExit(
                            f"flow of {name} exited {done.returncode}:\n{done.stderr[-3000:]}"
                        )
                    process, main_thread, writer = map(float, report.read_text().split())
                    rows[name].append((process, main_thread, writer))
                    us = [1e6 * v / args.events for v in (process, main_thread, writer)]
                    print(
                        f"  run {i} {name}: {wall:6.1f} s wall; CPU us/event: process {us[0]:.1f}, "
                        f"main thread {us[1]:.1f}, store writer {us[2]:.1f}, "
                        f"other threads {us[0] - us[1] - us[2]:.1f}",
                        flush=True,
                    )
        for name, values in rows.items():
            med = [1e6 * statistics.median(v[j] for v in values) / args.events for j in range(3)]
            print(
                f"median {name}: process {med[0]:.1f}, main thread {med[1]:.1f}, "
                f"store writer {med[2]:.1f} us/event"
            )
    finally:
        delete_topics(bootstrap, prefix, timeout_s=30)
        delete_keys(store, f"bth{run}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
