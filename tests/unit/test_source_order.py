"""The source's merge order across topics (ADR 0006) does not depend on timing.

The consumers are fakes that replay a fixed partition log through random fetch patterns
(fetches of any size, slow fetches that return nothing, one topic silent for long
stretches, stale cached watermarks) under a fake clock with pauses; whatever the pattern,
`_EventPartition` must emit exactly the head-to-head merge of the two logs by (Kafka
timestamp, occurred_at, topic rank). Real Kafka is not needed for the order: what is
tested is the merge's decisions, given what each fetch and each watermark query returns.
"""

from __future__ import annotations

import bisect
import random
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, TopicPartition

from connectors.codec import from_json
from connectors.kafka_source import MAX_APPEND_DELAY_MS, _EventPartition
from connectors.records import Accepted, Rejected

TOPICS = ["u.oo.signals.v1", "u.oo.feedback.v1"]
BASE_MS = 1_780_000_000_000


class FakeClock:
    def __init__(self, start_ms: int) -> None:
        self.ms = start_ms

    def __call__(self) -> float:
        return self.ms / 1000


class FakeConsumer:
    """One partition of one topic: messages become visible at their append time; each
    `consume` returns what a random fetch pattern allows, then an end-of-partition event
    once the end is reached (as librdkafka does with enable.partition.eof)."""

    def __init__(
        self,
        log: list[tuple[int, Message]],
        clock: FakeClock,
        rng: random.Random,
        slow: float,
    ) -> None:
        self.log = log  # (append time ms, message), in offset order
        self.appended = [appended for appended, _ in log]  # nondecreasing
        self.clock = clock
        self.rng = rng
        self.slow = slow
        self.position = 0
        self.eof_at = -1
        self.cached_high = -1

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.position = max(partitions[0].offset, 0)

    def _visible(self) -> int:
        return bisect.bisect_right(self.appended, self.clock.ms)

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        if self.rng.random() < self.slow:
            return []  # a slow fetch: nothing yet, whatever is on the broker
        end = self._visible()
        self.cached_high = end if self.rng.random() < 0.5 else self.cached_high
        count = min(self.rng.randint(1, num_messages), end - self.position)
        out = [msg for _, msg in self.log[self.position : self.position + count]]
        self.position += count
        if self.position == end and self.eof_at != end:
            self.eof_at = end
            topic = self.log[0][1].topic() if self.log else TOPICS[0]
            out.append(
                Message(
                    topic=topic,
                    partition=0,
                    offset=end,
                    error=KafkaError(KafkaError._PARTITION_EOF),
                )
            )
        return out

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        if cached:
            return 0, self.cached_high
        return 0, self._visible()

    def close(self) -> None:
        pass


def _event(i: int, occurred_ms: int, feedback: bool) -> bytes:
    seconds, millis = divmod(occurred_ms, 1000)
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    payload = (
        '"tipShown":{"tipId":"t","agentIds":["momentum"]}'
        if feedback
        else '"habitChecked":{"habitId":"h"}'
    )
    return from_json(
        f'{{"eventId":"e{i}","userId":"u1","occurredAt":"{when}.{millis:03d}Z",{payload}}}'
    ).SerializeToString()


def make_logs(
    rng: random.Random, n: int, steps: tuple[int, ...] = (0, 0, 0, 1, 2)
) -> list[list[tuple[int, Message]]]:
    """Two topics' messages: many on the same millisecond, timestamps that sometimes go
    backwards, occurred_at all over the place, and some that do not decode."""
    logs: list[list[tuple[int, Message]]] = [[], []]
    newest = BASE_MS
    for i in range(n):
        rank = rng.random() < 0.3
        newest += rng.choice(steps)
        # Now and then a timestamp up to 5 ms behind the newest (another producer's clock).
        stamp = newest - rng.randint(1, 5) if rng.random() < 0.1 else newest
        occurred = BASE_MS - rng.randint(0, 10**9)
        value = b"\xff garbage" if rng.random() < 0.03 else _event(i, occurred, rank)
        log = logs[rank]
        log.append(
            (
                0,
                Message(
                    topic=TOPICS[rank],
                    partition=0,
                    offset=len(log),
                    key=b"u1",
                    value=value,
                    timestamp=(1, stamp),
                ),
            )
        )
    return logs


def merge_reference(logs: list[list[tuple[int, Message]]]) -> list[str]:
    """The head-to-head merge of ADR 0006, written plainly."""

    def key(rank: int, msg: Message) -> tuple[int, int, int]:
        try:
            from connectors.codec import decode

            event = decode(msg.value())
            occurred = event.occurred_at.ToMilliseconds()
        except Exception:
            occurred = 0
        return (msg.timestamp()[1], occurred, rank)

    heads = [0, 0]
    out = []
    while any(heads[r] < len(logs[r]) for r in (0, 1)):
        candidates = [(key(r, logs[r][heads[r]][1]), r) for r in (0, 1) if heads[r] < len(logs[r])]
        _, r = min(candidates)
        out.append(_ident(logs[r][heads[r]][1].topic(), logs[r][heads[r]][1].offset()))
        heads[r] += 1
    return out


def _ident(topic: str | None, offset: int | None) -> str:
    return f"{topic}@{offset}"


