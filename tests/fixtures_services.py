"""Pytest fixtures for the real local Kafka and Redis, shared by integration and e2e tests.

Loaded from `tests/conftest.py` (`pytest_plugins`), so any test under `tests/` can ask for:

- `services` (session): starts the services with the same code as `oo-features services up`
  (state in `$OO_SERVICES_DIR`, default `.oo/services`) and yields a `Services` with
  `.kafka_bootstrap`, `.redis_url`, `.state_dir`, `.started_here`.
  Teardown: services this session started are stopped at its end, so CI leaves nothing
  running; services that were already up (a developer ran `oo-features services up`) are
  left alone. `OO_SERVICES_KEEP=1` keeps what the session started, for fast re-runs.
- `topic_prefix` (function): `t<8 hex>.`, unique per test; its topics are deleted after it.
- `key_prefix` (function): `t<8 hex>`, unique per test; its Redis keys are deleted after it.
- `redis_client` (function): a `redis.Redis` on the services' Redis (bytes in, bytes out).
- `ledger_redis` (session): a second, private Redis (`tests.outage.PrivateRedis`, the
  services' command line) for the tip ledger's own store (ADR 0052); stopped at the end.
- `kafka_admin` (function): a `confluent_kafka.admin.AdminClient` on the services' Kafka.
- `oo_env` (function): sets `OO_KAFKA_BOOTSTRAP`, `OO_STORE_URL`, `OO_TOPIC_PREFIX`,
  `OO_KEY_PREFIX` for the test (and its subprocesses) and returns them as a dict;
  `service_env` builds the same dict without setting it, for a subprocess's `env`.

A service that cannot be started or does not answer is a test failure with the reason and
the service's log tail, never a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from oo_features import services as oo_services

if TYPE_CHECKING:
    import redis
    from confluent_kafka.admin import AdminClient

KEEP_ENV = "OO_SERVICES_KEEP"


@dataclass(frozen=True)
class Services:
    """Where the session's Kafka and Redis answer."""

    kafka_bootstrap: str
    redis_url: str
    state_dir: Path
    started_here: bool  # this session started them, so it stops them


_SERVICES_KEY = pytest.StashKey[Services]()


@pytest.fixture(scope="session")
def services(request: pytest.FixtureRequest) -> Iterator[Services]:
    state_dir = oo_services.state_dir()
    failure = ""
    try:
        already = oo_services.running_endpoints(state_dir)
        endpoints = already or oo_services.up(state_dir)
    except oo_services.ServicesError as exc:
        failure = str(exc)
    if failure:  # outside the except block: the message, not a chained traceback
        pytest.fail(
            f"the local Kafka and Redis are needed and could not be started "
            f"(state in {state_dir}; try `oo-features services up`):\n{failure}",
            pytrace=False,
        )
    found = Services(
        kafka_bootstrap=endpoints.kafka_bootstrap,
        redis_url=endpoints.redis_url,
        state_dir=state_dir,
        started_here=already is None,
    )
    request.config.stash[_SERVICES_KEY] = found
    yield found
    del request.config.stash[_SERVICES_KEY]
    if found.started_here and os.environ.get(KEEP_ENV, "") not in ("1", "true", "yes"):
        oo_services.down(state_dir)


@pytest.fixture
def test_id() -> str:
    """Eight hex digits unique to this test; both prefixes are built from it."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest, test_id: str) -> Iterator[str]:
    prefix = f"t{test_id}."
    yield prefix
    running = request.config.stash.get(_SERVICES_KEY, None)
    if running is not None:
        _delete_topics(running.kafka_bootstrap, prefix)


@pytest.fixture
def key_prefix(request: pytest.FixtureRequest, test_id: str) -> Iterator[str]:
    prefix = f"t{test_id}"
    yield prefix
    running = request.config.stash.get(_SERVICES_KEY, None)
    if running is not None:
        _delete_keys(running.redis_url, prefix)


@pytest.fixture(scope="session")
def ledger_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a Redis of its own for the tip ledger (keys: the `key_prefix` of a test)."""
    from tests.outage import PrivateRedis

    with PrivateRedis(tmp_path_factory.mktemp("ledger-redis")) as server:
        yield server.url


@pytest.fixture
def redis_client(services: Services) -> Iterator[redis.Redis[bytes]]:
    import redis as redis_lib

    client = redis_lib.Redis.from_url(services.redis_url, socket_timeout=10.0)
    try:
        client.ping()
    except redis_lib.RedisError as exc:
        pytest.fail(f"Redis at {services.redis_url} does not answer: {exc}", pytrace=False)
    yield client
    client.close()


@pytest.fixture
def kafka_admin(services: Services) -> AdminClient:
    from confluent_kafka.admin import AdminClient

    from connectors.kafka_config import client_config

    return AdminClient(client_config(None, "admin", bootstrap=services.kafka_bootstrap))


def service_env(
    services: Services, topic_prefix: str, key_prefix: str, store_url: str | None = None
) -> dict[str, str]:
    """The engine's settings for one test's namespace on these services (Redis unless
    `store_url` names another store), for a subprocess's `env`."""
    return {
        "OO_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "OO_STORE_URL": store_url or services.redis_url,
        "OO_TOPIC_PREFIX": topic_prefix,
        "OO_KEY_PREFIX": key_prefix,
    }


@pytest.fixture
def oo_env(
    services: Services, topic_prefix: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    env = service_env(services, topic_prefix, key_prefix)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


# Cleanup is best effort: a test's failure must be its own, not its teardown's.
_delete_topics = oo_services.delete_topics
_delete_keys = oo_services.delete_keys
