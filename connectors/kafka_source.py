"""The flow's Kafka input: both event topics, decoded inside the source, keyed by user.

Each Kafka partition is one Bytewax source partition with its own consumer,
assigned (no consumer group), resumed from the offset in the snapshot. A batch
of messages becomes a list of `(user_id, Accepted)` and `(key, Rejected)`
pairs in one pass: no per-message wrapper object and no separate decode or
keying step, which is most of what a Python dataflow spends per event before
the features themselves (BENCHMARKS.md, "Flow").

Failure behaviour: a message that does not decode or validate, whose key does
not match its user, or that the client reports as an error becomes a
`Rejected` (reason, original bytes, topic, partition, offset) and flows on to
the dead-letter topic; nothing here raises for bad input. A missing topic is
an error at start, naming it.
"""

from __future__ import annotations

import bisect
import itertools
import time
from typing import Any, NamedTuple

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors import flow_metrics
from connectors.coalescing import KAFKA_BATCH_SIZE
from connectors.codec import parse_and_check
from connectors.exceptions import ConnectorError
from connectors.kafka import admin_config
from connectors.records import Accepted, Rejected

Keyed = tuple[str, Accepted | Rejected]
"""What the source emits: `(user_id, Accepted)`, or `(message key or "", Rejected)`."""

LAG_EVERY_S = 1.0
IDLE_AFTER_S = 1.0
"""A topic-partition with neither messages nor an end-of-partition for this long holds back
nothing (a broker that stopped answering must not stall the other topic)."""
_ALL = float("inf")
_EOF = KafkaError._PARTITION_EOF


class Decoded(NamedTuple):
    records: list[Keyed]
    rejected: int


def decode_messages(messages: list[Any], now_s: float) -> Decoded:
    """Fetched confluent-kafka messages into keyed records, in order; end-of-partition events
    are skipped (the feeds track offsets and ends)."""
    out: list[Keyed] = []
    append = out.append
    rejected = 0
    now_ms = int(now_s * 1000)
    for msg in messages:
        error = msg.error()
        if error is not None and error.code() == _EOF:
            continue
        value = msg.value() or b""
        if error is None:
            try:
                event, kind, occurred_ms = parse_and_check(value, now_s=now_s)
            except ConnectorError as exc:
                reason = f"in step 'read_events': {exc}"
            else:
                user_id = event.user_id
                key = msg.key()
                if key is None or key == user_id.encode():
                    ts = msg.timestamp()[1]
                    ingest = ts if ts > 0 else now_ms
                    append(
                        (
                            user_id,
                            Accepted(
                                event,
                                ingest,
                                kind,
                                occurred_ms,
                                (msg.topic(), msg.partition()),
                                msg.offset(),
                            ),
                        )
                    )
                    continue
                reason = (
                    f"in step 'read_events': key {key[:80]!r} does not match user_id {user_id!r}"
                )
        else:
            reason = f"in step 'read_events': kafka error {error}"
        offset = msg.offset()
        partition = msg.partition()
        append(
            (
                "",
                Rejected(
                    reason,
                    value,
                    msg.topic() or "",
                    -1 if partition is None else partition,
                    -1 if offset is None else offset,
                    msg.key(),
                ),
            )
        )
        rejected += 1
    return Decoded(out, rejected)


