"""The Redis connection behind `RedisStore`: one server or a Redis Cluster, one way to pipeline.

URLs (`OO_STORE_URL`):

- `redis://[:password@]host:port/db`, `rediss://...`: one server (`redis.Redis`).
- `redis+cluster://[:password@]host:port[,host:port...]/0[?wait_replicas=N&wait_ms=M]`,
  `rediss+cluster://...`: a Redis Cluster (`redis.cluster.RedisCluster`); the hosts are
  startup nodes (any of the cluster's nodes; the client learns the others). Only database 0
  exists in a cluster.

`RedisConnection.pipeline(commands, write=)` sends commands (tuples, key at index 1, or
`EVALSHA sha numkeys key ...`) in one round trip per server: on a cluster it groups them by
the master that serves each command's first key (a command never spans slots: every script
keeps its keys in one slot, see `connectors/README.md`), and for writes it ends each master's
pipeline with `WAIT wait_replicas wait_ms` on the same connection, so a batch is acknowledged
only once a replica holds it (or `wait_ms` passed: a master whose replica is away still takes
writes; durability is then the master's AOF alone). That is what keeps a `kill -9` of a master
from losing writes the flow was told were stored (ADR 0021). Replies come back in command
order; an error is the reply's exception object (the caller decides).

Failure behaviour: redis-py errors pass through (`redis.RedisError`, and
`RedisClusterException` when no node answers or slots are uncovered); after any error on a cluster the slot map is
refreshed before the next call, so a failover (MOVED, CLUSTERDOWN, a dead master) costs the
caller one failed call, which the flow's store retry repeats (ADR 0010).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.client import NEVER_DECODE
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

__all__ = ["CLUSTER_SCHEMES", "RedisConnection", "cluster_nodes_of", "delete_keys_with_prefix"]

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
DEFAULT_WAIT_MS = 500
"""How long a cluster write waits for a replica's acknowledgement before going on without."""
SOCKET_READ_SIZE = 256 * 1024
"""Bytes a connection's reader takes from its socket in one `recv` (redis-py's default: 64 kB).
The batch read's reply is ~400 kB for 100 users (ADR 0041): at 64 kB a read, its store thread
woke, took the GIL back and fed hiredis 8-10 times a call; at 256 kB, 1-3 times (ADR 0059).
Each connection holds one buffer of this size (16 store threads: ~4 MB)."""


