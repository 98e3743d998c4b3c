"""The flow's per-event Python of two trees (source, fold, writes built), interleaved.

What `bench/flow_ab.py` measures end to end, without the broker, Bytewax or the store, so
the CPU of the flow's own Python can be compared on a shared machine: each child process
(`PYTHONPATH=<tree>`) drains `kafka_source._EventPartition` over generated messages held by
in-memory consumers (`bench/source_ab.py`'s), hands each batch's records per user to
`features_flow.UserLogic.on_batch` (as `fold_user_state` does), writes due users with
`on_notify` and everything left with `on_eof`, frees the users, and reports the CPU seconds
(`time.process_time`, after `flows.runtime.tune_gc()`) per message. Children alternate A B,
B A, ...; the medians and the per-round ratios B/A are printed.

    .venv/bin/python bench/flow_cpu_ab.py --a /tmp/main-tree --b . --events 200000 --rounds 6

Both trees must have this tree's `_EventPartition` and `UserLogic` signatures (main since
ADR 0037); `bench/flow_ab.py` is the end-to-end comparison with older trees.
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if "--child" not in sys.argv:  # a child imports the tree on its PYTHONPATH
    sys.path.insert(0, str(ROOT))


def _drain(logs: list[list[Any]], batch_size: int) -> tuple[float, int, int]:
    """(CPU s, records emitted, writes built) of one drain through the source and the fold."""
    from bench.source_ab import TOPICS, MemoryConsumer
    from connectors import kafka_source
    from flows import features_flow
    from flows.runtime import tune_gc

    consumers = [MemoryConsumer(log, topic) for log, topic in zip(logs, TOPICS, strict=True)]
    part = kafka_source._EventPartition(consumers, TOPICS, 0, None, batch_size, True)
    flush, catchup = timedelta(seconds=0.1), timedelta(seconds=10)
    logics: dict[str, Any] = {}
    emitted = writes = 0
    tune_gc()
    started = time.process_time()
    try:
        while True:
            batch = part.next_batch()
            emitted += len(batch)
            per_user: dict[str, list[Any]] = {}
            for key, record in batch:
                if key:
                    group = per_user.get(key)
                    if group is None:
                        per_user[key] = [record]
                    else:
                        group.append(record)
            for user, values in per_user.items():
                logic = logics.get(user)
                if logic is None:
                    logic = logics[user] = features_flow._build_logic(
                        flush, catchup, False, True, None
                    )
                logic.on_batch(values)
            now = features_flow.datetime.now(features_flow.UTC)
            for logic in logics.values():
                due = logic.notify_at()
                if due is not None and due <= now:
                    writes += len(logic.on_notify()[0])
    except StopIteration:
        pass
    for logic in logics.values():
        writes += len(logic.on_eof()[0])
    # Freeing what the users hold is part of the cost (a tree that frees late pays it here).
    logics.clear()
    return time.process_time() - started, emitted, writes


def _child(messages_file: Path, batch_size: int) -> None:
    from confluent_kafka import Message

    from bench.source_ab import TOPICS

    with messages_file.open("rb") as f:
        raw = pickle.load(f)
    logs = [
        [
            Message(
                topic=TOPICS[rank],
                partition=0,
                offset=offset,
                key=key,
                value=value,
                timestamp=(1, stamp),
            )
            for offset, (key, value, stamp) in enumerate(log)
        ]
        for rank, log in enumerate(raw)
    ]
    took, emitted, writes = _drain(logs, batch_size)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "cpu_s": took,
                "messages": sum(map(len, logs)),
                "emitted": emitted,
                "writes": writes,
                "rss_mb": rss_mb,
            }
        )
    )


def _run_child(tree: Path, messages_file: Path, batch_size: int) -> dict[str, Any]:
    from bench.tree_child import run_in_tree

    args = ["--child", str(messages_file), "--batch-size", str(batch_size)]
    return run_in_tree(__file__, tree, args, also=ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--a", type=Path, help="source tree A (before)")
    parser.add_argument("--b", type=Path, help="source tree B (after)")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=4_000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.batch_size)
        return 0
    if args.a is None or args.b is None:
        parser.error("--a and --b are required")
    from bench.source_ab import _logs

    logs = _logs(args.events, args.users)
    with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as f:
        pickle.dump([[(m.key(), m.value(), m.timestamp()[1]) for m in log] for log in logs], f)
        messages_file = Path(f.name)
    trees = {"A": args.a.resolve(), "B": args.b.resolve()}
    us: dict[str, list[float]] = {"A": [], "B": []}
    try:
        for round_ in range(args.rounds):
            for name in ("A", "B") if round_ % 2 == 0 else ("B", "A"):
                got = _run_child(trees[name], messages_file, args.batch_size)
                us[name].append(1e6 * got["cpu_s"] / got["messages"])
                print(
                    f"  round {round_} {name}: {us[name][-1]:.2f} us CPU a message "
                    f"({got['emitted']:,} emitted, {got['writes']:,} writes, max RSS {got['rss_mb']:.0f} MB)",
                    flush=True,
                )
    finally:
        messages_file.unlink()
    ratios = [b / a for a, b in zip(us["A"], us["B"], strict=True)]
    print(
        f"median CPU a message: A {statistics.median(us['A']):.2f} us, "
        f"B {statistics.median(us['B']):.2f} us; B/A per round "
        f"{', '.join(f'{r:.3f}' for r in ratios)}; median {statistics.median(ratios):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
