"""The flow's Kafka input: both event topics, decoded inside the source, keyed by user.

Bytewax source partition `i` reads partition `i` of every event topic, one assigned
consumer each (no consumer group), resumed from the offsets in the snapshot, and emits
them in one merge order (ADR 0006: `merge_key`, `merge_records`), which depends on the
topics' content only. Fetched messages become `(user_id, Accepted)` and `(key, Rejected)`
pairs in one pass: no per-message wrapper object and no separate decode or keying step,
which is most of what a Python dataflow spends per event before the features themselves
(BENCHMARKS.md, "Flow").

Failure behaviour: a message that does not decode or validate, whose key does
not match its user, or that the client reports as an error becomes a
`Rejected` (reason, original bytes, topic, partition, offset) and flows on to
the dead-letter topic; nothing here raises for bad input. A missing topic is
an error at start, naming it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors import flow_metrics
from connectors.batching import KAFKA_BATCH_SIZE
from connectors.codec import parse_and_check
from connectors.exceptions import ConnectorError
from connectors.kafka import admin_config
from connectors.records import Accepted, Rejected

Keyed = tuple[str, Accepted | Rejected]
"""What the source emits: `(user_id, Accepted)`, or `(message key or "", Rejected)`."""

LAG_EVERY_S = 1.0
MAX_APPEND_DELAY_MS = 100
"""Tail mode: how long after its Kafka timestamp a message is assumed to be in its topic
(producer linger and retries, clock skew between producer and flow hosts). A record waits at
least this long for a topic with nothing fetched to show it has nothing earlier (ADR 0006)."""
PROOF_EVERY_S = 0.01
"""Broker queries for one partition's end are at least this far apart (at most 100 a second
while the topic is quiet and the other is not)."""
PROOF_RETRY_S = 1.0
"""A broker query for a partition's end that failed is not repeated sooner than this."""
_OCCURRED_BITS = 48
_RANK_BITS = 4
_STAMP_SHIFT = _OCCURRED_BITS + _RANK_BITS
_NO_LIMIT_KEY = 1 << 256
_NO_LIMIT_COUNT = 1 << 62
_EOF = KafkaError._PARTITION_EOF


def merge_key(stamp_ms: int, occurred_ms: int, rank: int) -> int:
    """The place of a record in the merge of the topics, as one int: Kafka timestamp, then the
    event's occurred_at (0 for a record that did not decode), then the topic's rank.

    Only the heads of the feeds are compared (a head-to-head merge), so each topic keeps its
    own offset order whatever its keys are, and two heads never tie (their ranks differ).

    >>> merge_key(2, 0, 0) > merge_key(1, 9_999_999_999_999, 1) > merge_key(1, 5, 0)
    True
    """
    occurred = min(max(occurred_ms, 0), (1 << _OCCURRED_BITS) - 1)
    return (((stamp_ms << _OCCURRED_BITS) | occurred) << _RANK_BITS) | rank


def stamp_of(key: int) -> int:
    """The Kafka timestamp part of a `merge_key`."""
    return key >> _STAMP_SHIFT


class Decoded(NamedTuple):
    records: list[Keyed]
    rejected: int


