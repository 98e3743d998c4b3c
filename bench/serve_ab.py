"""The API's latency in two source trees, interleaved: `bench/serve.py --quick` of tree A,
then of tree B, `--rounds` times (ABBA order, so neither tree always runs first).

Each run is that tree's own `bench/serve.py` (its API process runs from the tree's folder, so
it serves the tree's code) against the same local Redis and Kafka; the figures compared are
the ones the issue's speed rows use: `GET /v1/users/{id}/features` p50/p99 at 500/s (client
side, open loop), its server-side mean (the API's histogram), `POST /v1/recommend` p99 at 200/s, and the highest
step rate whose features p99 stays under 10 ms. Medians per tree, and B/A.

    .venv/bin/python bench/serve_ab.py --a /tmp/base --b . --rounds 3

`--loop` compares issue 12's batch read instead: each tree's `serve.py --loop --rounds 0
--duration D --users U` (`POST /v1/features/batch` of 100 users at 20/s, after a /health
baseline at 20/s): batch p50/p99 and the API's CPU per batch call.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

FIGURES = {
    "features p50 ms": lambda r: r["features_500"]["p50"],
    "features p99 ms": lambda r: r["features_500"]["p99"],
    "features server mean ms": lambda r: _server_mean(r["features_500_server"]),
    "recommend p99 ms": lambda r: r["recommend_200"]["p99"],
    "max rate, features p99 <= 10 ms": lambda r: r.get("max_rate_p99_10ms") or 0,
}


LOOP_FIGURES = {
    "batch p50 ms": lambda r: r["batch_20"]["p50"],
    "batch p99 ms": lambda r: r["batch_20"]["p99"],
    "batch max ms": lambda r: r["batch_20"].get("max", float("nan")),
    "batch API CPU ms/call": lambda r: r["batch_20"]["api_cpu_ms_per_req"],
    "health p99 ms": lambda r: r["health_20"]["p99"],
}


def _server_mean(summary: Any) -> float:
    """The mean of the API's own request histogram ("n 12000, mean 1.23 ms, ...")."""
    match = re.search(r"mean ([0-9.]+) ms", str(summary))
    return float(match.group(1)) if match else float("nan")


def _run(tree: Path, out: Path, loop: list[str] | None = None) -> dict[str, Any]:
    cmd = [sys.executable, str(tree / "bench" / "serve.py"), "--json", str(out)]
    cmd += ["--quick"] if loop is None else ["--loop", "--rounds", "0", *loop]
    done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return dict(json.loads(out.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="source tree A (before)")
    parser.add_argument("--b", type=Path, required=True, help="source tree B (after)")
    parser.add_argument("--rounds", type=int, default=3, help="A/B pairs (default 3)")
    parser.add_argument("--loop", action="store_true", help="the batch read of issue 12")
    parser.add_argument("--duration", default="10", help="--loop: seconds per phase (10)")
    parser.add_argument("--users", default="2000", help="--loop: users seeded (2000)")
    args = parser.parse_args(argv)
    trees = {"A": args.a.resolve(), "B": args.b.resolve()}
    chosen = LOOP_FIGURES if args.loop else FIGURES
    loop = ["--duration", args.duration, "--users", args.users] if args.loop else None
    figures: dict[str, dict[str, list[float]]] = {
        name: {key: [] for key in chosen} for name in trees
    }
    with tempfile.TemporaryDirectory(prefix="serve-ab-") as folder:
        for round_no in range(args.rounds):
            order = ["A", "B"] if round_no % 2 == 0 else ["B", "A"]
            for name in order:
                result = _run(trees[name], Path(folder) / f"{name}{round_no}.json", loop)
                for key, pick in chosen.items():
                    figures[name][key].append(float(pick(result)))
                shown = ", ".join(f"{k} {v[-1]:.2f}" for k, v in figures[name].items())
                print(f"round {round_no + 1} {name}: {shown}", flush=True)
    print(f"\nmedians of {args.rounds} (A = {trees['A']}, B = {trees['B']})")
    print("| figure | A | B | B/A |")
    print("|---|---|---|---|")
    for key in chosen:
        a = statistics.median(figures["A"][key])
        b = statistics.median(figures["B"][key])
        print(f"| {key} | {a:.2f} | {b:.2f} | {b / a if a else float('nan'):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
