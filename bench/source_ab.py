"""The flow's Kafka source alone, this tree's against a base tree's, interleaved (issues 10, 14).

Drains `_EventPartition` (decode, merge of both topics, emission) over generated events held
by in-memory consumers (no broker: only the source's own Python is timed), `--rounds` times
each, alternating base and new, and prints medians of the CPU time per message and the
per-round ratio. Each drain runs in a fresh child process with `PYTHONPATH=<tree>`, so the
whole of each tree's `connectors` is what is timed; the messages are generated once, by this
tree, and handed to both.

    python bench/source_ab.py --base /tmp/base --events 200000 --rounds 7

`--base` is a checkout (`git worktree add /tmp/base <commit>`).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if "--child" not in sys.argv:  # a child imports the tree on its PYTHONPATH
    sys.path.insert(0, str(ROOT))

from confluent_kafka import KafkaError, Message, TopicPartition  # noqa: E402

from connectors import kafka_source, topics  # noqa: E402
from oo_features.generate import generate_events  # noqa: E402

TOPICS = ["b." + topics.SIGNALS, "b." + topics.FEEDBACK]


class MemoryConsumer:
    """One partition held in memory: up to `n` messages per `consume`, then its end."""

    def __init__(self, messages: list[Message], topic: str) -> None:
        self.messages = messages
        self.topic = topic
        self.position = 0
        self.eof = False

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.position = max(partitions[0].offset, 0)

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        out = self.messages[self.position : self.position + num_messages]
        self.position += len(out)
        if self.position == len(self.messages) and not self.eof:
            self.eof = True
            eof = KafkaError(KafkaError._PARTITION_EOF)
            out = [*out, Message(topic=self.topic, partition=0, offset=self.position, error=eof)]
        return out

    def get_watermark_offsets(self, tp: Any, timeout: float = 0, cached: bool = False) -> Any:
        return 0, len(self.messages)

    def close(self) -> None:
        pass


def _logs(events: int, users: int) -> list[list[Message]]:
    logs: list[list[Message]] = [[], []]
    for event in itertools.islice(generate_events(users, 400, 7), events):
        rank = 1 if topics.topic_for(event) == topics.FEEDBACK else 0
        log = logs[rank]
        stamp = event.occurred_at.ToMilliseconds()
        log.append(
            Message(
                topic=TOPICS[rank],
                partition=0,
                offset=len(log),
                key=event.user_id.encode(),
                value=event.SerializeToString(),
                timestamp=(1, stamp),
            )
        )
    return logs


def _drain(module: ModuleType, logs: list[list[Message]], batch_size: int) -> tuple[float, int]:
    consumers = [MemoryConsumer(log, topic) for log, topic in zip(logs, TOPICS, strict=True)]
    part = module._EventPartition(consumers, TOPICS, 0, None, batch_size, True)
    emitted = 0
    gc.collect()
    started = time.process_time()
    try:
        while True:
            emitted += len(part.next_batch())
    except StopIteration:
        pass
    return time.process_time() - started, emitted


def _child(messages_file: Path, batch_size: int, drains: int) -> None:
    """In a child of one tree: drain the messages `drains` times, print the least CPU."""
    with messages_file.open("rb") as f:
        raw = pickle.load(f)
    logs: list[list[Message]] = [
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
    total = sum(map(len, logs))
    best = float("inf")
    for _ in range(drains):
        took, emitted = _drain(kafka_source, logs, batch_size)
        if emitted != total:
            raise SystemExit(f"emitted {emitted} of {total} messages")
        best = min(best, took)
    print(json.dumps({"cpu_s": best, "messages": total}))


def _run_child(tree: Path, messages_file: Path, batch_size: int, drains: int) -> float:
    from bench.tree_child import run_in_tree  # the parent's: an older tree may not have it

    args = ["--child", str(messages_file), "--batch-size", str(batch_size), "--drains", str(drains)]
    result = run_in_tree(__file__, tree, args)
    return float(result["cpu_s"]) / int(result["messages"])


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--base", type=Path, help="a checkout to compare with")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--drains", type=int, default=2, help="drains per child (least CPU)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.batch_size, args.drains)
        return 0
    if args.base is None:
        parser.error("--base is required")
    logs = _logs(args.events, args.users)
    with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as f:
        pickle.dump([[(m.key(), m.value(), m.timestamp()[1]) for m in log] for log in logs], f)
        messages_file = Path(f.name)
    trees = {"base": args.base.resolve(), "new": ROOT}
    us: dict[str, list[float]] = {"base": [], "new": []}
    try:
        for round_ in range(args.rounds):
            order = ("base", "new") if round_ % 2 == 0 else ("new", "base")
            for name in order:
                per_message = _run_child(trees[name], messages_file, args.batch_size, args.drains)
                us[name].append(1e6 * per_message)
                print(
                    f"  round {round_} {name}: {1e6 * per_message:.2f} us CPU a message", flush=True
                )
    finally:
        messages_file.unlink()
    ratios = [n / b for b, n in zip(us["base"], us["new"], strict=True)]
    for name, runs in us.items():
        print(
            f"{name}: median {statistics.median(runs):.2f} us CPU a message "
            f"(runs {min(runs):.2f}-{max(runs):.2f})"
        )
    total = sum(map(len, logs))
    print(
        f"new/base CPU per round: {', '.join(f'{r:.3f}' for r in ratios)}; "
        f"median {statistics.median(ratios):.3f}  ({total:,} messages, {args.rounds} rounds)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
