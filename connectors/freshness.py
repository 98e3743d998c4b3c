"""Ingestion stamps: the newest event of each user, recorded before the flow computes anything.

`IngestStamper` reads both event topics in its own consumer group and, per batch of messages,
calls `FeatureStore.stamp_ingest` once with each user's newest and oldest Kafka timestamp.
With those stamps the store knows, for every user, whether the flow has reflected its newest
event, so staleness is computable even for users the flow has not caught up on
(definitions in `serving/README.md`).

It never decodes an event (the key is the user id, the Kafka timestamp the ingest time), so it
costs next to nothing. Only a key that is a valid user id (`codec.USER_ID_PATTERN`) is
stamped: a message without a key, or with a key that is not UTF-8 or not a valid user id, is
skipped and counted by reason (`StamperStatus.skipped_keys`, the API's
`oo_stamper_skipped_keys_total{reason}`), so junk keys never become users in the freshness
summary (the flow dead-letters those messages with their reason). It must never write anything but
stamps, and a failure to stamp is logged and counted, never raised into its host (the API).
Stamps the store refused (it is away) are kept, one entry per user, and sent with the next
batch, so users whose events arrive during a store outage still count as pending.
Several API processes share the group, so Kafka splits the partitions between their stampers.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError

from connectors import clock, topics
from connectors.codec import USER_ID_PATTERN
from connectors.exceptions import StoreError
from connectors.kafka_config import ClientErrors, client_config, new_client
from connectors.store.base import FeatureStore

if TYPE_CHECKING:
    from connectors.settings import ConnectorSettings

__all__ = ["GROUP_ID", "IngestStamper", "StamperStatus", "merge_stamps", "newest_and_oldest"]

log = logging.getLogger(__name__)

_USER_ID_RE = re.compile(USER_ID_PATTERN)
SKIP_REASONS = ("no_key", "not_utf8", "invalid_user_id")
"""Why a message was not stamped (the `reason` label of the skipped-keys counter)."""

GROUP_ID = "oo-freshness-stamper"
"""The consumer group (after the topic prefix): its own, so the flow's offsets are untouched."""


@dataclass(frozen=True, slots=True)
class StamperStatus:
    running: bool
    assigned: bool
    """True once the group gave this stamper its partitions (stamps flow from then on)."""
    stamped_messages: int
    stamped_at_ms: int | None
    """When the last batch was stamped."""
    last_error: str | None
    skipped_keys: dict[str, int] = field(default_factory=dict)
    """Messages not stamped since the start, by reason (`SKIP_REASONS`)."""


def newest_and_oldest(
    messages: list[Any], *, now_ms: int, skipped: Counter[str] | None = None
) -> tuple[dict[str, int], dict[str, int]]:
    """Per user key, the newest and the oldest ingest time of `messages`.

    Errors are ignored; a message whose key is missing, not UTF-8 or not a valid user id is
    skipped and counted in `skipped` by reason (`SKIP_REASONS`).
    """
    newest: dict[str, int] = {}
    oldest: dict[str, int] = {}
    for msg in messages:
        if msg.error() is not None:
            continue
        key = msg.key()
        if not key:
            if skipped is not None:
                skipped["no_key"] += 1
            continue
        try:
            user_id = key.decode("utf-8")
        except UnicodeDecodeError:
            if skipped is not None:
                skipped["not_utf8"] += 1
            continue
        if not _USER_ID_RE.fullmatch(user_id):
            if skipped is not None:
                skipped["invalid_user_id"] += 1
            continue
        kind, ts = msg.timestamp()
        ingest = now_ms if kind == TIMESTAMP_NOT_AVAILABLE or ts <= 0 else ts
        if ingest > newest.get(user_id, -1):
            newest[user_id] = ingest
        if user_id not in oldest or ingest < oldest[user_id]:
            oldest[user_id] = ingest
    return newest, oldest


def merge_stamps(
    held: tuple[dict[str, int], dict[str, int]], batch: tuple[dict[str, int], dict[str, int]]
) -> tuple[dict[str, int], dict[str, int]]:
    """(newest, oldest) of both: per user the newest of the newest, the oldest of the oldest.

    >>> merge_stamps(({"u": 5}, {"u": 2}), ({"u": 4, "v": 9}, {"u": 1, "v": 9}))
    ({'u': 5, 'v': 9}, {'u': 1, 'v': 9})
    """
    if not held[0]:
        return batch
    newest, oldest = dict(held[0]), dict(held[1])
    for user_id, stamp in batch[0].items():
        if stamp > newest.get(user_id, -1):
            newest[user_id] = stamp
    for user_id, stamp in batch[1].items():
        if user_id not in oldest or stamp < oldest[user_id]:
            oldest[user_id] = stamp
    return newest, oldest