def decode_messages(messages: list[Any], now_s: float) -> Decoded:
    """Fetched confluent-kafka messages into keyed records, in order; end-of-partition events
    are skipped (the feeds track offsets and ends).

    Never raises for what a message holds: whatever fails (decoding, validation, a parser's
    own error, a missing or foreign key) makes that message a `Rejected` with its reason."""
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
            except Exception as exc:  # a parser's own failure must not stop the flow
                reason = f"in step 'read_events': {type(exc).__name__}: {exc!s:.200}"
            else:
                user_id = event.user_id
                key = msg.key()
                if key == user_id.encode():
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
                                msg,
                                (msg.topic(), msg.partition()),
                                msg.offset(),
                            ),
                        )
                    )
                    continue
                if key is None:
                    # Unkeyed, it landed on any partition: it may overtake the user's events.
                    reason = (
                        f"in step 'read_events': the message has no key; expected the "
                        f"event's user_id {user_id!r}"
                    )
                else:
                    reason = (
                        f"in step 'read_events': key {key[:80]!r} does not match "
                        f"user_id {user_id!r}"
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
    """One topic-partition of a source partition: its consumer and what it fetched, decoded,
    not yet emitted (from `pos` on)."""

    def __init__(
        self,
        consumer: Any,
        topic: str,
        rank: int,
        partition: int,
        offset: int,
        ranks: int,
    ) -> None:
        """`consumer`: a confluent-kafka `Consumer` (or anything with its `consume`,
        `get_watermark_offsets`, `assign` and `close`), not yet assigned."""
        self.topic = topic
        self.rank = rank
        """Order of this feed's topic among the source's topics (the last tie-break)."""
        self.tp = TopicPartition(topic, partition)
        self.consumer = consumer
        self.consumer.assign([TopicPartition(topic, partition, offset)])
        self.offset = offset
        """Next offset to emit (the resume point): fetched but unemitted messages are re-read."""
        self.records: list[Keyed] = []
        self.keys: list[int] = []
        """`merge_key` of each record."""
        self.offsets: list[int] = []
        self.pos = 0
        """Index of the head: the first record not emitted yet."""
        self.base = 0
        """How many records this feed fetched before `records[0]`."""
        self.fetched = offset
        """Next offset the consumer will fetch (negative: a logical offset, nothing fetched)."""
        self.at_end = False
        """The client reported the end of the partition after the last message fetched."""
        self.last_stamp = 0
        self.proof_ms = -1
        """Wall time (ms) when a broker query last showed everything here fetched; -1: none."""
        self.proof_counts = [0] * ranks
        """For each feed (by rank), how many records it had fetched when that query was sent."""
        self.retry_at_s = 0.0
        self.lag = flow_metrics.CONSUMER_LAG.labels(topic, str(partition))

    @property
    def fetched_count(self) -> int:
        return self.base + len(self.records)

    def waiting(self) -> int:
        return len(self.records) - self.pos

    def fetch(self, room: int, now_s: float) -> None:
        messages = self.consumer.consume(room, 0.001)
        if not messages:
            return
        # End-of-partition events carry the next offset; the one after the last message says
        # the partition ends there. One in the middle (more arrived in the same read) is dropped.
        last = messages[-1]
        error = last.error()
        self.at_end = error is not None and error.code() == _EOF
        if self.at_end:
            end = last.offset()
            if end is not None and end >= 0:
                self.fetched = max(self.fetched, end)
        messages = [m for m in messages if (e := m.error()) is None or e.code() != _EOF]
        if not messages:
            return
        # One record per message, in order (decode_messages' contract once ends are removed).
        records, rejected = decode_messages(messages, now_s)
        flow_metrics.count_read(self.topic, len(records), rejected)
        rank = self.rank
        stamp = self.last_stamp
        keys = self.keys
        offsets = self.offsets
        for msg, (_, record) in zip(messages, records, strict=True):
            ts = msg.timestamp()[1]
            if ts > 0:
                stamp = ts
            # else: a message without a usable timestamp keeps its place behind the one before.
            occurred = record.occurred_ms if isinstance(record, Accepted) else 0
            keys.append(merge_key(stamp, occurred, rank))
            offset = msg.offset()
            offsets.append(-1 if offset is None else offset)
        self.last_stamp = stamp
        self.records += records
        # A client error event carries no offset of its own: look past it.
        last_offset = max(offsets[-len(messages) :])
        if last_offset >= 0:
            self.fetched = max(self.fetched, last_offset + 1)

    def _high_watermark(self, prober: Any = None, timeout_s: float = 1.0) -> tuple[int, int]:
        """(low, high) offsets of the partition; (-1, -1) when unknown. Without `prober`: what
        the consumer learnt from its last fetch reply, no round trip; with it: a broker query
        through that client, which has no fetch of its own in flight (a query behind a
        pending long-poll fetch on the same connection would wait for the fetch)."""
        try:
            if prober is None:
                low, high = self.consumer.get_watermark_offsets(self.tp, cached=True)
            else:
                low, high = prober.get_watermark_offsets(self.tp, timeout=timeout_s)
        except Exception:
            return -1, -1
        return int(low), int(high)

    def _all_fetched(self, low: int, high: int) -> bool:
        if high < 0:
            return False
        if self.fetched < 0:  # nothing fetched yet: at the end only if the partition is empty
            return high <= max(low, 0)
        return self.fetched >= high

    def may_be_at_end(self) -> bool:
        """Cheap pre-check before `prove_end`: nothing more is known to be on the broker."""
        if self.waiting():
            return False
        if self.at_end:
            return True
        low, high = self._high_watermark()
        return high < 0 or self._all_fetched(low, high)

    def prove_end(
        self, feeds: list[_Feed], now_s: float, clock: Callable[[], float], prober: Any
    ) -> bool:
        """Ask the broker for this partition's end; when everything up to it has been fetched,
        record the proof: nothing appended from now on is covered by what the other feeds
        fetched so far. Queries are `PROOF_EVERY_S` apart; a failed one is retried no sooner
        than `PROOF_RETRY_S` later."""
        if now_s < self.retry_at_s:
            return False
        self.retry_at_s = now_s + PROOF_EVERY_S
        counts = [feed.fetched_count for feed in feeds]
        sent_ms = int(clock() * 1000)
        low, high = self._high_watermark(prober)
        if high < 0:
            self.retry_at_s = now_s + PROOF_RETRY_S
            return False
        if not self._all_fetched(low, high):
            return False
        self.proof_ms = sent_ms
        self.proof_counts = counts
        return True

    def release_bound(self, feed: _Feed, final_end: bool) -> tuple[int, int]:
        """How far this feed, which has nothing waiting, lets `feed` go: (how many of `feed`'s
        records, counted from its first fetch, and a merge key below which they may go)."""
        if final_end and self.at_end:
            return _NO_LIMIT_COUNT, _NO_LIMIT_KEY
        if self.proof_ms < 0:
            return 0, 0
        stamp = self.proof_ms - MAX_APPEND_DELAY_MS
        return self.proof_counts[feed.rank], merge_key(stamp, 0, 0)

    def take(self, end: int) -> list[Keyed]:
        """Emit the waiting records up to index `end`."""
        taken = self.records[self.pos : end]
        for i in range(end - 1, self.pos - 1, -1):
            if self.offsets[i] >= 0:
                self.offset = self.offsets[i] + 1
                break
        self.pos = end
        return taken

    def compact(self) -> None:
        pos = self.pos
        if pos:
            del self.records[:pos], self.keys[:pos], self.offsets[:pos]
            self.base += pos
            self.pos = 0

    def observe_lag(self) -> None:
        _, high = self._high_watermark()
        if high >= 0 and self.offset >= 0:
            self.lag.set(max(0, high - self.offset))


def merge_records(feeds: list[_Feed], final_end: bool) -> tuple[list[Keyed], _Feed | None, int]:
    """Emit, in merge order, every waiting record whose place is settled.

    A head-to-head merge: the feed whose head has the smallest `merge_key` goes first, its
    records running on while they stay below every other feed's head. A feed with nothing
    waiting bounds the run by `release_bound` (its final end, or a broker proof that it
    had nothing more). Returns what was emitted and, when the merge stopped on a feed with
    nothing waiting, that feed and the key of the record it held back (a proof of its end
    may let the merge go on).
    """
    out: list[Keyed] = []
    while True:
        first: _Feed | None = None
        first_key = 0
        for feed in feeds:
            if feed.pos < len(feed.keys):
                key = feed.keys[feed.pos]
                if first is None or key < first_key:
                    first, first_key = feed, key
        if first is None:
            return out, None, 0
        limit_key = _NO_LIMIT_KEY
        limit_count = _NO_LIMIT_COUNT
        blocker: _Feed | None = None
        for feed in feeds:
            if feed is first:
                continue
            if feed.pos < len(feed.keys):
                limit_key = min(limit_key, feed.keys[feed.pos])
                continue
            count, key = feed.release_bound(first, final_end)
            if count <= first.base + first.pos or key <= first_key:
                blocker = feed
            limit_count = min(limit_count, count)
            limit_key = min(limit_key, key)
        keys = first.keys
        end = min(len(keys), limit_count - first.base)
        i = first.pos
        while i < end and keys[i] < limit_key:
            i += 1
        if i == first.pos:
            return out, blocker, first_key
        out += first.take(i)


class _EventPartition(StatefulSourcePartition[Keyed, dict[str, int]]):
    """Partition `index` of every topic, merged into one order (ADR 0006).

    A user's signals and feedback sit in the same partition index of their two topics (both
    keyed by user with the same partitioner), so reading them together and emitting them in
    one merge order gives each user one order across topics. The order is `merge_records`'
    head-to-head merge by `merge_key`: a function of what the partitions hold, whatever the
    batch size, the fetch timing, the load, pauses, restarts, workers or processes. A record
    is emitted only once every other topic has shown that nothing sorting before it can
    come: a fetched record that sorts after it, its end of partition (final with
    `--stop-at-end`), or a broker query, sent after the record was fetched and more than
    `MAX_APPEND_DELAY_MS` after its timestamp, showing that topic fully fetched.
    """

    def __init__(
        self,
        consumers: list[Any],
        topics: list[str],
        index: int,
        resume: dict[str, int] | None,
        batch_size: int,
        stop_at_end: bool,
        clock: Callable[[], float] = time.time,
        prober: Any = None,
    ) -> None:
        """One consumer per topic (`_Feed`); `clock` is the wall time in seconds; `prober`, a
        client with no assignment for the broker queries of a topic's end (default: the
        topic's own consumer)."""
        self._feeds: list[_Feed] = []
        for rank, (topic, consumer) in enumerate(zip(topics, consumers, strict=True)):
            offset = (resume or {}).get(topic, OFFSET_BEGINNING)
            self._feeds.append(_Feed(consumer, topic, rank, index, offset, len(topics)))
        self._clock = clock
        self._prober = prober
        self._batch_size = batch_size
        self._stop_at_end = stop_at_end
        self._lag_due = 0.0

    def next_batch(self) -> list[Keyed]:
        now_s = self._clock()
        feeds = self._feeds
        stop_at_end = self._stop_at_end
        for feed in feeds:
            room = self._batch_size - feed.waiting()
            if room > 0 and not (stop_at_end and feed.at_end):
                feed.fetch(room, now_s)
        if stop_at_end and all(f.at_end and not f.waiting() for f in feeds):
            raise StopIteration()
        out, blocker, blocked_key = merge_records(feeds, stop_at_end)
        # With --stop-at-end the end of partition is final and comes with the fetches, so no
        # broker query is needed; in tail mode only a query can show a quiet topic's end.
        if (
            blocker is not None
            and not stop_at_end
            and stamp_of(blocked_key) + MAX_APPEND_DELAY_MS < now_s * 1000
            and blocker.may_be_at_end()
            and blocker.prove_end(feeds, now_s, self._clock, self._prober or blocker.consumer)
        ):
            more, _, _ = merge_records(feeds, stop_at_end)
            out += more
        for feed in feeds:
            feed.compact()
        if now_s >= self._lag_due:
            self._lag_due = now_s + LAG_EVERY_S
            for feed in feeds:
                feed.observe_lag()
        return out

    def snapshot(self) -> dict[str, int]:
        return {feed.topic: feed.offset for feed in self._feeds}

    def close(self) -> None:
        for feed in self._feeds:
            feed.consumer.close()
        if self._prober is not None:
            self._prober.close()


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
            [Consumer(config) for _ in self.topics],
            self.topics,
            int(for_part),
            resume_state,
            self.batch_size,
            not self.tail,
            prober=Consumer(config) if self.tail else None,
        )