class _Feed:
    """One topic-partition of a source partition: its consumer and what it fetched, not yet emitted."""

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        rank: int,
        partition: int,
        offset: int,
        now_s: float,
    ) -> None:
        self.topic = topic
        self.rank = rank
        """Order of this feed's topic among the source's topics (ties in time go to the lower)."""
        self.tp = TopicPartition(topic, partition)
        self.consumer = Consumer(config)
        self.consumer.assign([TopicPartition(topic, partition, offset)])
        self.offset = offset
        """Next offset to emit (the resume point): fetched but unemitted messages are re-read."""
        self.buffer: list[Any] = []
        self.stamps: list[int] = []
        """Kafka timestamp of each buffered message."""
        self.fetched = offset
        """Next offset the consumer will fetch."""
        self.at_end = False
        """The client reported the end of the partition after the last message fetched."""
        self.heard_s = now_s
        self.lag = flow_metrics.CONSUMER_LAG.labels(topic, str(partition))

    def fetch(self, room: int, now_s: float) -> None:
        messages = self.consumer.consume(room, 0.001)
        if not messages:
            return
        self.heard_s = now_s
        error = messages[-1].error()
        # The end of the partition comes after the last message fetched before it. One in the
        # middle (more arrived in the same read) stays in the buffer; decoding skips it.
        self.at_end = error is not None and error.code() == _EOF
        if self.at_end:
            messages = messages[:-1]
            if not messages:
                return
        last = messages[-1].offset()
        if last is not None and last >= 0:
            self.fetched = last + 1
        stamps = [m.timestamp()[1] for m in messages]
        if min(stamps) <= 0:
            # A message without a usable timestamp keeps its place behind the one before it.
            previous = self.stamps[-1] if self.stamps else 0
            for i, stamp in enumerate(stamps):
                if stamp <= 0:
                    stamps[i] = previous
                previous = stamps[i]
        self.buffer += messages
        self.stamps += stamps

    def _high_watermark(self) -> int:
        """The high watermark the client learnt from its last fetch reply (no broker round
        trip); -1 when unknown."""
        try:
            _, high = self.consumer.get_watermark_offsets(self.tp, cached=True)
        except Exception:
            return -1
        return int(high)

    def caught_up(self) -> bool:
        """Nothing is waiting on the broker beyond what was fetched, as of the last fetch reply."""
        if self.at_end:
            return True
        high = self._high_watermark()
        return high >= 0 and self.fetched >= high

    def take(self, horizon: float) -> list[tuple[int, int, int, Any]]:
        """Remove and return (stamp, rank, position, message) of the buffered messages stamped
        at or before `horizon`, oldest first."""
        end = bisect.bisect_right(self.stamps, horizon) if horizon != _ALL else len(self.stamps)
        if not end:
            return []
        taken = self.buffer[:end]
        stamps = self.stamps[:end]
        del self.buffer[:end], self.stamps[:end]
        for msg in reversed(taken):
            # An end-of-partition event carries the next offset, not its own: skip it.
            error = msg.error()
            offset = msg.offset()
            if (error is None or error.code() != _EOF) and offset is not None and offset >= 0:
                self.offset = offset + 1
                break
        return list(zip(stamps, itertools.repeat(self.rank), range(end), taken, strict=False))

    def observe_lag(self) -> None:
        high = self._high_watermark()
        if high >= 0 and self.offset >= 0:
            self.lag.set(max(0, high - self.offset))


