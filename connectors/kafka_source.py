"""The flow's Kafka input: both event topics, decoded inside the source, keyed by user.

Bytewax source partition `i` reads partition `i` of every event topic, one assigned
consumer each (no consumer group), resumed from the offsets in the snapshot, and emits
them in one merge order (ADR 0006: `merge_key`, `merge_records`), which depends on the
topics' content only. Fetched messages become `(user_id, Accepted)` and `(key, Rejected)`
pairs in one pass: no per-message wrapper object and no separate decode or keying step,
which is most of what a Python dataflow spends per event before the features themselves
(BENCHMARKS.md, "Flow").

The merge itself (`Feed`, `merge_records`, `merge_key`) is `connectors.kafka_merge`; the
clients' configuration is `connectors.kafka_config.client_config` (role `source` for the
readers, `admin` for the partition count), so `OO_KAFKA_PROPERTIES(_FILE)` reach them too.

Failure behaviour: a message that does not decode or validate, whose key does
not match its user, or that the client reports as an error becomes a
`Rejected` (reason, original bytes, topic, partition, offset) and flows on to
the dead-letter topic; nothing here raises for bad input. A missing topic is
an error at start, naming it; a cluster that refuses the connection (SASL/TLS) is a
`KafkaSecurityError` at start, one that does not answer a `KafkaUnavailableError`, both
naming the broker and the cause.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer
from confluent_kafka.admin import AdminClient

from connectors.batching import KAFKA_BATCH_SIZE
from connectors.codec import (
    _PARSE,
    MAX_EVENT_BYTES,
    MAX_FUTURE_S,
    MAX_NANOS,
    MAX_OFFSET_MINUTES,
    MAX_TIMESTAMP_S,
    MIN_OCCURRED_AT_S,
    MIN_TIMESTAMP_S,
    ONE_STAMP_READS,
    PAYLOAD_RULES,
    PAYLOAD_TIMESTAMPS,
    RULELESS_KINDS,
    check,
    parse_and_check,
)
from connectors.exceptions import ConnectorError
from connectors.kafka_config import ClientErrors, client_config, new_client, wait_reachable
from connectors.kafka_merge import (
    _EOF,
    _OCCURRED_BITS,
    _OCCURRED_MAX,
    _RANK_BITS,
    MAX_APPEND_DELAY_MS,
    Decoded,
    Feed,
    Keyed,
    merge_key,
    merge_records,
    stamp_of,
)
from connectors.records import Accepted, Rejected

if TYPE_CHECKING:
    from connectors.settings import ConnectorSettings

__all__ = [
    "MAX_APPEND_DELAY_MS",
    "Decoded",
    "KafkaEventSource",
    "Keyed",
    "decode_messages",
    "merge_key",
    "merge_records",
]

LAG_EVERY_S = 1.0


def decode_messages(
    messages: list[Any],
    now_s: float,
    rank: int = 0,
    stamp: int = 0,
    source: tuple[str, int] | None = None,
) -> Decoded:
    """Fetched confluent-kafka messages into keyed records, in order, each with its merge key
    (`merge_key`, for the topic of rank `rank`; `stamp`: the last usable Kafka timestamp
    before these messages); each record carries the message's offset (-1: none).
    End-of-partition events are skipped (the feeds
    track ends). `source`: the (topic, partition) all the messages come from (a feed's
    consumer reads one), else read from each message.

    Never raises for what a message holds: whatever fails (decoding, validation, a parser's
    own error, a missing or foreign key) makes that message a `Rejected` with its reason.

    Validation is `codec.parse_and_check`'s, inline for the usual message (ADR 0049): every
    bound is compared as `check` compares it, the payload's own rule run as `check` runs it,
    and anything else (a message that does not parse, is larger than `MAX_EVENT_BYTES`,
    breaks or may break an envelope rule, a user id not yet seen valid, no payload) goes to
    `codec.check` or `parse_and_check` themselves, which accept or word the refusal.
    `tests/unit/test_kafka_source.py` holds the two to the same answers."""
    out: list[Keyed] = []
    keys: list[int] = []
    append, add_key = out.append, keys.append
    rejected = 0
    now_ms = int(now_s * 1000)
    latest_s = now_s + MAX_FUTURE_S  # as `check` bounds occurred_at: seconds <= now + 1 day
    parse = _PARSE
    user_keys = _USER_KEYS
    stamp_reads = ONE_STAMP_READS
    two_stamp_reads = _TWO_STAMP_READS
    ruleless = RULELESS_KINDS
    for msg in messages:
        error = msg.error()
        if error is not None and error.code() == _EOF:
            continue
        ts = msg.timestamp()[1]
        if ts > 0:
            stamp = ts
        # else: a message without a usable timestamp keeps its place behind the one before.
        offset = msg.offset()
        if offset is None:
            offset = -1
        value = msg.value() or b""
        if error is None:
            try:
                try:
                    event = parse(value)
                except Exception:
                    event = None  # `parse_and_check` below words it
                if event is None:
                    event, kind, occurred_ms = parse_and_check(value, now_s=now_s)
                    user_key = None
                else:
                    user_id = event.user_id
                    occurred_at = event.occurred_at
                    seconds = occurred_at.seconds
                    nanos = occurred_at.nanos
                    kind = event.WhichOneof("payload")
                    user_key = user_keys.get(user_id)
                    if (
                        user_key is None
                        or len(value) > MAX_EVENT_BYTES
                        or not event.event_id
                        or not MIN_OCCURRED_AT_S <= seconds <= latest_s
                        or not 0 <= nanos <= MAX_NANOS
                        or not -MAX_OFFSET_MINUTES <= event.utc_offset_minutes <= MAX_OFFSET_MINUTES
                    ):
                        # `check` itself: its answer, or its refusal worded.
                        kind, occurred_ms = check(event, now_s=now_s, encoded_size=len(value))
                        user_key = None
                    else:
                        read_stamp = stamp_reads.get(kind)  # type: ignore[arg-type]
                        if read_stamp is not None:
                            due = read_stamp(event)
                            if not (
                                MIN_TIMESTAMP_S <= due.seconds <= MAX_TIMESTAMP_S
                                and 0 <= due.nanos <= MAX_NANOS
                            ):
                                PAYLOAD_RULES[kind](event)  # type: ignore[index]
                        elif kind in two_stamp_reads:
                            # Both timestamps inline too, the rule only to word a refusal.
                            read_first, read_second = two_stamp_reads[kind]  # type: ignore[index]
                            first, second = read_first(event), read_second(event)
                            if not (
                                MIN_TIMESTAMP_S <= first.seconds <= MAX_TIMESTAMP_S
                                and 0 <= first.nanos <= MAX_NANOS
                                and MIN_TIMESTAMP_S <= second.seconds <= MAX_TIMESTAMP_S
                                and 0 <= second.nanos <= MAX_NANOS
                            ):
                                PAYLOAD_RULES[kind](event)  # type: ignore[index]
                        elif kind not in ruleless:
                            rule = PAYLOAD_RULES.get(kind)  # type: ignore[arg-type]
                            if rule is None:  # no payload: `check` words it
                                kind, occurred_ms = check(event, now_s=now_s)
                            else:
                                rule(event)
                        occurred_ms = seconds * 1000 + nanos // 1_000_000
            except ConnectorError as exc:
                reason = f"in step 'read_events': {exc}"
            except Exception as exc:  # a parser's own failure must not stop the flow
                reason = f"in step 'read_events': {type(exc).__name__}: {exc!s:.200}"
            else:
                user_id = event.user_id if user_key is None else user_id
                key = msg.key()
                if user_key is None:
                    user_key = user_id.encode()
                    if key == user_key:
                        # Seen valid (`check` passed it): its next events skip the pattern.
                        if len(user_keys) >= _USER_KEYS_KEPT:
                            user_keys.clear()
                        user_keys[user_id] = user_key
                if key == user_key:
                    append(
                        (
                            user_id,
                            Accepted(
                                event,
                                ts if ts > 0 else now_ms,
                                kind,  # type: ignore[arg-type]
                                occurred_ms,
                                value,  # not `msg`: freed once decoded (ADR 0056)
                                (msg.topic(), msg.partition()) if source is None else source,
                                offset,
                            ),
                        )
                    )
                    # merge_key(stamp, occurred_ms, rank), inline (once per event)
                    place = occurred_ms
                    if not 0 <= place <= _OCCURRED_MAX:
                        place = 0 if place < 0 else _OCCURRED_MAX
                    add_key((((stamp << _OCCURRED_BITS) | place) << _RANK_BITS) | rank)
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
        partition = msg.partition()
        append(
            (
                "",
                Rejected(
                    reason,
                    value,
                    msg.topic() or "",
                    -1 if partition is None else partition,
                    offset,
                    msg.key(),
                ),
            )
        )
        add_key(merge_key(stamp, 0, rank))
        rejected += 1
    return Decoded(out, rejected, keys, stamp)


_TWO_STAMP_READS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    kind: (attrgetter(f"{kind}.{names[0]}"), attrgetter(f"{kind}.{names[1]}"))
    for kind, names in PAYLOAD_TIMESTAMPS.items()
    if len(names) == 2
}
"""The payload kinds with two timestamps (`codec.PAYLOAD_TIMESTAMPS`), for `decode_messages`'
inline check: both compared as `codec.ONE_STAMP_READS`' one is (ADR 0056); `PAYLOAD_RULES`
runs only to word a refusal."""

_USER_KEYS: dict[str, bytes] = {}
"""User id -> its UTF-8 bytes (the message key it must come with), for user ids `codec.check`
has accepted: a later event of the user skips the pattern and the encoding. Emptied when full."""
_USER_KEYS_KEPT = 100_000


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
        """One consumer per topic (`Feed`); `clock` is the wall time in seconds; `prober`, a
        client with no assignment for the broker queries of a topic's end (default: the
        topic's own consumer)."""
        self._feeds: list[Feed] = []
        for rank, (topic, consumer) in enumerate(zip(topics, consumers, strict=True)):
            offset = (resume or {}).get(topic, OFFSET_BEGINNING)
            self._feeds.append(
                Feed(consumer, topic, rank, index, offset, len(topics), decode_messages)
            )
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
        settings: ConnectorSettings | None = None,
    ) -> None:
        """`settings`: where `OO_KAFKA_*` come from (None: the environment of each process)."""
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.tail = tail
        self.batch_size = batch_size
        self.settings = settings

    def _timeout_s(self) -> float:
        return 30.0 if self.settings is None else max(self.settings.kafka_timeout_s, 1.0)

    def list_parts(self) -> list[str]:
        errors = ClientErrors(self.bootstrap, "flow source admin")
        admin = new_client(
            AdminClient,
            client_config(self.settings, "admin", bootstrap=self.bootstrap, errors=errors),
        )
        counts: dict[str, int] = {}
        for topic in self.topics:
            meta = wait_reachable(admin, errors, self._timeout_s(), topic).topics.get(topic)
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
        # Reaching the end is how a topic stops holding the other back (and, with
        # --stop-at-end, where reading stops): enable.partition.eof is the role's own.
        overrides: dict[str, Any] = {}
        if not self.tail:
            # Reading to the end: an empty fetch should come back at once rather than wait out
            # the broker's long poll (500 ms by default) before the end is reported.
            overrides["fetch.wait.max.ms"] = 10
        errors = ClientErrors(self.bootstrap, "flow source")
        config = client_config(
            self.settings, "source", overrides, bootstrap=self.bootstrap, errors=errors
        )
        return _EventPartition(
            [new_client(Consumer, config) for _ in self.topics],
            self.topics,
            int(for_part),
            resume_state,
            self.batch_size,
            not self.tail,
            prober=new_client(Consumer, config) if self.tail else None,
        )
