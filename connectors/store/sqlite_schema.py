"""The SQLite store's schema and statements (`SQLiteStore` mixes them in).

`_setup` creates the tables of `connectors/store/sqlite_store.py`'s docstring (and the tip
ledger's) if missing, and upgrades older files; `_prepare_sql` builds every statement once,
with the store's table names (`<prefix>_<table>`). Nothing here runs a statement but the
schema's; a failure is the `sqlite3.Error` the store turns into a `StoreError`.
"""

from __future__ import annotations

import sqlite3

from connectors.store.sqlite_ledger import forget_agent_sql, ledger_schema


class SQLiteSchema:
    """Tables and statements of `SQLiteStore`; needs `_conn` and `_t` (name -> table)."""

    _conn: sqlite3.Connection
    _t: dict[str, str]

    def _setup(self, busy_timeout_ms: int) -> None:
        c, t = self._conn, self._t
        c.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        c.executescript(
            f"""
            CREATE TABLE IF NOT EXISTS {t["agents"]} (
                user_id TEXT NOT NULL, agent_id TEXT NOT NULL, version TEXT NOT NULL,
                params TEXT NOT NULL, extras TEXT NOT NULL, event_time_ms INTEGER NOT NULL,
                ingest_time_ms INTEGER NOT NULL, computed_at_ms INTEGER NOT NULL,
                PRIMARY KEY (user_id, agent_id)) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS {t["snippets"]} (
                user_id TEXT NOT NULL, agent_id TEXT NOT NULL, text TEXT NOT NULL,
                expires_at_ms INTEGER NOT NULL,
                PRIMARY KEY (user_id, agent_id)) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS {t["snippets"]}_expiry ON {t["snippets"]} (expires_at_ms);
            CREATE TABLE IF NOT EXISTS {t["feedback"]} (
                user_id TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS {t["meta"]} (
                user_id TEXT PRIMARY KEY, consents TEXT, newest_event_ms INTEGER,
                newest_ingest_ms INTEGER, created_ms INTEGER NOT NULL) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS {t["tombstones"]} (
                user_id TEXT PRIMARY KEY, deleted_at_ms INTEGER NOT NULL) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS {t["fresh"]} (
                user_id TEXT PRIMARY KEY, newest_ingest_ms INTEGER,
                reflected_ingest_ms INTEGER, pending_since_ms INTEGER) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS {t["fresh"]}_newest ON {t["fresh"]} (newest_ingest_ms);
            CREATE INDEX IF NOT EXISTS {t["fresh"]}_pending ON {t["fresh"]} (pending_since_ms)
                WHERE pending_since_ms IS NOT NULL;
            CREATE TABLE IF NOT EXISTS {t["fresh_lag"]} (
                agent_id TEXT NOT NULL, written_ms INTEGER NOT NULL, lag_ms INTEGER NOT NULL);
            CREATE INDEX IF NOT EXISTS {t["fresh_lag"]}_agent ON {t["fresh_lag"]} (agent_id);
            CREATE TABLE IF NOT EXISTS {t["store"]} (
                one INTEGER PRIMARY KEY CHECK (one = 1), id TEXT NOT NULL,
                created_ms INTEGER NOT NULL, state TEXT NOT NULL, state_ms INTEGER NOT NULL);
            """
            + ledger_schema(t)
        )
        # The history marker (ADR 0009) came after the first release: add it to older files.
        columns = {row[1] for row in c.execute(f"PRAGMA table_info({t['meta']})")}
        if "history" not in columns:
            c.execute(f"ALTER TABLE {t['meta']} ADD COLUMN history TEXT")

    def _prepare_sql(self) -> None:
        t = self._t
        self._sql_delete = [
            f"DELETE FROM {t[n]} WHERE user_id = ?"
            for n in t
            if n not in ("tombstones", "fresh_lag", "store")
        ]
        self._sql_tomb_set = (
            f"INSERT INTO {t['tombstones']} (user_id, deleted_at_ms) VALUES (?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET deleted_at_ms = excluded.deleted_at_ms "
            f"WHERE excluded.deleted_at_ms > {t['tombstones']}.deleted_at_ms"
        )
        self._sql_tomb_get = f"SELECT deleted_at_ms FROM {t['tombstones']} WHERE user_id = ?"
        self._sql_ledger_forget = forget_agent_sql(t)
        self._sql_agent_del = f"DELETE FROM {t['agents']} WHERE user_id = ? AND agent_id = ?"
        self._sql_snippet_del = f"DELETE FROM {t['snippets']} WHERE user_id = ? AND agent_id = ?"
        self._sql_agent_put = (
            f"INSERT INTO {t['agents']} (user_id, agent_id, version, params, extras, "
            "event_time_ms, ingest_time_ms, computed_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (user_id, agent_id) DO UPDATE SET version = excluded.version, "
            "params = excluded.params, extras = excluded.extras, "
            "event_time_ms = excluded.event_time_ms, ingest_time_ms = excluded.ingest_time_ms, "
            "computed_at_ms = excluded.computed_at_ms "
            f"WHERE excluded.event_time_ms >= {t['agents']}.event_time_ms"
        )
        self._sql_snippet_put = (
            f"INSERT INTO {t['snippets']} (user_id, agent_id, text, expires_at_ms) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (user_id, agent_id) DO UPDATE SET "
            "text = excluded.text, expires_at_ms = excluded.expires_at_ms"
        )
        self._sql_feedback_put = (
            f"INSERT INTO {t['feedback']} (user_id, data) VALUES (?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET data = excluded.data"
        )
        m = t["meta"]
        self._sql_meta_put = (
            f"INSERT INTO {m} (user_id, consents, newest_event_ms, newest_ingest_ms, created_ms, "
            "history) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET "
            f"consents = coalesce(excluded.consents, {m}.consents), "
            f"history = coalesce(excluded.history, {m}.history), "
            f"newest_event_ms = max(coalesce(excluded.newest_event_ms, {m}.newest_event_ms), "
            f"coalesce({m}.newest_event_ms, excluded.newest_event_ms)), "
            f"newest_ingest_ms = max(coalesce(excluded.newest_ingest_ms, {m}.newest_ingest_ms), "
            f"coalesce({m}.newest_ingest_ms, excluded.newest_ingest_ms))"
        )
        self._sql_history_get = f"SELECT history FROM {m} WHERE user_id = ?"
        self._sql_meta_get = (
            f"SELECT consents, newest_event_ms, newest_ingest_ms FROM {m} WHERE user_id = ?"
        )
        self._sql_feedback_get = f"SELECT data FROM {t['feedback']} WHERE user_id = ?"
        self._sql_agents_get = (
            "SELECT a.agent_id, a.version, a.params, a.extras, a.event_time_ms, a.ingest_time_ms, "
            f"a.computed_at_ms, s.text, s.expires_at_ms FROM {t['agents']} AS a "
            f"LEFT JOIN {t['snippets']} AS s ON s.user_id = a.user_id AND s.agent_id = a.agent_id "
            "AND s.expires_at_ms > ? WHERE a.user_id = ?"
        )
        self._sql_purge = f"DELETE FROM {t['snippets']} WHERE expires_at_ms <= ?"
        f, lag = t["fresh"], t["fresh_lag"]
        self._sql_stamp_newest = (
            f"INSERT INTO {f} (user_id, newest_ingest_ms) VALUES (?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET newest_ingest_ms = "
            f"max(coalesce({f}.newest_ingest_ms, excluded.newest_ingest_ms), "
            "excluded.newest_ingest_ms)"
        )
        # Pending since the oldest unreflected event: the batch's oldest, but after what the
        # flow already reflected; an earlier pending time is kept.
        self._sql_stamp_pending = (
            f"UPDATE {f} SET pending_since_ms = max(?, coalesce(reflected_ingest_ms + 1, ?)) "
            "WHERE user_id = ? AND pending_since_ms IS NULL "
            "AND (reflected_ingest_ms IS NULL OR reflected_ingest_ms < newest_ingest_ms)"
        )
        self._sql_reflect = (
            f"INSERT INTO {f} (user_id, newest_ingest_ms, reflected_ingest_ms) VALUES (?, ?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET "
            f"reflected_ingest_ms = max(coalesce({f}.reflected_ingest_ms, "
            "excluded.reflected_ingest_ms), excluded.reflected_ingest_ms), "
            f"newest_ingest_ms = max(coalesce({f}.newest_ingest_ms, excluded.newest_ingest_ms), "
            "excluded.newest_ingest_ms)"
        )
        self._sql_reflect_pending = (
            f"UPDATE {f} SET pending_since_ms = CASE WHEN newest_ingest_ms <= reflected_ingest_ms "
            "THEN NULL ELSE max(pending_since_ms, reflected_ingest_ms + 1) END "
            "WHERE user_id = ? AND pending_since_ms IS NOT NULL"
        )
        self._sql_lag_put = f"INSERT INTO {lag} (agent_id, written_ms, lag_ms) VALUES (?, ?, ?)"
        self._sql_lag_trim = (
            f"DELETE FROM {lag} WHERE agent_id = ? AND rowid <= (SELECT rowid FROM {lag} "
            "WHERE agent_id = ? ORDER BY rowid DESC LIMIT 1 OFFSET ?)"
        )
        self._sql_lag_agents = f"SELECT DISTINCT agent_id FROM {lag}"
        self._sql_lag_get = (
            f"SELECT lag_ms FROM {lag} WHERE agent_id = ? AND written_ms >= ? "
            "ORDER BY rowid DESC LIMIT ?"
        )
        self._sql_prune = (
            f"UPDATE {f} SET pending_since_ms = NULL WHERE user_id IN (SELECT user_id FROM {f} "
            "WHERE pending_since_ms < ? AND newest_ingest_ms < ? LIMIT ?)"
        )
        self._sql_active = f"SELECT count(*) FROM {f} WHERE newest_ingest_ms >= ?"
        self._sql_pending = f"SELECT count(*) FROM {f} WHERE pending_since_ms IS NOT NULL"
        self._sql_stale = f"SELECT count(*) FROM {f} WHERE pending_since_ms <= ?"
        self._sql_worst = (
            f"SELECT user_id, pending_since_ms FROM {f} WHERE pending_since_ms IS NOT NULL "
            "ORDER BY pending_since_ms LIMIT ?"
        )
        self._sql_user_fresh = (
            f"SELECT newest_ingest_ms, reflected_ingest_ms, pending_since_ms FROM {f} "
            "WHERE user_id = ?"
        )
