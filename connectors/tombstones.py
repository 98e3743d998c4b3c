"""Durable tombstones: the compacted topic `oo.tombstones.v1`, one record per deleted user.

The source of truth for "this user was deleted at T" (ADR 0008). The API publishes a record,
confirmed, before it answers a deletion; the flow publishes one when it folds a `UserDeleted`
that came from elsewhere. A flow or a refill reads the whole topic *before it writes anything*
and re-applies the tombstones the store lacks (`FeatureStore.restore_tombstones`), so the store
refuses every write of a deleted user's data from the first write on, even into a store that
lost its data and during a replay from the beginning of the log.

Record: key = the user id (UTF-8), value = JSON `{"deleted_at_ms": <epoch ms>}`. Compaction
keeps the newest record per user; readers keep the largest deletion time they see.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

from bytewax.connectors.kafka import KafkaSink
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from connectors import topics
from connectors.exceptions import DeliveryError, KafkaUnavailableError
from connectors.kafka_config import ClientErrors, client_config, new_client, wait_reachable

if TYPE_CHECKING:
    from connectors.settings import ConnectorSettings

__all__ = ["TombstoneLog", "ensure_topic", "read_tombstones", "record", "sink"]

log = logging.getLogger(__name__)

TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    # Compact soon after a deletion: the topic stays about one record per deleted user.
    "min.cleanable.dirty.ratio": "0.1",
    "segment.ms": str(24 * 3600 * 1000),
}


def topic_name(prefix: str = "") -> str:
    return prefix + topics.TOMBSTONES


def record(user_id: str, deleted_at_ms: int) -> tuple[bytes, bytes]:
    """The (key, value) of a tombstone record."""
    return user_id.encode(), json.dumps({"deleted_at_ms": int(deleted_at_ms)}).encode()


def parse(key: bytes | None, value: bytes | None) -> tuple[str, int] | None:
    """(user id, deletion ms) of a record; None for a record that is not one (logged)."""
    try:
        if not key or not value:
            raise ValueError("empty key or value")
        return key.decode(), int(json.loads(value)["deleted_at_ms"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        log.warning("ignoring a tombstone record that does not parse: %s", exc)
        return None


def sink(bootstrap: str, *, settings: ConnectorSettings | None = None) -> KafkaSink:
    """The flow's Bytewax sink for tombstone records (`KafkaSinkMessage`s naming the topic)."""
    config = client_config(settings, "producer", {"linger.ms": 0}, bootstrap=bootstrap)
    return KafkaSink([bootstrap], topic=None, add_config=config)


def ensure_topic(
    bootstrap: str,
    *,
    topic_prefix: str = "",
    partitions: int = 4,
    timeout_s: float = 10.0,
    settings: ConnectorSettings | None = None,
) -> None:
    """Create the compacted tombstone topic when it does not exist."""
    name = topic_name(topic_prefix)
    errors = ClientErrors(bootstrap, "admin")
    admin = new_client(
        AdminClient, client_config(settings, "admin", bootstrap=bootstrap, errors=errors)
    )
    if name in wait_reachable(admin, errors, timeout_s).topics:
        return
    try:
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=-1, config=TOPIC_CONFIG)],
            request_timeout=timeout_s,
            operation_timeout=timeout_s,
        )
        futures[name].result(timeout=timeout_s)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return
        raise KafkaUnavailableError(f"tombstone topic {name!r} at {bootstrap}: {exc}") from exc
    except TimeoutError as exc:
        raise KafkaUnavailableError(
            f"Kafka at {bootstrap} did not create {name!r} within {timeout_s:g} s"
        ) from exc