class IngestStamper:
    """Stamps ingested events into the store from a background thread.

    stamper = IngestStamper(store, bootstrap="127.0.0.1:9092", topic_prefix="")
    stamper.start()   # returns at once; the consumer connects in the thread
    ...
    stamper.stop()    # leaves the group
    """

    def __init__(
        self,
        store: FeatureStore,
        *,
        bootstrap: str,
        topic_prefix: str = "",
        group_id: str = GROUP_ID,
        batch_size: int = 1000,
        poll_timeout_s: float = 0.2,
        extra_config: dict[str, Any] | None = None,
        on_skipped: Callable[[str, int], None] | None = None,
        settings: ConnectorSettings | None = None,
    ) -> None:
        """`on_skipped(reason, n)` is told of messages not stamped (a metric), per batch."""
        self._store = store
        self._on_skipped = on_skipped
        self._skipped: Counter[str] = Counter()
        self.topics = topics.event_topics(topic_prefix)
        self.group_id = topic_prefix + group_id
        self._batch_size = batch_size
        self._poll_timeout_s = poll_timeout_s
        self._bootstrap = bootstrap
        self._settings = settings
        self._overrides: dict[str, Any] = {
            "group.id": self.group_id,
            "auto.offset.reset": "latest",  # first start: from now on; later: committed offsets
            # Topics created after subscribing (a fresh prefix) are noticed within seconds.
            "topic.metadata.refresh.interval.ms": 5000,
            **(extra_config or {}),
        }
        self._errors = ClientErrors(bootstrap, "ingest stamper")
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._assigned = threading.Event()
        self._stamped = 0
        self._stamped_at_ms: int | None = None
        self._last_error: str | None = None
        self._held: tuple[dict[str, int], dict[str, int]] = ({}, {})
        """(newest, oldest) stamps of batches the store refused, sent with the next batch."""

    @property
    def status(self) -> StamperStatus:
        return StamperStatus(
            running=self._thread is not None and self._thread.is_alive(),
            assigned=self._assigned.is_set(),
            stamped_messages=self._stamped,
            stamped_at_ms=self._stamped_at_ms,
            last_error=self._last_error,
            skipped_keys=dict(self._skipped),
        )

    def wait_assigned(self, timeout_s: float) -> bool:
        """True once partitions are assigned (tests wait for it before producing)."""
        return self._assigned.wait(timeout_s)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("IngestStamper already started")
        self._thread = threading.Thread(target=self._run, name="ingest-stamper", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread (it commits and leaves the group); idempotent."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self._assigned.set()

    def _run(self) -> None:
        try:
            config = client_config(
                self._settings,
                "consumer",
                self._overrides,
                bootstrap=self._bootstrap,
                errors=self._errors,
            )
            consumer = new_client(Consumer, config)
            consumer.subscribe(self.topics, on_assign=self._on_assign)
        except Exception as exc:  # a bad configuration must not take the API down
            self._last_error = f"cannot start: {exc}"
            log.error("ingest stamper cannot start: %s", exc)
            return
        try:
            while not self._stopping.is_set():
                self._step(consumer)
        finally:
            consumer.close()

    def _step(self, consumer: Any) -> None:
        try:
            messages = consumer.consume(self._batch_size, timeout=self._poll_timeout_s)
        except Exception as exc:
            self._fail(f"consume failed: {exc}")
            time.sleep(self._poll_timeout_s)
            return
        for msg in messages:
            error = msg.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                self._fail(f"{msg.topic()} [{msg.partition()}]: {error.str()}")
        refused = self._errors.security_error()
        if refused is not None:  # wrong credentials or CA: say so in /ready, keep trying
            self._errors.security = None
            self._fail(str(refused))
        now_ms = clock.now_ms()
        skipped: Counter[str] = Counter()
        newest, oldest = newest_and_oldest(messages, now_ms=now_ms, skipped=skipped)
        if skipped:
            self._skipped.update(skipped)
            if self._on_skipped is not None:
                for reason, count in skipped.items():
                    self._on_skipped(reason, count)
        # Stamps a failed call held back go with this batch: while the store is away, the
        # users whose events arrive meanwhile must still become pending (ADR 0010).
        newest, oldest = merge_stamps(self._held, (newest, oldest))
        if not newest:
            return
        try:
            self._store.stamp_ingest(newest, oldest=oldest)
        except StoreError as exc:
            # Kept (one entry per user, so bounded) and sent again with the next batch.
            self._held = (newest, oldest)
            self._fail(f"stamping {len(newest)} users failed, kept for the next batch: {exc}")
            return
        except ValueError as exc:
            self._held = ({}, {})
            self._fail(f"stamping {len(newest)} users failed: {exc}")
            return
        self._held = ({}, {})
        self._stamped += len(messages)
        self._stamped_at_ms = now_ms
        self._last_error = None
        try:
            consumer.commit(asynchronous=True)
        except Exception as exc:  # nothing to commit, or the group is rebalancing
            log.debug("ingest stamper commit skipped: %s", exc)

    def _fail(self, reason: str) -> None:
        if reason != self._last_error:
            log.warning("ingest stamper: %s", reason)
        self._last_error = reason
