"""CPU cost of decode + fold + build_write per event, for two source trees, interleaved.

The flow's throughput on a shared 2-core machine swings by tens of percent between runs
(`bench/flow_ab.py`); this measures only the per-event Python work a change can add. One
topic pair is pre-loaded with `--events` generator events; then, `--rounds` times per tree
(A B B A ...), a child process with `PYTHONPATH=<tree>` consumes all of it into memory
(untimed) and times, in CPU seconds (`time.process_time`), what the flow does per batch of
5,000 messages minus the dataflow and the store: `decode_messages`, grouping per user,
`Pending.fold` (with a history marker where the tree has one) and a `build_write` per user
per batch, continuing with `pending.successor()` where the tree has it (as the flow does).
The median per tree is compared.

    .venv/bin/python bench/fold_ab.py --a /path/to/base-worktree --b . --events 200000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import inspect, json, sys, time
try:  # the tree's own helper: bench/flow.py was split after baee2a0
    from bench.flow_loops import _batches
except ImportError:
    from bench.flow import _batches
import importlib, os
# Where this tree keeps the fold (cwd is the tree): never fall through to another checkout's.
folding = importlib.import_module(
    "flows.folding" if os.path.exists("flows/folding.py") else "connectors.folding"
)
Pending, build_write = folding.Pending, folding.build_write
from connectors.kafka_source import decode_messages
from connectors.records import Accepted
from features.state import UserState

bootstrap, prefix = sys.argv[1], sys.argv[2]
batches = list(_batches(bootstrap, prefix))
tracked = "history" in inspect.signature(Pending).parameters
# Dedupe on, in both kinds of tree: a tree since ADR 0017 keeps the digests per user itself.
owned = "written" in inspect.signature(build_write).parameters
states, pendings, written = {}, {}, {}
t0 = time.process_time()
n = 0
for batch in batches:
    per_user = {}
    for user_id, record in decode_messages(batch, time.time()).records:
        if record.__class__ is Accepted:
            per_user.setdefault(user_id, []).append(record)
    for user_id, values in per_user.items():
        state = states.get(user_id)
        if state is None:
            state = states[user_id] = UserState(user_id)
        pending = pendings.get(user_id)
        if pending is None:
            pending = Pending(history=folding.HistoryStart()) if tracked else Pending()
        pending.fold(state, values)
        if owned:
            build_write(state, pending, computed_at_ms=0, written=written.setdefault(user_id, {}))
        else:
            build_write(state, pending, computed_at_ms=0)
        # As the flow does after a flush: a tree with `successor()` keeps what it carries.
        pendings[user_id] = pending.successor() if hasattr(pending, "successor") else Pending()
        n += len(values)
print(json.dumps({"events": n, "cpu_s": time.process_time() - t0, "tracked": tracked}))
"""


def _child(tree: Path, bootstrap: str, prefix: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{ROOT}"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, bootstrap, prefix],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from bench.flow_loops import _events
    from connectors.kafka import EventProducer
    from oo_features import services as oo_services
    from oo_features.services import delete_topics

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="source tree A (before)")
    parser.add_argument("--b", type=Path, required=True, help="source tree B (after)")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=4, help="runs per tree")
    args = parser.parse_args(argv)
    trees = {"A": args.a.resolve(), "B": args.b.resolve()}
    found = oo_services.running_endpoints() or oo_services.up(echo=print)
    prefix = f"bfold{uuid.uuid4().hex[:8]}."
    try:
        producer = EventProducer(bootstrap=found.kafka_bootstrap, topic_prefix=prefix)
        for event in _events(args.events, args.users, args.seed):
            producer.publish(event, validate=False)
        assert producer.flush().published == args.events
        producer.close()
        per_event: dict[str, list[float]] = {"A": [], "B": []}
        for i in range(args.rounds):
            for name in ("A", "B") if i % 2 == 0 else ("B", "A"):
                r = _child(trees[name], found.kafka_bootstrap, prefix)
                us = 1e6 * r["cpu_s"] / r["events"]
                per_event[name].append(us)
                print(f"  round {i} {name}: {us:.2f} us/event (marker: {r['tracked']})", flush=True)
        med = {k: statistics.median(v) for k, v in per_event.items()}
        print(
            f"median CPU per event: A {med['A']:.2f} us, B {med['B']:.2f} us; "
            f"B costs {100 * (med['B'] / med['A'] - 1):+.1f} % (positive: slower)"
        )
    finally:
        delete_topics(found.kafka_bootstrap, prefix, timeout_s=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
