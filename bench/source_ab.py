"""The flow's Kafka source alone, this tree's against a base tree's, interleaved (issue 14).

Drains `_EventPartition` (decode, merge of both topics, emission) over generated events held
by in-memory consumers (no broker: only the source's own Python is timed), `--rounds` times
each, alternating base and new in one process, and prints medians and the per-round ratio.

    python bench/source_ab.py --base /tmp/base --events 200000 --rounds 7

`--base` is a checkout (e.g. `git archive <commit> | tar -x -C /tmp/base`) whose
`connectors/kafka_source.py` is loaded beside this tree's; its other imports resolve to this
tree's `connectors` (unchanged by the split).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import itertools
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
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
    started = time.perf_counter()
    try:
        while True:
            emitted += len(part.next_batch())
    except StopIteration:
        pass
    return time.perf_counter() - started, emitted


def _base_module(base: Path) -> ModuleType:
    path = base / "connectors" / "kafka_source.py"
    spec = importlib.util.spec_from_file_location("kafka_source_base", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--base: expected {path}; got nothing importable")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="a checkout to compare with")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=5000)
    args = parser.parse_args()
    versions = {"base": _base_module(args.base), "new": kafka_source}
    logs = _logs(args.events, args.users)
    total = sum(map(len, logs))
    _drain(kafka_source, logs, args.batch_size)  # warm-up: imports, caches
    seconds: dict[str, list[float]] = {"base": [], "new": []}
    for round_ in range(args.rounds):
        order = ("base", "new") if round_ % 2 == 0 else ("new", "base")
        for name in order:
            took, emitted = _drain(versions[name], logs, args.batch_size)
            if emitted != total:
                raise SystemExit(f"{name}: emitted {emitted} of {total} messages")
            seconds[name].append(took)
    ratios = [b / n for b, n in zip(seconds["base"], seconds["new"], strict=True)]
    for name, runs in seconds.items():
        rates = sorted(total / s for s in runs)
        print(
            f"{name}: median {statistics.median(rates):,.0f} messages/s  (runs {rates[0]:,.0f}"
            f"-{rates[-1]:,.0f})"
        )
    print(
        f"new/base throughput per round: {', '.join(f'{r:.3f}' for r in ratios)}; "
        f"median {statistics.median(ratios):.3f}  ({total:,} messages, {args.rounds} rounds)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
