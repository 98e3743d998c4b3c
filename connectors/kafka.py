"""Kafka for the engine: the event producer and topic creation.

Every client's configuration comes from `connectors.kafka_config.client_config`
(`producer_config`, `consumer_config`, `admin_config` here are its shorthands).

`EventProducer` publishes validated `oo.events.v1.Event`s: key = `user_id`
(so each user's events stay in order on one partition), value = the
serialized protobuf, topic by the rule of `connectors.topics.topic_for`. The producer is
idempotent with ``acks=all`` and compression, and an event counts as published
only once its delivery report says so: `flush` returns those counts.

Every wait is bounded: a broker that does not answer becomes a
`KafkaUnavailableError` within ``timeout_s``, never a hang. confluent-kafka's
errors are translated here; nothing outside `connectors` imports it for
producing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from connectors import codec, topics
from connectors.exceptions import (
    DecodeError,
    DeliveryError,
    KafkaUnavailableError,
)
from connectors.kafka_config import (
    ClientErrors,
    client_config,
    describe_error,
    new_client,
    wait_reachable,
)
from proto import events_pb2 as pb

if TYPE_CHECKING:
    from connectors.settings import ConnectorSettings

__all__ = [
    "DeliveryCallback",
    "DeliveryReport",
    "EventProducer",
    "admin_config",
    "consumer_config",
    "engine_topics",
    "ensure_topics",
    "producer_config",
]

log = logging.getLogger(__name__)

_FEEDBACK_PAYLOADS = topics.FEEDBACK_PAYLOADS
# Delivery reports are served every this many publishes (and by poll/flush): often
# enough to keep memory flat, rare enough to cost nothing per event.
_POLL_EVERY = 64

DeliveryCallback = Callable[[pb.Event, Exception | None], None]


def producer_config(
    bootstrap: str,
    *,
    extra: dict[str, Any] | None = None,
    settings: ConnectorSettings | None = None,
) -> dict[str, Any]:
    """The event producer's settings: `client_config(settings, "producer", extra)`."""
    return client_config(settings, "producer", extra, bootstrap=bootstrap)


def consumer_config(
    bootstrap: str,
    group_id: str,
    *,
    from_beginning: bool = True,
    extra: dict[str, Any] | None = None,
    settings: ConnectorSettings | None = None,
) -> dict[str, Any]:
    """Settings for reading the engine's topics in group `group_id`; offsets are committed by
    the caller (`client_config(settings, "consumer", ...)`)."""
    wanted = {
        "group.id": group_id,
        "auto.offset.reset": "earliest" if from_beginning else "latest",
    } | (extra or {})
    return client_config(settings, "consumer", wanted, bootstrap=bootstrap)


def admin_config(
    bootstrap: str,
    *,
    extra: dict[str, Any] | None = None,
    settings: ConnectorSettings | None = None,
) -> dict[str, Any]:
    """Settings for the admin client (topic creation, reachability checks)."""
    return client_config(settings, "admin", extra, bootstrap=bootstrap)


def engine_topics(prefix: str = "") -> list[str]:
    """Every topic the engine reads or writes, with `prefix`."""
    return topics.engine_topics(prefix)


def _unavailable(
    bootstrap: str, timeout_s: float, cause: BaseException | KafkaError | None
) -> KafkaUnavailableError:
    detail = describe_error(cause)
    return KafkaUnavailableError(
        f"Kafka at {bootstrap} did not answer within {timeout_s:g} s"
        + (f" ({detail})" if detail else "")
    )


def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int,
    timeout_s: float = 10.0,
    *,
    extra_config: dict[str, Any] | None = None,
    settings: ConnectorSettings | None = None,
) -> list[str]:
    """Create the topics of `names` that do not exist yet; return the ones created.

    New topics get `partitions` partitions and the broker's default replication
    factor. Existing topics are left as they are (never re-partitioned: that
    would move users between partitions). Raises `KafkaUnavailableError` when
    the broker does not answer within `timeout_s` (`KafkaSecurityError` when it refuses the
    connection: SASL or TLS).
    """
    if partitions < 1:
        raise ValueError(f"partitions: expected at least 1; got {partitions}")
    wanted = list(dict.fromkeys(names))
    errors = ClientErrors(bootstrap, "admin")
    admin = new_client(
        AdminClient,
        client_config(settings, "admin", extra_config, bootstrap=bootstrap, errors=errors),
    )
    existing = wait_reachable(admin, errors, timeout_s).topics
    missing = [name for name in wanted if name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=-1) for name in missing],
        request_timeout=timeout_s,
        operation_timeout=timeout_s,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # another process created it meanwhile
            raise KafkaUnavailableError(
                f"could not create topic {name!r} at {bootstrap}: {exc}"
            ) from exc
        except TimeoutError as exc:
            raise _unavailable(bootstrap, timeout_s, exc) from exc
    if created:
        log.info("created topics %s with %d partitions", created, partitions)
    return created


