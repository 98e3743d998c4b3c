"""The local real services: Kafka and Redis started on this machine, without Docker.

Two profiles share one state layout and one set of process rules (`processes`):

- single node (default, `single`): one Kafka broker (KRaft) and one Redis, PLAINTEXT on
  loopback, state in `$OO_SERVICES_DIR` or `./.oo/services`;
- cluster (`cluster`, `oo-features services up --profile cluster`): three Kafka brokers
  (KRaft quorum) with a SASL_SSL client listener and a Redis Cluster, state in
  `<single state dir>-cluster` (ADR 0020).

Everything callers need is importable from here: `up`, `down`, `status`,
`running_endpoints`, `state_dir`, `delete_topics`, `delete_keys`, `ServicesError`,
`Endpoints`, `ServiceStatus`, `redis_argv`.
"""

from oo_features.services.cleanup import delete_keys, delete_topics
from oo_features.services.redis_node import redis_argv
from oo_features.services.single import down, running_endpoints, status, up
from oo_features.services.state import (
    Endpoints,
    ServicesError,
    ServicesState,
    ServiceStatus,
    state_dir,
)

__all__ = [
    "Endpoints",
    "ServiceStatus",
    "ServicesError",
    "ServicesState",
    "delete_keys",
    "delete_topics",
    "down",
    "redis_argv",
    "running_endpoints",
    "state_dir",
    "status",
    "up",
]