class _EventPartition(StatefulSourcePartition[Keyed, dict[str, int]]):
    """Partition `index` of every topic, merged by Kafka timestamp.

    A user's signals and feedback sit in the same partition index of their two topics (both
    keyed by user with the same partitioner), so reading them together and emitting them in
    timestamp order gives each user one order across topics, whatever the batch size, the
    number of workers or processes, or how far one topic's fetches run ahead of the other's.
    A message waits until every topic with more on the broker has fetched past its timestamp;
    a topic whose fetches have reached the broker's high watermark, or that has been silent for
    `IDLE_AFTER_S`, holds nothing back.
    """

    def __init__(
        self,
        config: dict[str, Any],
        topics: list[str],
        index: int,
        resume: dict[str, int] | None,
        batch_size: int,
        stop_at_end: bool,
    ) -> None:
        now_s = time.time()
        self._feeds = []
        for rank, topic in enumerate(topics):
            offset = (resume or {}).get(topic, OFFSET_BEGINNING)
            self._feeds.append(_Feed(config, topic, rank, index, offset, now_s))
        self._batch_size = batch_size
        self._stop_at_end = stop_at_end
        self._lag_due = 0.0

    def next_batch(self) -> list[Keyed]:
        now_s = time.time()
        feeds = self._feeds
        for feed in feeds:
            room = self._batch_size - len(feed.buffer)
            if room > 0 and not (self._stop_at_end and feed.at_end):
                feed.fetch(room, now_s)
        if self._stop_at_end and all(f.at_end and not f.buffer for f in feeds):
            raise StopIteration()
        horizon: float = _ALL
        for feed in feeds:
            if feed.caught_up() or now_s - feed.heard_s > IDLE_AFTER_S:
                continue
            if not feed.buffer:
                horizon = -1  # it has more to say and has not said it yet: wait
                break
            horizon = min(horizon, feed.stamps[-1])
        parts = [feed.take(horizon) for feed in feeds]
        if now_s >= self._lag_due:
            self._lag_due = now_s + LAG_EVERY_S
            for feed in feeds:
                feed.observe_lag()
        parts = [part for part in parts if part]
        if not parts:
            return []
        if len(parts) == 1:
            merged = [item[3] for item in parts[0]]
        else:
            # Each part is in timestamp order already, so sorting their concatenation merges
            # them; (stamp, topic rank, position) is unique, so messages are never compared
            # and ties go to the first topic, then to each topic's own order.
            merged = [item[3] for item in sorted(itertools.chain(*parts))]
        records, rejected = decode_messages(merged, now_s)
        for part in parts:
            topic = part[0][3].topic()
            bad = (
                sum(1 for _, r in records if r.__class__ is Rejected and r.origin == topic)
                if rejected
                else 0
            )
            flow_metrics.count_read(topic, len(part), bad)
        return records

    def snapshot(self) -> dict[str, int]:
        return {feed.topic: feed.offset for feed in self._feeds}

    def close(self) -> None:
        for feed in self._feeds:
            feed.consumer.close()


class KafkaEventSource(FixedPartitionedSource[Keyed, dict[str, int]]):
    """Every partition of `topics`, from the beginning or from the recovered offsets.

    Source partition `i` reads partition `i` of every topic and merges them by Kafka
    timestamp (see `_EventPartition`), so the topics must have the same partition count.
    `tail=False` stops at the end found (`--stop-at-end`). Resume state: next offset per topic.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: list[str],
        *,
        tail: bool = True,
        batch_size: int = KAFKA_BATCH_SIZE,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.tail = tail
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        admin = AdminClient(admin_config(self.bootstrap))
        counts: dict[str, int] = {}
        for topic in self.topics:
            meta = admin.list_topics(topic, timeout=30).topics.get(topic)
            if meta is None or meta.error is not None:
                why = meta.error.str() if meta is not None and meta.error else "not found"
                raise RuntimeError(f"cannot read Kafka topic {topic!r}: {why}")
            counts[topic] = len(meta.partitions)
        if len(set(counts.values())) > 1:
            raise RuntimeError(
                "the event topics must have the same number of partitions (a user's events "
                f"are merged by partition index); got {counts}"
            )
        return [str(index) for index in range(next(iter(counts.values()), 0))]

    def build_part(
        self, step_id: str, for_part: str, resume_state: dict[str, int] | None
    ) -> _EventPartition:
        if resume_state is not None and set(resume_state) - set(self.topics):
            raise RuntimeError(
                f"recovery state names topics {sorted(resume_state)}, "
                f"but the flow reads {self.topics}"
            )
        config = {
            "bootstrap.servers": self.bootstrap,
            "group.id": "oo-features-flow-assign-only",  # assign() only: no group, no commits
            "enable.auto.commit": False,
            # Reaching the end is how a topic stops holding the other back (and, with
            # --stop-at-end, where reading stops).
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
        if not self.tail:
            # Reading to the end: an empty fetch should come back at once rather than wait out
            # the broker's long poll (500 ms by default) before the end is reported.
            config["fetch.wait.max.ms"] = 10
        return _EventPartition(
            config, self.topics, int(for_part), resume_state, self.batch_size, not self.tail
        )
