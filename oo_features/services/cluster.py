"""The cluster profile: three secured Kafka brokers and a Redis Cluster, on loopback (ADR 0020).

`oo-features services up|down|status --profile cluster` calls this module. State lives in
`cluster_state_dir()`: an explicit folder, else `$OO_SERVICES_DIR` + `-cluster`, else
`./.oo/services-cluster`, never the single node's folder, so both profiles can run at once.

Contract: `up` starts the Kafka cluster (`kafka_cluster`), then the Redis Cluster
(`redis_cluster`), and returns `ClusterEndpoints`, whose export line is everything a client
needs (tests of the Kafka part call `kafka_cluster` directly). `down` stops exactly what `up`
recorded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from oo_features.services import kafka_cluster, redis_cluster
from oo_features.services.state import (
    DEFAULT_STATE_DIR,
    STATE_DIR_ENV,
    STOP_TIMEOUT_S,
    ServiceStatus,
)

log = logging.getLogger(__name__)

SUFFIX = "-cluster"


@dataclass(frozen=True)
class ClusterEndpoints:
    """Where the cluster profile answers; what `up` returns."""

    kafka_bootstrap: str
    kafka_properties_file: Path
    store_url: str
    state_dir: Path

    def env(self) -> dict[str, str]:
        """The `OO_*` variables that point the engine at the cluster."""
        return {
            "OO_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "OO_KAFKA_PROPERTIES_FILE": str(self.kafka_properties_file),
            "OO_STORE_URL": self.store_url,
        }

    def export_line(self) -> str:
        return "export " + " ".join(f"{k}={v}" for k, v in self.env().items())


def cluster_state_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """`explicit`, else `$OO_SERVICES_DIR-cluster`, else `./.oo/services-cluster`."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get(STATE_DIR_ENV) or str(DEFAULT_STATE_DIR)
    return Path(base.rstrip("/") + SUFFIX).expanduser().resolve()


def up(
    directory: str | os.PathLike[str] | None = None,
    *,
    timeout_s: float = 180.0,
    echo: Callable[[str], None] = log.info,
) -> ClusterEndpoints:
    """Start the Kafka cluster and the Redis Cluster (what is not running); their endpoints."""
    root = cluster_state_dir(directory)
    kafka = kafka_cluster.up(root, timeout_s=timeout_s, echo=echo)
    store_url = redis_cluster.up(root, echo=echo)
    return ClusterEndpoints(kafka.bootstrap, kafka.properties_file, store_url, root)


def down(
    directory: str | os.PathLike[str] | None = None,
    *,
    timeout_s: float = STOP_TIMEOUT_S,
    echo: Callable[[str], None] = log.info,
) -> None:
    """Stop what `up` started from this folder: the Redis Cluster's nodes, then the brokers."""
    root = cluster_state_dir(directory)
    redis_cluster.down(root)
    kafka_cluster.down(root, timeout_s=timeout_s, echo=echo)


def status(directory: str | os.PathLike[str] | None = None) -> list[ServiceStatus]:
    """The three brokers, then the Redis Cluster's nodes."""
    root = cluster_state_dir(directory)
    result = kafka_cluster.status(root)
    for node in redis_cluster.status(root):
        result.append(
            ServiceStatus(
                f"redis-{node.port}",
                node.address,
                node.pid,
                node.running,
                bool(node.role),
                node.role or node.detail,
            )
        )
    return result
