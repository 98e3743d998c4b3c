"""The embedded feature store: one SQLite file, for a single machine (like Feast's local mode).

Same semantics as `RedisStore`: event-time guard per agent, tombstones, snippet TTL enforced on
read. The flow process and the API process share the file: WAL journal (readers never wait
for the writer), `busy_timeout` for the writer lock, one transaction per batch. Inside one
process, one connection is shared by every thread behind a lock.

Tables (`<prefix>_` in front of each name; layout in `connectors/README.md`):

    agents(user_id, agent_id, version, params, extras, event_time_ms, ingest_time_ms,
           computed_at_ms)                  primary key (user_id, agent_id)
    snippets(user_id, agent_id, text, expires_at_ms)     primary key (user_id, agent_id)
    feedback(user_id, data)                 primary key user_id
    meta(user_id, consents, newest_event_ms, newest_ingest_ms, created_ms, history)
                                            primary key user_id
    tombstones(user_id, deleted_at_ms)      primary key user_id
    fresh(user_id, newest_ingest_ms, reflected_ingest_ms, pending_since_ms)  primary key user_id
    fresh_lag(agent_id, written_ms, lag_ms)  recent lag samples (rowid order)
    store(one, id, created_ms, state, state_ms)  the identity marker: at most one row
    ledger, ledger_agents, ledger_reactions  the tip ledger (`connectors/store/sqlite_ledger.py`)
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from connectors.clock import now_ms as _now_ms
from connectors.exceptions import StoreError
from connectors.store.base import (
    IDENTITY_READY,
    LAG_SAMPLES_KEPT,
    LAG_SAMPLES_READ,
    PRUNE_PER_SUMMARY,
    FreshnessSummary,
    LagStats,
    StoredAgentJSON,
    StoredUser,
    StoredUserBytes,
    StoredUserJSON,
    StoreIdentity,
    UserFreshness,
    UserWrite,
    decode_history,
    dumps_compact,
    encode_history,
    history_covers,
    lag_samples,
    nearest_rank,
    new_identity_id,
    stamps_of,
)
from connectors.store.sqlite_ledger import LEDGER_TABLES, SQLiteLedgerMixin
from connectors.store.sqlite_schema import SQLiteSchema

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_PURGE_EVERY_MS = 60_000
"""Expired snippets are never returned; their rows are deleted at most this often."""


_dumps = dumps_compact

_IN_CHUNK = 500
"""User ids per `IN (...)` list (SQLite's oldest variable limit is 999)."""


class _Rows:
    """The upserts of a batch's writes, gathered for one `executemany` per statement."""

    __slots__ = ("feedback", "meta", "no_snippets", "pending", "puts", "reflected", "snippets")

    def __init__(self) -> None:
        self.puts: list[tuple[object, ...]] = []
        self.snippets: list[tuple[object, ...]] = []
        self.no_snippets: list[tuple[object, ...]] = []
        self.feedback: list[tuple[object, ...]] = []
        self.meta: list[tuple[object, ...]] = []
        self.reflected: list[tuple[object, ...]] = []
        self.pending: list[tuple[object, ...]] = []

    def reflect(self, uid: str, reflected: int | None) -> None:
        if reflected is not None:
            self.reflected.append((uid, reflected, reflected))
            self.pending.append((uid,))


class SQLiteStore(SQLiteSchema, SQLiteLedgerMixin):
    """`FeatureStore` (and `TipLedger`) on one SQLite file (`":memory:"` for a private, throwaway store)."""

    def __init__(self, path: str | Path, *, key_prefix: str = "oo", busy_timeout_ms: int = 10_000):
        self._path = str(path)
        p = re.sub(r"\W", "_", key_prefix) or "oo"
        self._t = {
            n: f"{p}_{n}"
            for n in (
                "agents",
                "snippets",
                "feedback",
                "meta",
                "tombstones",
                "fresh",
                "fresh_lag",
                "store",
                *LEDGER_TABLES,
            )
        }
        self._lock = threading.RLock()
        self._last_purge_ms = 0
        try:
            if self._path != ":memory:" and not self._path.startswith("file:"):
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self._path,
                timeout=busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"SQLite store {self._path!r} cannot be opened: {exc}") from exc
        try:
            self._setup(busy_timeout_ms)
        except sqlite3.Error as exc:
            self._conn.close()
            raise StoreError(f"SQLite store {self._path!r} cannot be set up: {exc}") from exc
        self._prepare_sql()
        self._prepare_write_sql()

    def _prepare_write_sql(self) -> None:
        """The write path's own statements: a write's snippets follow its agents only where the
        agent row now holds this write (its guarded upsert leaves a newer row untouched, so
        the stored event time equals this write's exactly when the upsert took it)."""
        agents, snippets = self._t["agents"], self._t["snippets"]
        current = (
            f"EXISTS (SELECT 1 FROM {agents} WHERE user_id = ?1 AND agent_id = ?2 "
            "AND event_time_ms = ?3)"
        )
        self._sql_snippet_put_current = (
            f"INSERT INTO {snippets} (user_id, agent_id, text, expires_at_ms) "
            f"SELECT ?1, ?2, ?4, ?5 WHERE {current} ON CONFLICT (user_id, agent_id) "
            "DO UPDATE SET text = excluded.text, expires_at_ms = excluded.expires_at_ms"
        )
        self._sql_snippet_del_current = (
            f"DELETE FROM {snippets} WHERE user_id = ?1 AND agent_id = ?2 AND {current}"
        )
        self._sql_tombs_in = (
            f"SELECT user_id, deleted_at_ms FROM {self._t['tombstones']} WHERE user_id IN "
        )

    # -- plumbing -------------------------------------------------------------------------------

    def _guard(self, what: str, fn: Callable[[], T]) -> T:
        with self._lock:
            try:
                return fn()
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite store {self._path!r} failed ({what}): {exc}") from exc

    def _transaction(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(connection)` in one BEGIN IMMEDIATE ... COMMIT (ROLLBACK when it raises)."""

        def run() -> T:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                result = fn(c)
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")
            return result

        return self._guard(what, run)

    def _tombs(self, c: sqlite3.Connection, user_ids: list[str]) -> dict[str, int]:
        """The stored tombstones of `user_ids` (deleted users only), a few statements in all."""
        tombs: dict[str, int] = {}
        for i in range(0, len(user_ids), _IN_CHUNK):
            chunk = user_ids[i : i + _IN_CHUNK]
            sql = self._sql_tombs_in + "(" + ",".join("?" * len(chunk)) + ")"
            tombs.update(c.execute(sql, chunk).fetchall())
        return tombs

    def _apply(
        self,
        c: sqlite3.Connection,
        w: UserWrite,
        now: int,
        rows: _Rows,
        tombs: dict[str, int] | None,
    ) -> bool:
        """Apply one write, its upserts gathered into `rows` (`_flush` runs them); False when
        the history guard refused it (ADR 0009). `tombs`: the batch's tombstones read before
        it (`_tombs`; only when each user appears once), else None (read here)."""
        uid = w.user_id
        tomb: int | None
        if w.deleted_at_ms is not None:
            self._delete(c, uid, w.deleted_at_ms)
        if tombs is None:
            row = c.execute(self._sql_tomb_get, (uid,)).fetchone()
            tomb = row[0] if row else None
        else:
            # What `_delete` just did: the tombstone only moves forward.
            tomb = tombs.get(uid)
            if w.deleted_at_ms is not None and (tomb is None or w.deleted_at_ms > tomb):
                tomb = w.deleted_at_ms
        for agent_id in w.removed_agents:
            c.execute(self._sql_agent_del, (uid, agent_id))
            c.execute(self._sql_snippet_del, (uid, agent_id))
            c.execute(self._sql_ledger_forget, (uid, agent_id))
        history = None
        if w.history:
            history = encode_history(w.history)
            stored = c.execute(self._sql_history_get, (uid,)).fetchone()
            if stored and stored[0] and not history_covers(w.history, decode_history(stored[0])):
                # Like Redis: the flow did read these events, so freshness moves on; the
                # refusal itself is reported by the caller (ADR 0009).
                rows.reflect(uid, w.newest_ingest_ms)
                return False
        data_time = w.newest_event_ms
        puts, snippets, no_snippets = rows.puts, rows.snippets, rows.no_snippets
        for agent_id, a in w.agents.items():
            et = a.event_time_ms
            if tomb is not None and et <= tomb:
                continue
            if data_time is None or et > data_time:
                data_time = et
            puts.append(
                (
                    uid,
                    agent_id,
                    a.version,
                    a.params_text(),
                    a.extras_text(),
                    et,
                    a.ingest_time_ms,
                    a.computed_at_ms,
                )
            )
            if a.snippet is not None and a.ttl_seconds > 0:
                snippets.append((uid, agent_id, et, a.snippet, now + a.ttl_seconds * 1000))
            else:
                no_snippets.append((uid, agent_id, et))
        if tomb is not None and (data_time is None or data_time <= tomb):
            return True
        if w.feedback is not None:
            rows.feedback.append((uid, _dumps(w.feedback)))
        consents = None if w.consents is None else _dumps(w.consents)
        rows.meta.append((uid, consents, w.newest_event_ms, w.newest_ingest_ms, now, history))
        rows.reflect(uid, w.newest_ingest_ms)
        return True

    def _flush(self, c: sqlite3.Connection, rows: _Rows) -> None:
        """Run the gathered upserts, one `executemany` per statement, in the order one write's
        own statements need: agents, then their snippets (which act only where the agent row
        now holds this write: an agent older than the stored one is ignored and its snippet
        left untouched), feedback, meta, freshness."""
        for sql, values in (
            (self._sql_agent_put, rows.puts),
            (self._sql_snippet_put_current, rows.snippets),
            (self._sql_snippet_del_current, rows.no_snippets),
            (self._sql_feedback_put, rows.feedback),
            (self._sql_meta_put, rows.meta),
            (self._sql_reflect, rows.reflected),
            (self._sql_reflect_pending, rows.pending),
        ):
            if values:
                c.executemany(sql, values)
                values.clear()

    def _delete(self, c: sqlite3.Connection, user_id: str, deleted_at_ms: int) -> None:
        for sql in self._sql_delete:
            c.execute(sql, (user_id,))
        c.execute(self._sql_tomb_set, (user_id, deleted_at_ms))

    # -- FeatureStore ---------------------------------------------------------------------------

    def write_batch(self, writes: list[UserWrite], *, now_ms: int | None = None) -> list[str]:
        """Apply every write in one transaction, in order; return the users whose write the
        history guard refused (ADR 0009)."""
        if not writes:
            return []
        now = _now_ms() if now_ms is None else now_ms
        refused: list[str] = []

        def apply(c: sqlite3.Connection) -> None:
            refused.clear()  # a retried transaction starts over
            user_ids = [w.user_id for w in writes]
            if not all(user_ids):
                raise ValueError("user_id must not be empty")
            # Each user once (the flow's and the backfill's batches): every write's upserts
            # run together, one `executemany` per statement for the batch. A user written
            # twice: each write's upserts run before the next write starts.
            unique = len(set(user_ids)) == len(user_ids)
            tombs = self._tombs(c, user_ids) if unique else None
            rows = _Rows()
            for w in writes:
                if not self._apply(c, w, now, rows, tombs):
                    refused.append(w.user_id)
                if not unique:
                    self._flush(c, rows)
            self._flush(c, rows)
            real_now = _now_ms()
            c.executemany(
                self._sql_lag_put,
                [
                    (agent_id, real_now, lag)
                    for agent_id, lags in lag_samples(writes).items()
                    for lag in lags
                ],
            )
            if real_now - self._last_purge_ms >= _PURGE_EVERY_MS:
                # Never purge what a reader on the real clock could still see.
                c.execute(self._sql_purge, (min(now, real_now),))
                for (agent_id,) in c.execute(self._sql_lag_agents).fetchall():
                    c.execute(self._sql_lag_trim, (agent_id, agent_id, 10 * LAG_SAMPLES_KEPT))
                self._last_purge_ms = real_now

        self._transaction("write_batch", apply)
        return refused

    def _read_json(self, user_id: str, now: int) -> StoredUserJSON | None:
        """One user's rows as a `StoredUserJSON` (inside the caller's guard): the one decoding
        of a stored user; `read_user` and `read_users` parse it further."""
        c = self._conn
        meta = c.execute(self._sql_meta_get, (user_id,)).fetchone()
        if meta is None:
            return None
        fb = c.execute(self._sql_feedback_get, (user_id,)).fetchone()
        agents = {
            r[0]: StoredAgentJSON(*r) for r in c.execute(self._sql_agents_get, (now, user_id))
        }
        return StoredUserJSON(
            user_id=user_id,
            agents=agents,
            feedback_json=fb[0] if fb else "{}",
            consents=json.loads(meta[0]) if meta[0] else {},
            newest_event_ms=meta[1],
            newest_ingest_ms=meta[2],
        )

    def read_user(self, user_id: str, *, now_ms: int | None = None) -> StoredUser | None:
        now = _now_ms() if now_ms is None else now_ms
        user = self._guard("read_user", lambda: self._read_json(user_id, now))
        return None if user is None else user.parsed()

    def read_users(
        self, user_ids: Sequence[str], *, now_ms: int | None = None
    ) -> dict[str, StoredUser | None]:
        """Every user's features (None: unknown or deleted), in one read transaction."""
        return {
            user_id: None if user is None else user.parsed()
            for user_id, user in self.read_users_json(user_ids, now_ms=now_ms).items()
        }

    def read_users_json(
        self, user_ids: Sequence[str], *, now_ms: int | None = None
    ) -> dict[str, StoredUserJSON | None]:
        """`read_users` with the stored JSON left as text, in one read transaction."""
        wanted = list(dict.fromkeys(user_ids))
        now = _now_ms() if now_ms is None else now_ms

        def read_all() -> dict[str, StoredUserJSON | None]:
            c = self._conn
            c.execute("BEGIN")
            try:
                return {u: self._read_json(u, now) for u in wanted}
            finally:
                c.execute("COMMIT")

        return self._guard("read_users", read_all)

    def read_users_bytes(
        self,
        user_ids: Sequence[str],
        *,
        now_ms: int | None = None,
        agents: Collection[str] | None = None,
    ) -> dict[str, StoredUserBytes | None]:
        """`read_users_json`'s rows as the bytes Redis would hold (`StoredUserBytes`: each
        snippet as `dumps_compact({"text", "expires_at_ms"})`), in one read transaction;
        only `agents` when given."""
        users = self.read_users_json(user_ids, now_ms=now_ms)
        if agents is not None:
            keep = set(agents)
            for user in users.values():
                if user is not None:
                    user.agents = {a: v for a, v in user.agents.items() if a in keep}
        return {
            user_id: None if user is None else user.as_bytes() for user_id, user in users.items()
        }

    def delete_user(self, user_id: str, *, deleted_at_ms: int) -> None:
        self._transaction("delete_user", lambda c: self._delete(c, user_id, deleted_at_ms))

    def tombstone(self, user_id: str) -> int | None:
        row = self._guard(
            "tombstone", lambda: self._conn.execute(self._sql_tomb_get, (user_id,)).fetchone()
        )
        return int(row[0]) if row else None

    def user_ids(self) -> list[str]:
        sql = f"SELECT user_id FROM {self._t['meta']}"
        return self._guard("user_ids", lambda: [r[0] for r in self._conn.execute(sql)])

    def stamp_ingest(
        self, newest: Mapping[str, int], *, oldest: Mapping[str, int] | None = None
    ) -> None:
        stamps = stamps_of(newest, oldest)

        def apply(c: sqlite3.Connection) -> None:
            c.executemany(self._sql_stamp_newest, [(u, new) for u, new, _ in stamps])
            c.executemany(self._sql_stamp_pending, [(old, old, u) for u, _, old in stamps])

        if stamps:
            self._transaction("stamp_ingest", apply)

    def freshness_summary(
        self, *, now_ms: int, window_ms: int, sla_ms_by_agent: Mapping[str, int], worst_n: int = 10
    ) -> FreshnessSummary:
        since = now_ms - window_ms

        def run(c: sqlite3.Connection) -> FreshnessSummary:
            c.execute(self._sql_prune, (since, since, PRUNE_PER_SUMMARY))
            active = c.execute(self._sql_active, (since,)).fetchone()[0]
            pending = c.execute(self._sql_pending).fetchone()[0]
            stale, lag = {}, {}
            for agent_id, sla_ms in sorted(sla_ms_by_agent.items()):
                stale[agent_id] = c.execute(self._sql_stale, (now_ms - sla_ms,)).fetchone()[0]
                rows = c.execute(self._sql_lag_get, (agent_id, since, LAG_SAMPLES_READ))
                ordered = sorted(r[0] for r in rows)
                lag[agent_id] = LagStats(
                    len(ordered), nearest_rank(ordered, 0.5), nearest_rank(ordered, 0.99)
                )
            worst = [
                (user_id, max(now_ms - pending_since, 0))
                for user_id, pending_since in c.execute(self._sql_worst, (max(worst_n, 0),))
            ]
            return FreshnessSummary(now_ms, window_ms, active, pending, stale, worst, lag)

        return self._transaction("freshness_summary", run)

    def user_freshness(self, user_id: str) -> UserFreshness | None:
        row = self._guard(
            "user_freshness",
            lambda: self._conn.execute(self._sql_user_fresh, (user_id,)).fetchone(),
        )
        if row is None:
            return None
        return UserFreshness(user_id, row[0], row[1], row[2])

    # -- identity and refill ------------------------------------------------------------------

    def identity(self) -> StoreIdentity | None:
        sql = f"SELECT id, created_ms, state, state_ms FROM {self._t['store']} WHERE one = 1"
        row = self._guard("identity", lambda: self._conn.execute(sql).fetchone())
        return None if row is None else StoreIdentity(row[0], row[1], row[2], row[3])

    def create_identity(self, *, state: str = IDENTITY_READY) -> StoreIdentity:
        now = _now_ms()
        sql = (
            f"INSERT INTO {self._t['store']} (one, id, created_ms, state, state_ms) "
            "VALUES (1, ?, ?, ?, ?) ON CONFLICT (one) DO NOTHING"
        )

        def create(c: sqlite3.Connection) -> None:
            c.execute(sql, (new_identity_id(), now, state, now))

        self._transaction("create_identity", create)
        created = self.identity()
        assert created is not None
        return created

    def set_identity_state(self, identity_id: str, state: str) -> bool:
        sql = f"UPDATE {self._t['store']} SET state = ?, state_ms = ? WHERE one = 1 AND id = ?"
        changed: list[int] = []
        self._transaction(
            "set_identity_state",
            lambda c: changed.append(c.execute(sql, (state, _now_ms(), identity_id)).rowcount),
        )
        return bool(changed and changed[0])

    def restore_tombstones(self, tombstones: Mapping[str, int]) -> int:
        writes = []
        for user_id, deleted_at_ms in sorted(tombstones.items()):
            have = self.tombstone(user_id)
            if have is None or have < deleted_at_ms:
                writes.append(UserWrite(user_id=user_id, deleted_at_ms=int(deleted_at_ms)))
        self.write_batch(writes)
        return len(writes)

    def ping(self) -> None:
        self._guard("ping", lambda: self._conn.execute("SELECT 1").fetchone())

    def close(self) -> None:
        with self._lock:
            self._conn.close()
