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

import time
from typing import Any, NamedTuple

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors import flow_metrics
from connectors.coalescing import KAFKA_BATCH_SIZE
from connectors.codec import parse_and_validate
from connectors.exceptions import ConnectorError
from connectors.kafka import admin_config
from connectors.records import Accepted, Rejected

Keyed = tuple[str, Accepted | Rejected]
"""What the source emits: `(user_id, Accepted)`, or `(message key or "", Rejected)`."""

LAG_EVERY_S = 1.0
_EOF = KafkaError._PARTITION_EOF


class Decoded(NamedTuple):
    records: list[Keyed]
    next_offset: int
    """Offset after the last message, -1 when there was none (only errors, or nothing)."""
    rejected: int
    eof: bool
    """The client reported the end of the partition."""


def decode_messages(messages: list[Any], now_s: float) -> Decoded:
    """A consume() result of one partition (confluent-kafka messages) into keyed records."""
    out: list[Keyed] = []
    append = out.append
    next_offset = -1
    rejected = 0
    eof = False
    now_ms = int(now_s * 1000)
    for msg in messages:
        error = msg.error()
        if error is not None and error.code() == _EOF:
            eof = True
            continue
        value = msg.value() or b""
        if error is None:
            try:
                event = parse_and_validate(value, now_s=now_s)
            except ConnectorError as exc:
                reason = f"in step 'read_events': {exc}"
            else:
                user_id = event.user_id
                key = msg.key()
                if key is None or key == user_id.encode():
                    ts = msg.timestamp()[1]
                    append((user_id, Accepted(event, ts if ts > 0 else now_ms)))
                    next_offset = msg.offset() + 1
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
        if offset is not None and offset >= 0:
            next_offset = offset + 1
    return Decoded(out, next_offset, rejected, eof)


class _EventPartition(StatefulSourcePartition[Keyed, int]):
    def __init__(
        self, config: dict[str, Any], topic: str, partition: int, offset: int, batch_size: int
    ) -> None:
        self._consumer = Consumer(config)
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        self._tp = TopicPartition(topic, partition)
        self._topic = topic
        self._offset = offset
        self._batch_size = batch_size
        self._eof = False
        self._lag = flow_metrics.CONSUMER_LAG.labels(topic, str(partition))
        self._lag_due = 0.0

    def next_batch(self) -> list[Keyed]:
        if self._eof:
            raise StopIteration()
        messages = self._consumer.consume(self._batch_size, 0.001)
        now_s = time.time()
        records, next_offset, rejected, eof = decode_messages(messages, now_s)
        # The end of the partition (enable.partition.eof, i.e. --stop-at-end): emit this batch,
        # stop at the next call.
        self._eof = eof
        if next_offset >= 0:
            self._offset = next_offset
        if records:
            flow_metrics.count_read(self._topic, len(records), rejected)
        if now_s >= self._lag_due:
            self._lag_due = now_s + LAG_EVERY_S
            self._observe_lag()
        return records

    def _observe_lag(self) -> None:
        # The high watermark the client learnt from its last fetch: no broker round trip.
        try:
            _, high = self._consumer.get_watermark_offsets(self._tp, cached=True)
        except Exception:
            return
        if high >= 0 and self._offset >= 0:
            self._lag.set(max(0, high - self._offset))

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        self._consumer.close()


class KafkaEventSource(FixedPartitionedSource[Keyed, int]):
    """Every partition of `topics`, from the beginning or from the recovered offsets.

    `tail=False` stops each partition at the end it finds (`--stop-at-end`).
    Partition names are `"{partition}-{topic}"`, as Bytewax's own Kafka source
    names them, so recovery snapshots carry over.
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
        parts: list[str] = []
        for topic in self.topics:
            meta = admin.list_topics(topic, timeout=30).topics.get(topic)
            if meta is None or meta.error is not None:
                why = meta.error.str() if meta is not None and meta.error else "not found"
                raise RuntimeError(f"cannot read Kafka topic {topic!r}: {why}")
            parts.extend(f"{index}-{topic}" for index in sorted(meta.partitions))
        return parts

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _EventPartition:
        index, topic = for_part.split("-", 1)
        if topic not in self.topics:
            raise RuntimeError(
                f"recovery state names partition {for_part!r}, but the flow reads {self.topics}"
            )
        config = {
            "bootstrap.servers": self.bootstrap,
            "group.id": "oo-features-flow-assign-only",  # assign() only: no group, no commits
            "enable.auto.commit": False,
            "enable.partition.eof": not self.tail,
            "isolation.level": "read_committed",
        }
        if not self.tail:
            # Reading to the end: an empty fetch should come back at once rather than wait out
            # the broker's long poll (500 ms by default) before the end is reported.
            config["fetch.wait.max.ms"] = 10
        offset = OFFSET_BEGINNING if resume_state is None else resume_state
        return _EventPartition(config, topic, int(index), offset, self.batch_size)
