"""The store's Lua scripts: `connectors/store/lua/<name>.lua`, loaded once per process.

Each file starts with comments saying its KEYS, ARGV and reply. Every script touches keys of
one cluster slot only: one user's keys (hash tag `{user_id}`), or the cross-user freshness
keys (tag `{P~fresh}`), or the identity marker; Redis Cluster refuses anything else with
CROSSSLOT, which `tests/integration/test_store_cluster.py` checks.

`Scripts.sha(name)` is the SHA1 Redis knows a script by (computed here, so it is the same on
every node); `Scripts.load(conn)` sends every script to the server (every master of a cluster)
and is called again after a NOSCRIPT (a restarted or promoted node has an empty script cache).
A missing or unreadable file is an `OSError` naming it at import time, not a failure mid-write.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

__all__ = ["SCRIPT_NAMES", "SOURCES", "Scripts"]

SCRIPT_NAMES = (
    "identity_create",
    "identity_state",
    "write",
    "read",
    "stamp",
    "reflect",
    "summary",
    "ledger_record",
    "ledger_react",
    "ledger_forget",
)


def _read(name: str) -> str:
    return (resources.files("connectors.store") / "lua" / f"{name}.lua").read_text("utf-8")


SOURCES = {name: _read(name) for name in SCRIPT_NAMES}
"""Script name -> Lua source."""


class Scripts:
    """SHA1s of the scripts and loading them into a server that lost them."""

    def __init__(self) -> None:
        self.shas = {n: hashlib.sha1(s.encode()).hexdigest() for n, s in SOURCES.items()}
        self.loaded = False

    def sha(self, name: str) -> str:
        return self.shas[name]

    def load(self, conn: Any) -> None:
        """Load every script through `conn` (a `RedisConnection`)."""
        for source in SOURCES.values():
            conn.script_load(source)
        self.loaded = True
