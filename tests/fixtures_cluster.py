"""Pytest fixture for a real local Redis Cluster (3 masters, 3 replicas), for the store tests.

Loaded from `tests/conftest.py` (`pytest_plugins`). `redis_cluster` (session) starts the
cluster with `oo_features.services.redis_cluster.up` under a temporary folder of the session
and yields a `RedisCluster` with `.url` (`redis+cluster://...`) and `.root` (its state folder,
for `status`, `master_of`, and restarting a node a test killed); its end stops every node
(`down`). Keys need no cleanup: the cluster lives and dies with the session. A cluster that
cannot be started fails the test with the reason, never a skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from oo_features.services import ServicesError
from oo_features.services import redis_cluster as cluster_service


@dataclass(frozen=True)
class RedisClusterService:
    url: str
    root: Path


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterService]:
    root = tmp_path_factory.mktemp("rcluster")
    failure = ""
    try:
        url = cluster_service.up(root, echo=lambda line: None)
    except ServicesError as exc:
        failure = str(exc)
    if failure:
        cluster_service.down(root)
        pytest.fail(f"the local Redis Cluster could not be started:\n{failure}", pytrace=False)
    try:
        yield RedisClusterService(url=url, root=root)
    finally:
        cluster_service.down(root)