def cluster_nodes_of(url: str) -> list[tuple[str, int]]:
    """The startup nodes of a `redis+cluster://` URL; `ValueError` saying what is wrong."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    nodes = []
    for item in hosts.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"expected host:port in the node list; got {item!r}")
        nodes.append((host.strip("[]"), int(port)))
    if parts.path not in ("", "/", "/0"):
        raise ValueError(f"a Redis Cluster has only database 0; got path {parts.path!r}")
    return nodes


class RedisConnection:
    """A standalone or cluster client with the store's timeouts, and `pipeline` over either."""

    def __init__(
        self,
        url: str,
        *,
        socket_timeout_s: float,
        connect_timeout_s: float,
        client_retries: int,
    ) -> None:
        """Raises `ValueError` or `redis.RedisError` for a URL that cannot be used."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        self.cluster = scheme in CLUSTER_SCHEMES
        retry = Retry(ExponentialBackoff(cap=0.2, base=0.02), client_retries)
        common: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": socket_timeout_s,
            "socket_connect_timeout": connect_timeout_s,
            "socket_read_size": SOCKET_READ_SIZE,
        }
        if not self.cluster:
            self.where = f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
            self.client: Any = redis.Redis.from_url(url, retry=retry, **common)
            self.wait_replicas, self.wait_ms = 0, 0
            return
        nodes = cluster_nodes_of(url)
        self.where = "cluster " + ",".join(f"{h}:{p}" for h, p in nodes)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"wait_replicas", "wait_ms"}
        if unknown:
            raise ValueError(f"expected options wait_replicas, wait_ms; got {sorted(unknown)}")
        self.wait_replicas = int(query.get("wait_replicas", "1"))
        self.wait_ms = int(query.get("wait_ms", str(DEFAULT_WAIT_MS)))
        if self.wait_replicas < 0 or self.wait_ms < 0:
            raise ValueError("wait_replicas and wait_ms must be >= 0")
        self._cluster_kwargs: dict[str, Any] = {
            "startup_nodes": [ClusterNode(h, p) for h, p in nodes],
            "password": parts.password,
            "username": parts.username or None,
            "ssl": scheme == "rediss+cluster",
            "retry": retry,
            **common,
        }
        self._cluster_client: RedisCluster | None = None
        self._lock = threading.Lock()
        self._stale = False

    @property
    def client(self) -> Any:
        """The redis-py client. A cluster's is made on first use (it asks a startup node for
        the slot map, so a cluster that is down fails that call, not the store's opening)."""
        if not self.cluster:
            return self._client
        if self._cluster_client is None:
            with self._lock:
                if self._cluster_client is None:
                    self._cluster_client = RedisCluster(**self._cluster_kwargs)
        return self._cluster_client

    @client.setter
    def client(self, value: Any) -> None:
        self._client = value

    # -- pipelines ------------------------------------------------------------------------------

    def pipeline(
        self, commands: Sequence[Sequence[Any]], *, write: bool, decode: bool = True
    ) -> list[Any]:
        """Replies of `commands` in order (exceptions as values); one round trip per server.
        `decode=False`: replies as the server sent them (bytes), not decoded to str."""
        if not commands:
            return []
        options: dict[str, Any] = {} if decode else {NEVER_DECODE: True}
        if not self.cluster:
            pipe = self.client.pipeline(transaction=False)
            for cmd in commands:
                pipe.execute_command(*cmd, **options)
            return list(pipe.execute(raise_on_error=False))
        self._refresh_if_stale()
        groups: dict[str, list[int]] = {}
        nodes: dict[str, Any] = {}
        for i, cmd in enumerate(commands):
            node = self.client.get_node_from_key(_first_key(cmd))
            groups.setdefault(node.name, []).append(i)
            nodes[node.name] = node
        replies: list[Any] = [None] * len(commands)
        # Groups run in the order of their first command, so "before" commands go first.
        for name, indexes in groups.items():
            pipe = self.client.get_redis_connection(nodes[name]).pipeline(transaction=False)
            for i in indexes:
                pipe.execute_command(*commands[i], **options)
            if write and self.wait_replicas:
                pipe.execute_command("WAIT", self.wait_replicas, self.wait_ms)
            try:
                got = pipe.execute(raise_on_error=False)
            except (redis.RedisError, RedisClusterException):
                self._stale = True
                raise
            for i, reply in zip(indexes, got, strict=False):
                replies[i] = reply
                if isinstance(reply, redis.ResponseError) and _moved(reply):
                    self._stale = True
        return replies

    def call(self, fn: Any, *args: Any) -> Any:
        """`fn(*args)` on the client; on a cluster, an error marks the slot map stale."""
        if not self.cluster:
            return fn(*args)
        self._refresh_if_stale()
        try:
            return fn(*args)
        except (redis.RedisError, RedisClusterException):
            self._stale = True
            raise

    def _refresh_if_stale(self) -> None:
        if self._stale and self._cluster_client is not None:
            self.client.nodes_manager.initialize()  # raises while no node answers: still stale
            self._stale = False

    def script_load(self, source: str) -> None:
        """Load a script on the server, or on every master of the cluster."""
        self.call(self.client.script_load, source)

    def close(self) -> None:
        if not self.cluster:
            self._client.close()
        elif self._cluster_client is not None:
            self._cluster_client.close()


def _first_key(cmd: Sequence[Any]) -> str:
    if str(cmd[0]).upper() in ("EVALSHA", "EVAL"):
        return str(cmd[3])
    return str(cmd[1])


def _moved(reply: Exception) -> bool:
    text = str(reply)
    return text.startswith(("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN")) or isinstance(
        reply, redis.exceptions.ClusterError
    )


def delete_keys_with_prefix(url: str, prefix: str, *, batch: int = 5_000) -> int:
    """Unlink every key starting with `prefix` on the Redis or every master of the cluster at
    `url` (pass "p:" to spare "p2:..."); returns how many went.

    A cluster's keys are scanned on each master and unlinked one slot at a time (no cross-slot
    command). Raises `ValueError` for a URL that is not Redis, `redis.RedisError` when a server
    fails (cleanup callers decide whether that matters)."""
    conn = RedisConnection(url, socket_timeout_s=10.0, connect_timeout_s=2.0, client_retries=1)
    client = conn.client
    deleted = 0
    try:
        servers = client.get_primaries() if conn.cluster else [None]
        for node in servers:
            server = client if node is None else client.get_redis_connection(node)
            keys: list[str] = []
            for key in server.scan_iter(match=f"{prefix}*", count=batch):
                keys.append(key)
                if len(keys) >= batch:
                    deleted += _unlink(conn, server, keys)
                    keys = []
            if keys:
                deleted += _unlink(conn, server, keys)
    finally:
        conn.close()
    return deleted


def _unlink(conn: RedisConnection, server: Any, keys: list[str]) -> int:
    if not conn.cluster:
        return int(server.unlink(*keys))
    by_slot: dict[int, list[str]] = {}
    for key in keys:
        by_slot.setdefault(conn.client.keyslot(key), []).append(key)
    pipe = server.pipeline(transaction=False)
    for slot_keys in by_slot.values():
        pipe.unlink(*slot_keys)
    return sum(int(n) for n in pipe.execute())