def emitted_ids(records: list[Any], logs: list[list[tuple[int, Message]]]) -> list[str]:
    by_event = {}
    for log in logs:
        for _, msg in log:
            try:
                from connectors.codec import decode

                by_event[decode(msg.value()).event_id] = _ident(msg.topic(), msg.offset())
            except Exception:
                pass
    out = []
    for _, record in records:
        if isinstance(record, Accepted):
            out.append(by_event[record.event.event_id])
        else:
            assert isinstance(record, Rejected)
            out.append(_ident(record.origin, record.offset))
    return out


def run(
    logs: list[list[tuple[int, Message]]],
    *,
    seed: int,
    stop_at_end: bool,
    batch_size: int,
    slow: tuple[float, float],
    step_ms: tuple[int, int],
    start_ms: int,
) -> list[str]:
    rng = random.Random(seed)
    clock = FakeClock(start_ms)
    consumers = [FakeConsumer(logs[r], clock, rng, slow[r]) for r in (0, 1)]
    part = _EventPartition(consumers, TOPICS, 0, None, batch_size, stop_at_end, clock=clock)
    total = sum(len(log) for log in logs)
    records: list[Any] = []
    for _ in range(200_000):
        try:
            records += part.next_batch()
        except StopIteration:
            break
        if not stop_at_end and len(records) == total:
            break
        clock.ms += rng.randint(*step_ms)
    else:
        pytest.fail(f"emitted {len(records)} of {total}")
    return emitted_ids(records, logs)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("stop_at_end", [True, False], ids=["stop-at-end", "tail"])
def test_the_order_is_the_merge_whatever_the_fetches_and_the_clock(
    seed: int, stop_at_end: bool
) -> None:
    rng = random.Random(seed)
    logs = make_logs(rng, 400)
    expected = merge_reference(logs)
    patterns = [
        # batch size, chance that a fetch of each topic returns nothing, clock steps
        (5000, (0.0, 0.0), (0, 1)),
        (7, (0.3, 0.3), (0, 5)),
        (3, (0.0, 0.97), (500, 3000)),  # feedback silent for seconds at a time
        (50, (0.97, 0.0), (500, 3000)),  # signals silent, pauses of the process
    ]
    for batch_size, slow, steps in patterns:
        got = run(
            logs,
            seed=seed * 31 + batch_size,
            stop_at_end=stop_at_end,
            batch_size=batch_size,
            slow=slow,
            step_ms=steps,
            start_ms=BASE_MS + 10_000,
        )
        assert got == expected, f"pattern {batch_size} {slow} {steps}"


@pytest.mark.parametrize("seed", range(4))
def test_in_tail_mode_live_appends_within_the_delay_bound_keep_the_merge_order(
    seed: int,
) -> None:
    """Messages appended while the flow runs, each within MAX_APPEND_DELAY_MS of its
    timestamp: the order is the merge of the final log, as a replay would give."""
    rng = random.Random(seed)
    logs = make_logs(rng, 300, steps=(0, 0, 1, 5, 20, 60))
    # Appended in each topic's offset order, each less than the bound after its stamp (the
    # stamps are at most 5 ms behind the newest, so the running maximum keeps the bound).
    for log in logs:
        appended = BASE_MS
        for i, (_, msg) in enumerate(log):
            stamp = msg.timestamp()[1]
            appended = max(appended, stamp + rng.randint(0, MAX_APPEND_DELAY_MS - 10))
            assert appended - stamp < MAX_APPEND_DELAY_MS
            log[i] = (appended, msg)
    expected = merge_reference(logs)
    got = run(
        logs,
        seed=seed,
        stop_at_end=False,
        batch_size=rng.choice([3, 50, 5000]),
        slow=(0.2, 0.5),
        step_ms=(0, 15),
        start_ms=BASE_MS - 50,
    )
    assert got == expected


def _batches_and_resume_points(
    logs: list[list[tuple[int, Message]]], seed: int, batch_size: int
) -> list[tuple[list[str], dict[str, int]]]:
    rng = random.Random(seed)
    clock = FakeClock(BASE_MS + 10_000)
    consumers = [FakeConsumer(logs[r], clock, rng, 0.2) for r in (0, 1)]
    part = _EventPartition(consumers, TOPICS, 0, None, batch_size, True, clock=clock)
    out = []
    while True:
        try:
            batch = part.next_batch()
        except StopIteration:
            return out
        out.append((emitted_ids(batch, logs), part.snapshot()))
        clock.ms += rng.randint(0, 5)


@pytest.mark.parametrize("seed", range(3))
def test_the_two_feed_merge_emits_and_resumes_as_the_general_loop(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADR 0056: `merge_records`' loop for two feeds that both have records waiting gives the
    general loop's batches and resume offsets, batch by batch."""
    from connectors import kafka_merge

    logs = make_logs(random.Random(seed), 500, steps=(0, 0, 1, 2, 3))
    for batch_size in (5000, 40, 3):
        fast = _batches_and_resume_points(logs, seed, batch_size)
        with monkeypatch.context() as patched:
            patched.setattr(kafka_merge, "_merge_both_waiting", lambda a, b, out: None)
            general = _batches_and_resume_points(logs, seed, batch_size)
        assert fast == general
        assert [i for ids, _ in fast for i in ids] == merge_reference(logs)