class TombstoneLog:
    """Publishes tombstone records; `publish` returns only once the broker confirmed."""

    def __init__(
        self,
        bootstrap: str,
        *,
        topic_prefix: str = "",
        partitions: int = 4,
        timeout_s: float = 10.0,
        settings: ConnectorSettings | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self._settings = settings
        self.topic = topic_name(topic_prefix)
        self._topic_prefix = topic_prefix
        self._partitions = partitions
        self._timeout_s = timeout_s
        self._ready = False
        self._producer = new_client(
            Producer, client_config(settings, "producer", {"linger.ms": 0}, bootstrap=bootstrap)
        )

    def publish(self, user_id: str, deleted_at_ms: int, *, timeout_s: float | None = None) -> None:
        """Write the user's tombstone and wait for the broker's confirmation.

        Raises `KafkaUnavailableError` when it is not confirmed within `timeout_s`,
        `DeliveryError` when the broker refuses it.
        """
        timeout = self._timeout_s if timeout_s is None else timeout_s
        if not self._ready:
            ensure_topic(
                self.bootstrap,
                topic_prefix=self._topic_prefix,
                partitions=self._partitions,
                timeout_s=timeout,
                settings=self._settings,
            )
            self._ready = True
        outcome: list[KafkaError | None] = []
        key, value = record(user_id, deleted_at_ms)
        try:
            self._producer.produce(
                self.topic, value, key, on_delivery=lambda err, _msg: outcome.append(err)
            )
        except (BufferError, KafkaException) as exc:
            raise DeliveryError(f"tombstone of {user_id!r} refused by the client: {exc}") from exc
        self._producer.flush(timeout)
        if not outcome:
            raise KafkaUnavailableError(
                f"tombstone of {user_id!r} not confirmed by {self.bootstrap} within {timeout:g} s"
            )
        if outcome[0] is not None:
            raise DeliveryError(f"tombstone of {user_id!r} refused: {outcome[0].str()}")

    def close(self) -> None:
        self._producer.flush(self._timeout_s)


def _watermarks(consumer: Consumer, tp: TopicPartition, deadline: float) -> tuple[int, int]:
    """The partition's (low, high) offsets, retried while a new topic elects its leaders."""
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                tp, timeout=max(deadline - time.monotonic(), 0.1)
            )
            return int(low), int(high)
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(
                    f"no offsets for {tp.topic} [{tp.partition}]: {exc}"
                ) from exc
            time.sleep(0.2)


def read_tombstones(
    bootstrap: str,
    *,
    topic_prefix: str = "",
    timeout_s: float = 30.0,
    settings: ConnectorSettings | None = None,
) -> dict[str, int]:
    """Every user's tombstone in the topic (largest deletion time per user), read to its end.

    The end is each partition's high watermark when the read starts. A topic that does not
    exist yet holds no tombstone. Raises `KafkaUnavailableError` when the topic cannot be
    read to its end within `timeout_s`.
    """
    name = topic_name(topic_prefix)
    overrides = {
        "group.id": "oo-tombstone-reader",  # required by the client; nothing is committed
        "enable.partition.eof": False,
    }
    errors = ClientErrors(bootstrap, "tombstone reader")
    consumer = new_client(
        Consumer,
        client_config(settings, "consumer", overrides, bootstrap=bootstrap, errors=errors),
    )
    deadline = time.monotonic() + timeout_s
    out: dict[str, int] = {}
    try:
        meta = wait_reachable(consumer, errors, timeout_s, name)  # before assign: poll is safe
        described = meta.topics.get(name)
        if described is None or described.error is not None:
            return out  # no topic yet: nobody was deleted through it
        ends: dict[int, int] = {}
        for partition in described.partitions:
            low, high = _watermarks(consumer, TopicPartition(name, partition), deadline)
            if high > low:
                ends[partition] = high
        if not ends:
            return out
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in ends])
        while ends:
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(
                    f"tombstone topic {name!r} not read to its end within {timeout_s:g} s"
                )
            for msg in consumer.consume(1000, timeout=0.5):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaUnavailableError(f"reading {name!r}: {error.str()}")
                parsed = parse(msg.key(), msg.value())
                if parsed is not None:
                    user_id, deleted_at = parsed
                    if deleted_at > out.get(user_id, -1):
                        out[user_id] = deleted_at
                partition, offset = msg.partition(), msg.offset()
                if partition in ends and offset is not None and offset + 1 >= ends[partition]:
                    del ends[partition]
            # Compaction can remove the last offsets below the high watermark: a partition
            # whose position has reached its end is done even without a message at it.
            if ends:
                for tp in consumer.position([TopicPartition(name, p) for p in ends]):
                    if tp.offset >= 0 and tp.offset >= ends.get(tp.partition, 0):
                        ends.pop(tp.partition, None)
    finally:
        consumer.close()
    return out
