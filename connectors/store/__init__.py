"""The feature store: `open_store(url)` picks the backend from the URL scheme.

- `redis://host:port/db`, `rediss://...`: `RedisStore` on one Redis server (production).
- `redis+cluster://host:port[,host:port...]/0`, `rediss+cluster://...`: `RedisStore` on a Redis
  Cluster (the hosts are startup nodes; options `wait_replicas`, `wait_ms`: ADR 0021).
- `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `sqlite:///:memory:`:
  `SQLiteStore`, the embedded default for one machine.

`open_store(url, ledger_url=...)` with a second Redis URL keeps the tip ledger on that server
(`SplitLedgerStore`, ADR 0052).
"""

from __future__ import annotations

from typing import Any

from connectors.exceptions import StoreError
from connectors.store.base import (
    AgentWrite,
    FeatureStore,
    StoredAgent,
    StoredUser,
    UserWrite,
)
from connectors.store.redis_client import CLUSTER_SCHEMES
from connectors.store.redis_store import RedisStore
from connectors.store.sqlite_store import SQLiteStore

__all__ = [
    "AgentWrite",
    "FeatureStore",
    "RedisStore",
    "SQLiteStore",
    "StoreError",
    "StoredAgent",
    "StoredUser",
    "UserWrite",
    "check_store_url",
    "open_store",
    "safe_url",
]


def safe_url(url: str) -> str:
    """`url` fit for a log line or a summary: a password in it is replaced by `***`.

    >>> safe_url("redis://:s3cret@redis:6379/0"), safe_url("sqlite:///tmp/x.db")
    ('redis://:***@redis:6379/0', 'sqlite:///tmp/x.db')
    """
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def check_store_url(url: str) -> str:
    """The URL's scheme (`redis`, `rediss`, `redis+cluster`, `rediss+cluster`, `sqlite`), or
    `StoreError` saying what is expected.

    Checks the form only; nothing is opened or connected.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if sep and scheme in ("redis", "rediss", *CLUSTER_SCHEMES):
        return scheme
    if sep and scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise StoreError(f"invalid SQLite store URL {url!r}: expected sqlite:///path")
        return scheme
    raise StoreError(
        f"unsupported store URL {url!r}: expected redis://, rediss://, "
        "redis+cluster://host:port[,host:port...]/0 or sqlite:///path"
    )


def open_store(
    url: str,
    *,
    key_prefix: str = "oo",
    freshness: bool = True,
    socket_timeout_s: float = 5.0,
    connect_timeout_s: float = 2.0,
    client_retries: int = 2,
    ledger_url: str | None = None,
) -> FeatureStore:
    """The store behind `url` (`OO_STORE_URL`); `key_prefix` isolates tenants and tests.

    `ledger_url` (`OO_LEDGER_STORE_URL`): a Redis server of its own for the tip ledger
    (`SplitLedgerStore`, ADR 0052); None keeps the ledger in the feature store.

    `freshness=False` leaves out the freshness bookkeeping on writes (to measure its cost).
    The timeouts and `client_retries` (retries inside the client on a connection error or
    timeout) apply to Redis; see ADR 0010 for what the flow and the API use.
    """
    scheme = check_store_url(url)
    if ledger_url is not None:
        from connectors.store.split_ledger import SplitLedgerStore

        if check_store_url(ledger_url) == "sqlite" or scheme == "sqlite":
            raise StoreError(
                f"a separate ledger store is for Redis: got OO_STORE_URL {safe_url(url)!r} and "
                f"OO_LEDGER_STORE_URL {safe_url(ledger_url)!r}; the embedded store keeps its "
                "ledger in its own file (leave OO_LEDGER_STORE_URL unset)"
            )
        timeouts: dict[str, Any] = {
            "key_prefix": key_prefix,
            "socket_timeout_s": socket_timeout_s,
            "connect_timeout_s": connect_timeout_s,
            "client_retries": client_retries,
        }
        return SplitLedgerStore(
            RedisStore(url, freshness=freshness, **timeouts),
            RedisStore(ledger_url, freshness=False, ledger_only=True, **timeouts),
        )
    if scheme != "sqlite":
        return RedisStore(
            url,
            key_prefix=key_prefix,
            freshness=freshness,
            socket_timeout_s=socket_timeout_s,
            connect_timeout_s=connect_timeout_s,
            client_retries=client_retries,
        )
    return SQLiteStore(url.partition("://")[2][1:], key_prefix=key_prefix)