@dataclass
class DeliveryReport:
    """What the delivery reports said: how many events were `published`; which `failed`.

    `failed` holds (event_id, reason) pairs.
    """

    published: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


class EventProducer:
    """Publishes Events to the engine's topics; delivery is confirmed, never assumed.

    >>> EventProducer(bootstrap="127.0.0.1:1", timeout_s=0.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    connectors.exceptions.KafkaUnavailableError: Kafka at 127.0.0.1:1 did not answer within 0.5 s...
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        topic_prefix: str = "",
        timeout_s: float = 10.0,
        partitions: int = 4,
        create_topics: bool = True,
        extra_config: dict[str, Any] | None = None,
        settings: ConnectorSettings | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s: expected > 0; got {timeout_s}")
        self.bootstrap = bootstrap
        self.topic_prefix = topic_prefix
        self.timeout_s = timeout_s
        self._signals_topic = topic_prefix + topics.SIGNALS
        self._feedback_topic = topic_prefix + topics.FEEDBACK
        self._report = DeliveryReport()
        self._produced = 0  # handed to the client since the last flush
        self._errors = ClientErrors(bootstrap, "producer")
        config = client_config(
            settings, "producer", extra_config, bootstrap=bootstrap, errors=self._errors
        )
        config["on_delivery"] = self._on_delivery
        self._producer: Producer | None = new_client(Producer, config)
        try:
            self.ping(timeout_s)
            if create_topics:
                ensure_topics(
                    bootstrap,
                    topics.event_topics(topic_prefix),
                    partitions,
                    timeout_s,
                    extra_config=_admin_subset(extra_config),
                    settings=settings,
                )
        except BaseException:
            self._producer = None
            raise

    # -- callbacks (run inside poll/flush, on the caller's thread) --

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self._report.published += 1
        else:
            self._report.failed.append((_event_id_of(msg.value()), str(err)))

    @property
    def _last_error(self) -> KafkaError | None:
        return self._errors.last

    # -- public API --

    @property
    def _client(self) -> Producer:
        if self._producer is None:
            raise RuntimeError("EventProducer is closed")
        return self._producer

    def ping(self, timeout_s: float = 2.0) -> None:
        """Check that a broker answers within `timeout_s`; raise `KafkaUnavailableError` if not
        (`KafkaSecurityError` at once when it refuses the connection: SASL or TLS)."""
        wait_reachable(self._client, self._errors, timeout_s)

    def publish(
        self,
        event: pb.Event,
        *,
        validate: bool = True,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        """Queue `event` for its topic; the outcome arrives with `poll` or `flush`.

        With `validate` (the default), an invalid event raises `ValidationError`
        here and is not queued. `on_delivery(event, None)` is called once the
        broker confirms, `on_delivery(event, DeliveryError)` if it does not.
        Raises `KafkaUnavailableError` when the local queue stays full for
        `timeout_s` because the broker stopped taking events, `DeliveryError`
        when the client refuses the event outright (e.g. too large).
        """
        if validate:
            codec.validate(event)
        producer = self._producer
        if producer is None:
            raise RuntimeError("EventProducer is closed")
        topic = (
            self._feedback_topic
            if event.WhichOneof("payload") in _FEEDBACK_PAYLOADS
            else self._signals_topic
        )
        value = event.SerializeToString()
        key = event.user_id.encode()
        try:
            if on_delivery is None:  # the client-wide callback: cheapest at 100k events/s
                producer.produce(topic, value, key)
            else:
                producer.produce(topic, value, key, on_delivery=self._wrap(event, on_delivery))
        except BufferError:
            callback = self._on_delivery if on_delivery is None else self._wrap(event, on_delivery)
            self._wait_for_room(topic, value, key, callback)
        except KafkaException as exc:  # refused locally, e.g. larger than message.max.bytes
            raise DeliveryError(f"event {event.event_id!r} refused by the client: {exc}") from exc
        self._produced += 1
        if self._produced % _POLL_EVERY == 0:
            producer.poll(0)

    def _wrap(
        self, event: pb.Event, on_delivery: DeliveryCallback
    ) -> Callable[[KafkaError | None, Message], None]:
        def callback(err: KafkaError | None, msg: Message) -> None:
            self._on_delivery(err, msg)
            on_delivery(event, None if err is None else DeliveryError(str(err)))

        return callback

    def _wait_for_room(
        self,
        topic: str,
        value: bytes,
        key: bytes,
        callback: Callable[[KafkaError | None, Message], None],
    ) -> None:
        # The client's queue is full: serve delivery reports until there is room, but give
        # up when no report at all arrives for timeout_s (the broker stopped answering).
        producer = self._client
        deadline = time.monotonic() + self.timeout_s
        while True:
            if producer.poll(0.05) > 0:
                deadline = time.monotonic() + self.timeout_s
            try:
                producer.produce(topic, value, key, on_delivery=callback)
                return
            except BufferError:
                if time.monotonic() >= deadline:
                    raise _unavailable(self.bootstrap, self.timeout_s, self._last_error) from None

    def poll(self, timeout_s: float = 0) -> None:
        """Serve delivery reports (and callbacks) for up to `timeout_s`."""
        self._client.poll(timeout_s)

    @property
    def pending(self) -> int:
        """Events queued or in flight whose delivery report has not arrived yet."""
        return 0 if self._producer is None else len(self._producer)

    def flush(self, timeout_s: float | None = None) -> DeliveryReport:
        """Wait for the delivery reports of everything published; return what they said.

        The report covers the events published since the previous `flush`.
        With `timeout_s`, waits at most that long; without, waits while reports
        keep arriving and gives up after `self.timeout_s` without any. Events
        still unconfirmed then are counted as failed, with their ids (they may
        or may not have reached the broker: a retry can duplicate them, which
        consumers absorb by `event_id`).
        """
        producer = self._client
        start = time.monotonic()
        quiet_since = start
        delivered = self._report.published + len(self._report.failed)
        while len(producer) > 0:
            now = time.monotonic()
            if timeout_s is not None:
                remaining = start + timeout_s - now
            else:
                remaining = quiet_since + self.timeout_s - now
            if remaining <= 0:
                break
            producer.flush(min(remaining, 0.5))
            seen = self._report.published + len(self._report.failed)
            if seen != delivered:
                delivered, quiet_since = seen, time.monotonic()
        if len(producer) > 0:
            self._give_up(producer)
        report, self._report = self._report, DeliveryReport()
        self._produced = 0
        return report

    def _give_up(self, producer: Producer) -> None:
        waiting = len(producer)
        reason = (
            f"not confirmed within the timeout ({describe_error(self._last_error) or 'no answer'})"
        )
        before = len(self._report.failed)
        # Purged events get a delivery report with a purge error: their ids land in `failed`.
        producer.purge(in_queue=True, in_flight=True)
        producer.flush(1.0)
        self._report.failed[before:] = [(eid, reason) for eid, _ in self._report.failed[before:]]
        unreported = self._produced - self._report.published - len(self._report.failed)
        self._report.failed.extend([("?", reason)] * max(unreported, 0))
        log.warning("%d events not confirmed by Kafka at %s", waiting, self.bootstrap)

    def close(self) -> None:
        """Wait (bounded) for outstanding reports, then release the client; idempotent."""
        if self._producer is None:
            return
        if len(self._producer) > 0:
            report = self.flush()
            if report.failed:
                log.warning("closing with %d unconfirmed events", len(report.failed))
        self._producer = None

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _admin_subset(extra: dict[str, Any] | None) -> dict[str, Any] | None:
    """The connection settings of `extra` (security, SASL, client id) for the admin client."""
    if not extra:
        return None
    prefixes = ("security.", "sasl.", "ssl.", "client.id", "socket.", "broker.")
    return {k: v for k, v in extra.items() if k.startswith(prefixes)} or None


def _event_id_of(value: bytes | None) -> str:
    if not value:
        return "?"
    try:
        return codec.decode(value).event_id or "?"
    except DecodeError:
        return "?"
