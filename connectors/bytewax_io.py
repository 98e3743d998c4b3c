"""Bytewax sources and sinks of the engine: Kafka and event-log files in; the store, dead letters out.

The flow (`flows/`) wires these to `features`; nothing here knows a feature.

Dead letters (ADR 0011): `DeadLetterSink` publishes each `Rejected` compressed, waits for
every delivery report before the batch counts as written, retries without limit while the
broker is away, and when the broker refuses a record as too large, sends it again with its
value cut down and the original size in the `oo.truncated` header: a dead letter is never
dropped. Event-log files are read as bytes and decoded line by line, so no line (bad UTF-8
included) stops the reading.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)
from confluent_kafka import KafkaError, KafkaException, Producer

from connectors import flow_metrics, topics
from connectors.exceptions import DeliveryError, KafkaSecurityError, KafkaUnavailableError
from connectors.kafka_config import ClientErrors, client_config, new_client, wait_reachable
from connectors.kafka_source import Keyed
from connectors.records import Accepted, Rejected, RejectsFile, decode_line
from connectors.store import open_store
from connectors.store.base import UserWrite
from connectors.store_retry import RetryingWriter, RetryPolicy

if TYPE_CHECKING:
    from connectors.settings import ConnectorSettings

LINES_PER_BATCH = 1000
LINES_READ = [0]
"""Lines read by event-log sources in this process (a progress bar polls it)."""

log = logging.getLogger(__name__)


class _LinePartition(StatefulSourcePartition[tuple[str, int, bytes], int]):
    def __init__(self, path: Path, resume_line: int | None) -> None:
        self._path = path
        # Bytes: a line that is not UTF-8 is that line's reject (decode_line), not a crash.
        self._file = path.open("rb")
        self._line_no = 0
        for _ in range(resume_line or 0):
            self._file.readline()
            self._line_no += 1

    def next_batch(self) -> list[tuple[str, int, bytes]]:
        batch = []
        for _ in range(LINES_PER_BATCH):
            line = self._file.readline()
            if not line:
                break
            self._line_no += 1
            batch.append((str(self._path), self._line_no, line))
        if not batch:
            raise StopIteration()
        LINES_READ[0] += len(batch)
        return batch

    def snapshot(self) -> int:
        return self._line_no

    def close(self) -> None:
        self._file.close()


class EventLogSource(FixedPartitionedSource[tuple[str, int, bytes], int]):
    """An event-log file (canonical JSON, one event per line) as one resumable partition."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"event log {self.path} does not exist")

    def list_parts(self) -> list[str]:
        return [str(self.path)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _LinePartition:
        return _LinePartition(self.path, resume_state)


def decode_line_batch(items: list[tuple[str, int, bytes]]) -> list[Keyed]:
    """Event-log lines into keyed records, like the Kafka source emits them."""
    now_s = time.time()
    ingest = int(now_s * 1000)
    out: list[Keyed] = []
    rejected: dict[str, int] = {}
    read: dict[str, int] = {}
    for path, line_no, line in items:
        record = decode_line(path, line_no, line, ingest_ms=ingest, now_s=now_s)
        if record is None:
            continue
        read[path] = read.get(path, 0) + 1
        if record.__class__ is Accepted:
            out.append((record.event.user_id, record))  # type: ignore[union-attr]
        else:
            out.append(("", record))
            rejected[path] = rejected.get(path, 0) + 1
    for path, n in read.items():
        flow_metrics.count_read(path, n, rejected.get(path, 0))
    return out


class _StorePartition(StatelessSinkPartition[UserWrite]):
    def __init__(
        self,
        url: str,
        key_prefix: str,
        freshness: bool,
        retry: RetryPolicy,
        ledger_url: str | None = None,
    ) -> None:
        # No retries inside the client: the writer below retries whole batches with backoff,
        # and a stalled Redis costs one socket timeout per attempt, not three.
        self._store = open_store(
            url,
            key_prefix=key_prefix,
            freshness=freshness,
            client_retries=0,
            ledger_url=ledger_url,
        )
        self._writer: RetryingWriter[list[UserWrite], list[str]] = RetryingWriter(
            self._store.write_batch, where=url.split("://", 1)[0] + " store", policy=retry
        )

    def write_batch(self, items: list[UserWrite]) -> None:
        writes = _coalesce(items)
        if not writes:
            return
        # Returns only once the store took the batch: blocking the worker is the backpressure.
        refused = self._writer.write(writes)
        flow_metrics.observe_writes(writes)
        if refused:
            flow_metrics.count_history_refused(refused)

    def close(self) -> None:
        flow_metrics.report_history_refused(force=True)
        self._store.close()


def _coalesce(items: list[UserWrite]) -> list[UserWrite]:
    """Keep one write per user per batch: a later write of the same user supersedes agent by agent."""
    by_user: dict[str, UserWrite] = {}
    for item in items:
        previous = by_user.get(item.user_id)
        if previous is None or item.deleted_at_ms is not None:
            by_user[item.user_id] = item
            continue
        previous.agents.update(item.agents)
        previous.removed_agents = (
            previous.removed_agents - item.agents.keys()
        ) | item.removed_agents
        for agent_id in item.removed_agents:
            previous.agents.pop(agent_id, None)
        previous.feedback = item.feedback or previous.feedback
        previous.consents = item.consents or previous.consents
        previous.newest_event_ms = item.newest_event_ms
        previous.newest_ingest_ms = item.newest_ingest_ms
        previous.history = item.history or previous.history
    return list(by_user.values())


STORE_QUEUE_WRITES = 20_000
"""User writes the flow may hand the store writer ahead of the store (bounded memory; about
4 s of a tail-mode flow at 5,000 events/s). A bound in writes, not batches (ADR 0039): a
tail-mode batch holds a dozen writes, and 8 of them filled a bound of 8 batches while the
writer waited on one round trip, stopping the worker (no fetch, no fold, no due write) for
as long."""
_STOP = object()


class _OverlappedStorePartition(StatefulSinkPartition[UserWrite, None]):
    """The store partition, writing in a thread of its own so the worker folds the next batch
    while the store applies this one.

    Order: one FIFO queue and one writer thread, so every user's writes reach the store in the
    order the flow made them; batches that waited together are coalesced into one round trip
    (as `_coalesce` does within a batch), so a store that falls behind gets fewer, larger writes.
    Durability at epochs (ADR 0026): Bytewax calls `snapshot` at the end of every epoch in
    which this partition took writes, before that epoch can be committed to the recovery store;
    `snapshot` returns only once every batch handed over so far is in the store, so a resumed
    flow never skips a write it made before its snapshot. Backpressure: once
    `STORE_QUEUE_WRITES` writes wait for the writer, `write_batch` blocks until it takes them
    (a batch larger than the bound is taken alone), as the direct write did.
    Failure: store outages are retried by the `RetryingWriter` inside the thread (unchanged);
    any other exception in the thread is raised in the worker at its next `write_batch`,
    `snapshot` or `close`, so the flow fails as it did when it wrote directly.
    """

    def __init__(self, writer: _StorePartition, max_writes: int = STORE_QUEUE_WRITES) -> None:
        self._writer = writer
        self._queue: queue.Queue[Any] = queue.Queue()
        self._max_writes = max_writes
        self._waiting = 0
        """Writes handed over and not yet taken by the writer thread."""
        self._room = threading.Condition()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def write_batch(self, items: list[UserWrite]) -> None:
        self._raise_failure()
        with self._room:
            while self._waiting and self._waiting + len(items) > self._max_writes:
                self._room.wait()
            self._waiting += len(items)
        self._queue.put(items)

    def _taken(self, items: list[UserWrite]) -> None:
        with self._room:
            self._waiting -= len(items)
            self._room.notify()

    def snapshot(self) -> None:
        self._queue.join()
        self._raise_failure()

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()
        self._writer.close()
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise RuntimeError("the store writer thread failed") from self._error

    def _run(self) -> None:
        while True:
            items = self._queue.get()
            taken = 1
            try:
                if items is _STOP:
                    return
                self._taken(items)
                batch = list(items)
                # Whatever else waits goes in the same round trip (order kept).
                while True:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    taken += 1
                    if more is _STOP:
                        self._queue.put(_STOP)  # seen after this batch is written
                        taken -= 1
                        self._queue.task_done()
                        break
                    self._taken(more)
                    batch += more
                if self._error is None:
                    self._writer.write_batch(batch)
            except BaseException as exc:  # raised in the worker at its next call
                self._error = exc
                log.error("the store writer failed; the flow stops at its next write", exc_info=exc)
            finally:
                for _ in range(taken):
                    self._queue.task_done()


class StoreSink(FixedPartitionedSink[UserWrite, None]):
    """Writes the flow's coalesced user writes to the store, overlapped with the folding.

    One partition (`store`), built on the worker Bytewax makes its primary: a writer thread
    takes the batches in order and applies each waiting run in one round trip
    (`_OverlappedStorePartition`), and the end of every epoch waits until they are all in the
    store. A batch the store refuses (unreachable, stopped, restarting) is retried, whole and
    in order, with capped jittered backoff until the store takes it
    (`connectors.store_retry`); meanwhile at most `STORE_QUEUE_WRITES` more writes wait and then the
    worker reads nothing more. The flow never crashes on a store outage. Items are
    `(user_id, UserWrite)`.
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "oo",
        freshness: bool = True,
        retry: RetryPolicy | None = None,
        ledger_url: str | None = None,
    ) -> None:
        self.url = url
        self.key_prefix = key_prefix
        self.freshness = freshness
        self.ledger_url = ledger_url
        """The tip ledger's own Redis (ADR 0052): deletions and consent revocations reach it."""
        self.retry = retry or RetryPolicy()

    def list_parts(self) -> list[str]:
        return ["store"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> _OverlappedStorePartition:
        writer = _StorePartition(
            self.url, self.key_prefix, self.freshness, self.retry, ledger_url=self.ledger_url
        )
        return _OverlappedStorePartition(writer)


TRUNCATED_VALUE_BYTES = 256 * 1024
"""A value the broker refuses as too large is cut to this (then a quarter of it, ...)."""
MAX_KEY_BYTES = 1024
_LOG_EVERY_S = 10.0
_Letter = tuple[bytes, bytes | None, list[tuple[str, bytes]]]
"""A dead letter as produced: value, key, headers."""


def dead_letter_config(
    bootstrap: str, *, settings: ConnectorSettings | None = None, errors: ClientErrors | None = None
) -> dict[str, Any]:
    """The dead-letter producer: the event producer's guarantees, zstd, never giving up
    (`client_config(settings, "dead_letter")`)."""
    return client_config(settings, "dead_letter", bootstrap=bootstrap, errors=errors)


class _DeadLetterPartition(StatelessSinkPartition[Rejected]):
    def __init__(self, bootstrap: str, topic: str, settings: ConnectorSettings | None) -> None:
        self._topic = topic
        errors = ClientErrors(bootstrap, "dead-letter producer")
        config = dead_letter_config(bootstrap, settings=settings, errors=errors)
        self._producer = new_client(Producer, config)
        # Fail at start, naming the broker and cause, when the cluster refuses this client
        # (SASL/TLS), rather than wait for the first letter forever; a broker that is merely
        # away is waited for, as every letter is (ADR 0011).
        timeout_s = settings.kafka_timeout_s if settings is not None else 10.0
        try:
            wait_reachable(self._producer, errors, timeout_s)
        except KafkaSecurityError:
            raise
        except KafkaUnavailableError as exc:
            log.warning("dead-letter producer: %s; letters wait for it", exc)
        self._logged_s = 0.0

    def write_batch(self, items: list[Rejected]) -> None:
        letters = [_letter(item) for item in items]
        for index, error in self._send(letters):
            self._deliver_alone(letters[index], error)

    def _send(self, letters: list[_Letter]) -> list[tuple[int, KafkaError]]:
        """Produce every letter and wait for every delivery report; the refused ones."""
        refused: list[tuple[int, KafkaError]] = []
        for index, (value, key, headers) in enumerate(letters):
            self._produce(value, key, headers, index, refused)
        self._wait()
        return refused

    def _deliver_alone(self, letter: _Letter, error: KafkaError) -> None:
        """One refused letter, sent by itself until the broker takes it: too large (alone, not
        merely in a batch with others), it is cut; any other refusal is retried with backoff."""
        sent_alone = False
        attempts = 0
        while True:
            if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                if sent_alone:
                    letter = _truncated(*letter)
                    flow_metrics.DEADLETTER_TRUNCATED.inc()
                sent_alone = True
            else:
                attempts += 1
                if attempts > 10:
                    raise DeliveryError(f"a dead letter to {self._topic} was refused: {error}")
                time.sleep(min(5.0, 0.1 * 2**attempts))
            refused = self._send([letter])
            if not refused:
                return
            error = refused[0][1]

    def _produce(
        self,
        value: bytes,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        index: int,
        refused: list[tuple[int, KafkaError]],
    ) -> None:
        def delivered(error: KafkaError | None, _msg: Any) -> None:
            if error is not None:
                refused.append((index, error))

        while True:
            try:
                self._producer.produce(
                    self._topic,
                    value,
                    key,
                    headers=list[tuple[str, str | bytes | None]](headers),
                    on_delivery=delivered,
                )
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                self._producer.poll(0.5)
            except KafkaException as exc:  # refused locally (e.g. over message.max.bytes)
                refused.append((index, exc.args[0]))
                return

    def _wait(self) -> None:
        # Every delivery report, however long the broker is away (message.timeout.ms = 0).
        while self._producer.flush(1.0) > 0:
            now = time.monotonic()
            if now - self._logged_s >= _LOG_EVERY_S:
                self._logged_s = now
                log.warning(
                    "dead letters waiting for the broker: %d not confirmed yet", len(self._producer)
                )

    def close(self) -> None:
        self._wait()


def _letter(item: Rejected) -> _Letter:
    headers = item.headers()
    key = item.key
    if key is not None and len(key) > MAX_KEY_BYTES:
        headers.append(("oo.key_truncated", str(len(key)).encode()))
        key = key[:MAX_KEY_BYTES]
    return item.raw, key, headers


def _truncated(value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]) -> _Letter:
    """The letter with its value cut (the original size says so in `oo.truncated`)."""
    original = dict(headers).get("oo.truncated")
    if not value:
        raise DeliveryError("a dead letter was refused as too large with an empty value")
    if original is None:
        size, cut = len(value), min(TRUNCATED_VALUE_BYTES, len(value) // 2)
    else:
        size, cut = int(original), len(value) // 4
    kept = [(k, v) for k, v in headers if k != "oo.truncated"]
    return value[:cut], key, [*kept, ("oo.truncated", str(size).encode())]


class DeadLetterSink(DynamicSink[Rejected]):
    """Rejected records to the dead-letter topic: compressed, every delivery confirmed."""

    def __init__(
        self, bootstrap: str, topic: str, *, settings: ConnectorSettings | None = None
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeadLetterPartition:
        return _DeadLetterPartition(self.bootstrap, self.topic, self.settings)


def dead_letter_sink(
    bootstrap: str, *, topic_prefix: str = "", settings: ConnectorSettings | None = None
) -> DeadLetterSink:
    return DeadLetterSink(bootstrap, topic_prefix + topics.DEADLETTER, settings=settings)


def to_dead_letter(
    rejected: Rejected, *, topic_prefix: str = ""
) -> KafkaSinkMessage[bytes | None, bytes]:
    """A Rejected as Bytewax's Kafka sink message (for callers of Bytewax's `KafkaSink`)."""
    return KafkaSinkMessage(
        key=rejected.key,
        value=rejected.raw,
        topic=topic_prefix + topics.DEADLETTER,
        headers=rejected.headers(),
    )


class _RejectsPartition(StatelessSinkPartition[Rejected]):
    def __init__(self, path: Path) -> None:
        self._file = RejectsFile(path, mode="a")

    def write_batch(self, items: Iterable[Rejected]) -> None:
        for item in items:
            self._file.add(item)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class RejectsFileSink(DynamicSink[Rejected]):
    """Rejected records as JSON lines (line, source, reason, raw) in a file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RejectsPartition:
        suffix = "" if worker_count == 1 else f".{worker_index}"
        return _RejectsPartition(self.path.with_name(self.path.name + suffix))
