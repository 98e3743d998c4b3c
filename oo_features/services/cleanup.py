"""Cleanup of per-run prefixes (tests and benchmarks): topics and Redis keys.

Best effort: a run's result must be its own, not its cleanup's; errors are swallowed and the
count of what was asked to go is returned.
"""

from __future__ import annotations

import contextlib


def delete_topics(bootstrap: str, prefix: str, *, timeout_s: float = 15.0) -> int:
    """Delete every topic whose name starts with `prefix`; how many were asked to go."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from connectors.kafka_config import client_config

    admin = AdminClient(client_config(None, "admin", bootstrap=bootstrap))
    names: list[str] = []
    with contextlib.suppress(KafkaException):
        names = [n for n in admin.list_topics(timeout=10).topics if n.startswith(prefix)]
        if names:
            for future in admin.delete_topics(names, operation_timeout=timeout_s).values():
                with contextlib.suppress(KafkaException):
                    future.result(timeout=timeout_s)
    return len(names)


def delete_keys(redis_url: str, prefix: str) -> int:
    """Unlink every Redis key that starts with `prefix` (pass "p:" to spare "p2:..."); how many.

    A `redis+cluster://` URL is cleaned on every master, one slot at a time."""
    import redis

    if "+cluster" in redis_url.split("://", 1)[0]:
        from connectors.store.redis_client import delete_keys_with_prefix

        with contextlib.suppress(redis.RedisError):
            return delete_keys_with_prefix(redis_url, prefix)
        return 0

    client = redis.Redis.from_url(redis_url, socket_timeout=10.0)
    deleted = 0
    try:
        with contextlib.suppress(redis.RedisError):
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{prefix}*", count=5_000):
                batch.append(key)
                if len(batch) >= 5_000:
                    deleted += client.unlink(*batch)
                    batch.clear()
            if batch:
                deleted += client.unlink(*batch)
    finally:
        client.close()
    return deleted
