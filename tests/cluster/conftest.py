"""Fixtures of the cluster tests (`-m cluster`, `make test-cluster`): the secured Kafka cluster.

- `kafka_cluster` (session): the three SASL_SSL brokers of `oo-features services up
  --profile cluster` (state in `cluster_state_dir()`), started with the same code
  (`oo_features.services.kafka_cluster.up`) unless already running. Teardown: brokers this
  session started are stopped (`OO_SERVICES_KEEP=1` keeps them).
- `cluster_config` (function): the librdkafka settings of a client of it (bootstrap, SASL_SSL,
  SCRAM-SHA-512, the run's CA), as a fresh dict the test may change.
- `cluster_prefix` (function): `c<8 hex>.`, unique per test; its topics are deleted after it.

A cluster that cannot be started is a failure with the reason, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from oo_features.services import ServicesError, kafka_cluster
from oo_features.services.cluster import cluster_state_dir


@dataclass(frozen=True)
class RunningCluster:
    """The session's cluster: where it lives and whether this session started it."""

    root: Path
    cluster: kafka_cluster.KafkaCluster
    started_here: bool

    def config(self) -> dict[str, Any]:
        return dict(self.cluster.client_config())


@pytest.fixture(scope="session")
def kafka_cluster_running() -> Iterator[RunningCluster]:
    root = cluster_state_dir()
    failure = ""
    try:
        already = kafka_cluster.running(root)
        found = already or kafka_cluster.up(root)
    except ServicesError as exc:
        failure = str(exc)
    if failure:
        pytest.fail(f"the Kafka cluster (state in {root}) could not be started:\n{failure}")
    running = RunningCluster(root, found, already is None)
    yield running
    if running.started_here and os.environ.get("OO_SERVICES_KEEP", "") not in ("1", "true"):
        kafka_cluster.down(root)


@pytest.fixture
def cluster_config(kafka_cluster_running: RunningCluster) -> dict[str, Any]:
    return kafka_cluster_running.config()


@pytest.fixture
def cluster_prefix(kafka_cluster_running: RunningCluster) -> Iterator[str]:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    prefix = f"c{uuid.uuid4().hex[:8]}."
    yield prefix
    admin = AdminClient(kafka_cluster_running.config())
    with contextlib.suppress(KafkaException):
        names = [n for n in admin.list_topics(timeout=10).topics if n.startswith(prefix)]
        for future in admin.delete_topics(names).values() if names else ():
            with contextlib.suppress(KafkaException):
                future.result(timeout=15)
