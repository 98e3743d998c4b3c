"""Admin calls of the cluster profile over its SASL_SSL listener: readiness and topics.

Contract: `answers(config, brokers, timeout_s)` says whether a client built from `config`
(librdkafka settings, bootstrap and security) sees at least `brokers` brokers, with the
client's own error text when it does not (authentication, TLS, refused connection).
`create_engine_topics(config)` creates the engine's topics that are missing with replication
factor 3 and `min.insync.replicas=2`, and returns their names; a failure raises
`ServicesError` naming the topic and Kafka's reason.
"""

from __future__ import annotations

import logging
from typing import Any

from oo_features.services.state import ServicesError

REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = "2"

_client_log = logging.getLogger("oo_features.services.librdkafka")


def _admin(config: dict[str, Any]) -> Any:
    from confluent_kafka.admin import AdminClient

    errors: list[str] = []
    settings: dict[str, Any] = {
        **config,
        "logger": _client_log,
        "error_cb": lambda err: errors.append(err.str()),
    }
    admin = AdminClient(settings)
    return admin, errors


def answers(config: dict[str, Any], brokers: int, timeout_s: float) -> tuple[bool, str]:
    """Whether a client of `config` sees `brokers` brokers within `timeout_s`; why not."""
    from confluent_kafka import KafkaException

    admin, errors = _admin({**config, "socket.timeout.ms": max(1000, int(timeout_s * 1000))})
    bootstrap = config.get("bootstrap.servers", "?")
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        cause = errors[-1] if errors else str(exc)
        return False, f"{bootstrap}: no metadata ({cause})"
    if len(metadata.brokers) < brokers:
        return False, f"{bootstrap}: {len(metadata.brokers)} of {brokers} brokers"
    return True, f"{len(metadata.brokers)} broker(s), controller {metadata.controller_id}"


def create_engine_topics(
    config: dict[str, Any], *, prefix: str = "", partitions: int | None = None
) -> list[str]:
    """Create the engine's missing topics (RF 3, min.insync.replicas=2); the names created."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    from connectors.kafka import engine_topics
    from connectors.settings import ConnectorSettings

    count = partitions if partitions is not None else ConnectorSettings().partitions
    admin, _ = _admin(config)
    existing = admin.list_topics(timeout=30).topics
    missing = [name for name in engine_topics(prefix) if name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                name,
                num_partitions=count,
                replication_factor=REPLICATION_FACTOR,
                config={"min.insync.replicas": MIN_INSYNC_REPLICAS},
            )
            for name in missing
        ],
        operation_timeout=30,
        request_timeout=30,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=60)
            created.append(name)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise ServicesError(f"creating topic {name} on the cluster failed: {exc}") from exc
    return created
