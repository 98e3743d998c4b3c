"""The merge of the flow's event topics into one order (ADR 0006): one `Feed` per
topic-partition, `merge_records` over them.

`merge_key` places a record: Kafka timestamp, then the event's `occurred_at`, then the topic's
rank. A `Feed` holds what its consumer fetched, decoded and not yet emitted; `merge_records`
emits, head to head, every record whose place is settled (see its docstring). Nothing here
builds a client or knows Bytewax: the source (`kafka_source`) hands each feed its consumer
and its decoder.

Failure behaviour: nothing here raises for what a message holds (the decoder turns it into a
`Rejected`); a failed broker query for a partition's end is retried later, never raised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, TopicPartition

from connectors import flow_metrics
from connectors.records import Accepted, Rejected

Keyed = tuple[str, Accepted | Rejected]
"""What the source emits: `(user_id, Accepted)`, or `(message key or "", Rejected)`."""

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
_OCCURRED_MAX = (1 << _OCCURRED_BITS) - 1
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
    occurred = min(max(occurred_ms, 0), _OCCURRED_MAX)
    return (((stamp_ms << _OCCURRED_BITS) | occurred) << _RANK_BITS) | rank


def stamp_of(key: int) -> int:
    """The Kafka timestamp part of a `merge_key`."""
    return key >> _STAMP_SHIFT


class Decoded(NamedTuple):
    records: list[Keyed]
    rejected: int
    keys: list[int]
    """`merge_key` of each record."""
    stamp: int
    """The Kafka timestamp the next record without a usable one keeps its place behind."""


Decoder = Callable[[list[Any], float, int, int, tuple[str, int]], Decoded]
"""(fetched messages of one topic-partition, the wall time (s), the topic's rank, the last
usable Kafka timestamp before them, (topic, partition)) -> one keyed record per message
that is not an end of partition, in order, with its merge key; each record carries its own
Kafka offset (`Accepted.offset`, `Rejected.offset`; -1: none). One pass over the
messages: the merge's bookkeeping costs no second loop (BENCHMARKS.md, "The source's single
pass")."""


class Feed:
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
        decode: Decoder,
    ) -> None:
        """`consumer`: a confluent-kafka `Consumer` (or anything with its `consume`,
        `get_watermark_offsets`, `assign` and `close`), not yet assigned; `decode`: the
        source's decoder of fetched messages."""
        self._decode = decode
        self.topic = topic
        self.rank = rank
        """Order of this feed's topic among the source's topics (the last tie-break)."""
        self.tp = TopicPartition(topic, partition)
        self.source = (topic, partition)
        """What every record of this feed names as its `Accepted.source`."""
        self.consumer = consumer
        self.consumer.assign([TopicPartition(topic, partition, offset)])
        self.offset = offset
        """Next offset to emit (the resume point): fetched but unemitted messages are re-read."""
        self.records: list[Keyed] = []
        self.keys: list[int] = []
        """`merge_key` of each record (its offset is the record's own)."""
        self.pos = 0
        """Index of the head: the first record not emitted yet."""
        self.base = 0
        """How many records this feed fetched before `records[0]`."""
        self.fetched = offset
        """Next offset the consumer will fetch (negative: a logical offset, nothing fetched)."""
        self.at_end = False
        """The client reported the end of the partition after the last message fetched."""
        self.last_stamp = 0
        """The last usable Kafka timestamp fetched: a message without one sorts behind it."""
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
        # One record per message that is not an end of partition, in order, with its place in
        # the merge (the decoder's contract).
        records, rejected, keys, stamp = self._decode(
            messages, now_s, self.rank, self.last_stamp, self.source
        )
        if not records:
            return
        flow_metrics.count_read(self.topic, len(records), rejected)
        self.last_stamp = stamp
        self.records += records
        self.keys += keys
        # A client error event carries no offset of its own: look past it.
        last_offset = _last_offset(records, len(records))
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
        self, feeds: list[Feed], now_s: float, clock: Callable[[], float], prober: Any
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

    def release_bound(self, feed: Feed, final_end: bool) -> tuple[int, int]:
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
        records = self.records
        taken = records[self.pos : end]
        last_offset = _last_offset(taken, len(taken))
        if last_offset >= 0:
            self.offset = last_offset + 1
        self.pos = end
        return taken

    def compact(self) -> None:
        pos = self.pos
        if pos:
            del self.records[:pos], self.keys[:pos]
            self.base += pos
            self.pos = 0

    def observe_lag(self) -> None:
        _, high = self._high_watermark()
        if high >= 0 and self.offset >= 0:
            self.lag.set(max(0, high - self.offset))


def _last_offset(records: list[Keyed], end: int) -> int:
    """The Kafka offset of the last of `records[:end]` that has one; -1 when none has."""
    for i in range(end - 1, -1, -1):
        offset = records[i][1].offset
        if offset >= 0:
            return offset
    return -1


def merge_records(feeds: list[Feed], final_end: bool) -> tuple[list[Keyed], Feed | None, int]:
    """Emit, in merge order, every waiting record whose place is settled.

    A head-to-head merge: the feed whose head has the smallest `merge_key` goes first, its
    records running on while they stay below every other feed's head. A feed with nothing
    waiting bounds the run by `release_bound` (its final end, or a broker proof that it
    had nothing more). Returns what was emitted and, when the merge stopped on a feed with
    nothing waiting, that feed and the key of the record it held back (a proof of its end
    may let the merge go on).
    """
    out: list[Keyed] = []
    if len(feeds) == 2:
        _merge_both_waiting(feeds[0], feeds[1], out)
    while True:
        first: Feed | None = None
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
        blocker: Feed | None = None
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


def _merge_both_waiting(a: Feed, b: Feed, out: list[Keyed]) -> None:
    """`merge_records`' loop for two feeds while both have records waiting, emitted into
    `out`: the same runs (a feed's head goes first, its records running on while they stay
    below the other's head; nothing else bounds them while the other has one waiting), without
    the general loop's passes over the feeds and a `take` a run (the topics' runs are short
    when their messages interleave in time: ADR 0056). Leaves the rest to the general loop."""
    keys_a, keys_b = a.keys, b.keys
    end_a, end_b = len(keys_a), len(keys_b)
    i, j = start_a, start_b = a.pos, b.pos
    if i >= end_a or j >= end_b:
        return
    records_a, records_b = a.records, b.records
    head_a, head_b = keys_a[i], keys_b[j]
    while True:
        if head_a < head_b:
            run = i
            i += 1
            while i < end_a and keys_a[i] < head_b:
                i += 1
            out += records_a[run:i]
            if i == end_a:
                break
            head_a = keys_a[i]
        else:
            run = j
            j += 1
            while j < end_b and keys_b[j] < head_a:
                j += 1
            out += records_b[run:j]
            if j == end_b:
                break
            head_b = keys_b[j]
    # As `take` would have left them, run after run.
    for feed, start, end in ((a, start_a, i), (b, start_b, j)):
        records = feed.records
        for k in range(end - 1, start - 1, -1):
            offset = records[k][1].offset
            if offset >= 0:
                feed.offset = offset + 1
                break
        feed.pos = end
