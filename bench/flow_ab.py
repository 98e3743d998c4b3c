"""Flow throughput of two source trees, interleaved: did a change slow the flow down?

Pre-loads one topic pair with `--events` generator events (as `bench/flow.py` does), then runs
`oo-features flow --stop-at-end` over it `--pairs` times per tree, alternating A B B A A B ...,
each run with `PYTHONPATH=<tree>` and its own key prefix. Each tree's fixed cost (the same
command over empty topics) is measured once and subtracted: the figure is net events/s, and
the median per tree is compared.

    .venv/bin/python bench/flow_ab.py --a /path/to/base-worktree --b . --events 300000

With `--agents-of-a`, B's flow runs with its agent registry narrowed to the agents A's tree
registers (before anything reads the registry): issue 10 asks what the fault handling costs
the flow, and a tree with an agent more (the sixth agent of issue 13) also pays that agent's
fold and outputs. Both figures are worth having; say which one a row gives.

Kafka/Redis: the local services (`oo_features.services`). Topics and keys are deleted
afterwards.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.flow_loops import preload  # noqa: E402
from bench.flow_run import _flow_cmd  # noqa: E402
from connectors import topics  # noqa: E402
from connectors.kafka import EventProducer, ensure_topics  # noqa: E402
from oo_features import services as oo_services  # noqa: E402
from oo_features.services import delete_keys, delete_topics  # noqa: E402

# Run as `python -c NARROWED AGENT_IDS flow ...`: the CLI with the registry cut to AGENT_IDS.
NARROWED = """
import runpy, sys
import features.registry as registry
keep = set(sys.argv.pop(1).split(","))
for agent_id in [a for a in registry.REGISTRY if a not in keep]:
    del registry.REGISTRY[agent_id]
sys.argv[0] = "oo_features.cli"
runpy.run_module("oo_features.cli", run_name="__main__", alter_sys=True)
"""


def _agent_ids(tree: Path) -> list[str]:
    """The agent ids `tree` registers (its own registry, in a child)."""
    done = subprocess.run(
        [sys.executable, "-c", "from features.registry import REGISTRY; print(*REGISTRY)"],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


def _run(
    tree: Path,
    bootstrap: str,
    store: str,
    topic_prefix: str,
    key_prefix: str,
    agents: list[str] | None = None,
) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the flow process) of one run to the end; `agents`: the
    registry narrowed to these ids."""
    cmd = _flow_cmd(bootstrap, store, topic_prefix, key_prefix, stop=True, extra=[])
    if agents is not None:
        assert cmd[1:3] == ["-m", "oo_features.cli"]
        cmd = [cmd[0], "-c", NARROWED, ",".join(agents), *cmd[3:]]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"flow of {tree} exited {done.returncode}:\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="source tree A (before)")
    parser.add_argument("--b", type=Path, required=True, help="source tree B (after)")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--users", type=int, default=6_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pairs", type=int, default=3, help="runs per tree")
    parser.add_argument(
        "--agents-of-a",
        action="store_true",
        help="run B with only the agents A's tree registers (the module docstring says why)",
    )
    args = parser.parse_args(argv)
    trees = {"A": args.a.resolve(), "B": args.b.resolve()}
    agents: dict[str, list[str] | None] = {"A": None, "B": None}
    if args.agents_of_a:
        of_a = agents["B"] = _agent_ids(trees["A"])
        dropped = sorted(set(_agent_ids(trees["B"])) - set(of_a))
        print(f"B runs with A's agents {', '.join(of_a)}; without {dropped or 'none'}")
    found = oo_services.running_endpoints() or oo_services.up(echo=print)
    bootstrap, store = found.kafka_bootstrap, found.redis_url
    run = uuid.uuid4().hex[:8]
    prefix, empty = f"bab{run}.", f"bab{run}empty."
    try:
        preload(bootstrap, prefix, args.events, args.users, args.seed)
        EventProducer(bootstrap=bootstrap, topic_prefix=empty).close()
        ensure_topics(bootstrap, [empty + topics.DEADLETTER], 4)
        fixed = {
            name: _run(tree, bootstrap, store, empty, f"bab{run}e{name}", agents[name])
            for name, tree in trees.items()
        }
        print(
            f"fixed cost (empty topics, wall/CPU s): A {fixed['A'][0]:.2f}/{fixed['A'][1]:.2f}, "
            f"B {fixed['B'][0]:.2f}/{fixed['B'][1]:.2f}"
        )
        rates: dict[str, list[float]] = {"A": [], "B": []}
        cpu_us: dict[str, list[float]] = {"A": [], "B": []}
        order = [("A", "B") if i % 2 == 0 else ("B", "A") for i in range(args.pairs)]
        for i, pair in enumerate(order):
            for name in pair:
                wall, cpu = _run(
                    trees[name], bootstrap, store, prefix, f"bab{run}{name}{i}", agents[name]
                )
                rate = args.events / max(wall - fixed[name][0], 1e-3)
                us = 1e6 * max(cpu - fixed[name][1], 0.0) / args.events
                rates[name].append(rate)
                cpu_us[name].append(us)
                print(
                    f"  run {i} {name}: {wall:6.2f} s wall, {rate:9,.0f} ev/s net, "
                    f"{us:6.2f} us CPU/event net",
                    flush=True,
                )
        med = {name: statistics.median(values) for name, values in rates.items()}
        cmed = {name: statistics.median(values) for name, values in cpu_us.items()}
        print(
            f"median net ev/s: A {med['A']:,.0f}, B {med['B']:,.0f}; "
            f"B costs {100 * (1 - med['B'] / med['A']):+.1f} % (positive: slower)\n"
            f"median flow CPU per event: A {cmed['A']:.2f} us, B {cmed['B']:.2f} us; "
            f"B costs {100 * (cmed['B'] / cmed['A'] - 1):+.1f} %"
        )
    finally:
        delete_topics(bootstrap, prefix, timeout_s=30)
        delete_topics(bootstrap, empty, timeout_s=30)
        delete_keys(store, f"bab{run}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
