"""The tip ledger on SQLite (`SQLiteStore` mixes it in); contract in `connectors.store.ledger`.

Tables (`<prefix>_` in front; every one has `user_id`, so the store's user deletion, which
deletes the user's rows from every per-user table, removes them in the same transaction):

    ledger(user_id, tip_id, shown_at_ms, header)          primary key (user_id, tip_id)
    ledger_agents(user_id, tip_id, agent_id, data)         primary key (user_id, tip_id, agent_id)
    ledger_reactions(user_id, tip_id, reaction_id, at_ms, data)

Consent revocation deletes the removed agents' `ledger_agents` rows in the flow's write
transaction (`SQLiteStore._apply`). Retention: rows older than it are deleted on a record, at
most once a minute, and never exported.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

from connectors.store.base import dumps_compact
from connectors.store.ledger import LedgerEntry, cutoff_ms, render

LEDGER_TABLES = ("ledger", "ledger_agents", "ledger_reactions")
_TRIM_EVERY_MS = 60_000


def ledger_schema(t: dict[str, str]) -> str:
    return f"""
        CREATE TABLE IF NOT EXISTS {t["ledger"]} (
            user_id TEXT NOT NULL, tip_id TEXT NOT NULL, shown_at_ms INTEGER NOT NULL,
            header TEXT NOT NULL, PRIMARY KEY (user_id, tip_id)) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS {t["ledger"]}_shown ON {t["ledger"]} (shown_at_ms);
        CREATE TABLE IF NOT EXISTS {t["ledger_agents"]} (
            user_id TEXT NOT NULL, tip_id TEXT NOT NULL, agent_id TEXT NOT NULL,
            data TEXT NOT NULL, PRIMARY KEY (user_id, tip_id, agent_id)) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS {t["ledger_reactions"]} (
            user_id TEXT NOT NULL, tip_id TEXT NOT NULL, reaction_id TEXT NOT NULL,
            at_ms INTEGER NOT NULL, data TEXT NOT NULL,
            PRIMARY KEY (user_id, tip_id, reaction_id)) WITHOUT ROWID;
    """


def forget_agent_sql(t: dict[str, str]) -> str:
    """Delete one removed agent's values from every ledger entry of a user."""
    return f"DELETE FROM {t['ledger_agents']} WHERE user_id = ? AND agent_id = ?"


class SQLiteLedgerMixin:
    """`TipLedger` for `SQLiteStore` (uses its connection, table names, guard, transaction)."""

    _t: dict[str, str]
    _conn: sqlite3.Connection
    _guard: Callable[..., Any]
    _transaction: Callable[[str, Callable[[sqlite3.Connection], None]], None]
    _sql_tomb_get: str
    _sql_meta_get: str
    _last_ledger_trim_ms: int = 0

    def _trim_ledger(self, c: sqlite3.Connection, oldest_ms: int) -> None:
        t = self._t
        old = f"SELECT user_id, tip_id FROM {t['ledger']} WHERE shown_at_ms < ?"
        for table in ("ledger_agents", "ledger_reactions"):
            c.execute(f"DELETE FROM {t[table]} WHERE (user_id, tip_id) IN ({old})", (oldest_ms,))
        c.execute(f"DELETE FROM {t['ledger']} WHERE shown_at_ms < ?", (oldest_ms,))

    def record_tip(self, entry: LedgerEntry, *, retention_ms: int, now_ms: int) -> bool:
        t, uid = self._t, entry.user_id
        done = [False]
        if entry.shown_at_ms < cutoff_ms(now_ms, retention_ms):
            return False

        def apply(c: sqlite3.Connection) -> None:
            done[0] = False
            tomb = c.execute(self._sql_tomb_get, (uid,)).fetchone()
            if tomb is not None and tomb[0] >= entry.shown_at_ms:
                return
            if c.execute(self._sql_meta_get, (uid,)).fetchone() is None:
                return
            if now_ms - self._last_ledger_trim_ms >= _TRIM_EVERY_MS:
                self._trim_ledger(c, cutoff_ms(now_ms, retention_ms))
                self._last_ledger_trim_ms = now_ms
            header, values = entry.encoded()
            c.execute(
                f"INSERT OR REPLACE INTO {t['ledger']} (user_id, tip_id, shown_at_ms, header) "
                "VALUES (?, ?, ?, ?)",
                (uid, entry.tip_id, entry.shown_at_ms, header),
            )
            c.executemany(
                f"INSERT OR REPLACE INTO {t['ledger_agents']} (user_id, tip_id, agent_id, data) "
                "VALUES (?, ?, ?, ?)",
                [(uid, entry.tip_id, agent_id, data) for agent_id, data in values],
            )
            done[0] = True

        self._transaction("record_tip", apply)
        return done[0]

    def record_reaction(
        self, user_id: str, tip_id: str, *, reaction: str, reaction_id: str, at_ms: int
    ) -> bool:
        t = self._t
        body = dumps_compact({"reaction": reaction, "reaction_id": reaction_id, "at_ms": at_ms})
        done = [False]

        def apply(c: sqlite3.Connection) -> None:
            known = c.execute(
                f"SELECT 1 FROM {t['ledger']} WHERE user_id = ? AND tip_id = ?", (user_id, tip_id)
            ).fetchone()
            done[0] = known is not None
            if known is not None:
                c.execute(
                    f"INSERT OR REPLACE INTO {t['ledger_reactions']} "
                    "(user_id, tip_id, reaction_id, at_ms, data) VALUES (?, ?, ?, ?, ?)",
                    (user_id, tip_id, reaction_id, at_ms, body),
                )

        self._transaction("record_reaction", apply)
        return done[0]

    def ledger_export(
        self, *, since_ms: int | None, now_ms: int, retention_ms: int
    ) -> Iterator[dict[str, Any]]:
        t = self._t
        oldest = cutoff_ms(now_ms, retention_ms)
        if since_ms is not None:
            oldest = max(oldest, since_ms)
        users = self._guard(
            "ledger_export",
            lambda: [
                r[0]
                for r in self._conn.execute(
                    f"SELECT DISTINCT user_id FROM {t['ledger']} WHERE shown_at_ms >= ? "
                    "ORDER BY user_id",
                    (oldest,),
                )
            ],
        )
        for user_id in users:
            yield from self._guard("ledger_export", lambda u=user_id: self._user_lines(u, oldest))

    def _user_lines(self, user_id: str, oldest_ms: int) -> list[dict[str, Any]]:
        t, c = self._t, self._conn
        values: dict[str, dict[str, Any]] = {}
        for tip, agent_id, data in c.execute(
            f"SELECT tip_id, agent_id, data FROM {t['ledger_agents']} WHERE user_id = ?",
            (user_id,),
        ):
            values.setdefault(tip, {})[agent_id] = json.loads(data)
        reactions: dict[str, list[dict[str, Any]]] = {}
        for tip, data in c.execute(
            f"SELECT tip_id, data FROM {t['ledger_reactions']} WHERE user_id = ?", (user_id,)
        ):
            reactions.setdefault(tip, []).append(json.loads(data))
        return [
            render(json.loads(header), values.get(tip, {}), reactions.get(tip, []))
            for tip, header in c.execute(
                f"SELECT tip_id, header FROM {t['ledger']} WHERE user_id = ? AND shown_at_ms >= ? "
                "ORDER BY shown_at_ms, tip_id",
                (user_id, oldest_ms),
            )
        ]
