"""The production feature store: one Redis or a Redis Cluster (`redis+cluster://`, ADR 0021).

Key layout (documented in `connectors/README.md`, "Store layout"); `p` is the key prefix and
`{u}` the user id inside a hash tag, so every key of one user lives in one cluster slot:

    p:{u}:agent:<agent_id>    hash   version, params, extras (JSON), event_time, ingest_time,
                                     computed_at (epoch ms)
    p:{u}:snippet:<agent_id>  string {"text", "expires_at_ms"} JSON, written with SET ... PX ttl
    p:{u}:feedback            string feedback JSON
    p:{u}:meta                hash   consents (JSON), newest_event_ms, newest_ingest_ms, created_ms,
                                     history (the history marker, ADR 0009)
    p:{u}:keys                set    every key above that exists for the user (for deletion)
    p:tomb:{u}                string deletion time (epoch ms) of a deleted user
    p:users                   zset   user id -> newest event time (ms), for freshness reporting
    p:{p~fresh}:newest        zset   user id -> ingest time of the newest event seen (stamped)
    p:{p~fresh}:reflected     zset   user id -> ingest time of the newest event the flow wrote
    p:{p~fresh}:pending       zset   user id -> ingest time of the oldest unreflected event
    p:{p~fresh}:lag:<agent>   stream recent lag samples of the agent (field `l`: "ms,ms,...")
    p:{p~store}:identity      hash   the store's identity marker: id, created_ms, state, state_ms
    p:{u}:ledger, p:{u}:ledger_at    the tip ledger (`connectors/store/redis_ledger.py`)

Every per-user write is applied by the Lua script `lua/write.lua` (atomic per user, guarded
server-side), `WRITE_USERS` users a call on one server and one a call on a cluster; a batch is
one pipeline, hence one round trip (one per master on a cluster, each waiting for a replica:
`redis_client.py`). The freshness keys are
cross-user: their own hash tag puts them in one cluster slot, so each freshness script
(`redis_freshness.py`) is atomic too. Failures: `StoreError` only (see `_guard`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from functools import partial
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any, TypeVar

import redis
from redis.exceptions import RedisClusterException

from connectors.clock import now_ms as _now_ms
from connectors.exceptions import StoreError
from connectors.store.base import (
    IDENTITY_READY,
    StoredUser,
    StoredUserBytes,
    StoredUserJSON,
    StoreIdentity,
    UserWrite,
    dumps_compact,
    encode_history,
    new_identity_id,
)
from connectors.store.redis_batch_read import read_users_in_transaction
from connectors.store.redis_client import RedisConnection
from connectors.store.redis_freshness import RedisFreshnessMixin
from connectors.store.redis_ledger import RedisLedgerMixin
from connectors.store.redis_scripts import RedisScriptsMixin, Scripts

__all__ = ["RedisStore"]

T = TypeVar("T")


_dumps = dumps_compact


READ_CHUNK = 100
"""Users per `read` script call on one Redis: one call costs the server about as much as the
same users' calls one by one, and the client much less (one command to pack and parse); a
call of 100 users keeps the server busy for a few milliseconds at most."""


WRITE_USERS = 32
"""Users per `write` script call on one Redis (ADR 0055): the call's own cost (Redis looking
the script up and running it, the client packing one command and reading its acknowledgement)
is paid once for them all; 32 users' writes hold the server for well under a millisecond. On a
cluster a call's keys must share a slot: one user a call."""

_WROTE = (0, 1, 0)
"""A user's `write` outcome (tombstone seen, user exists, history refused) when the script
answered nothing for it: written, no tombstone (`lua/write.lua`)."""


class RedisStore(RedisScriptsMixin, RedisFreshnessMixin, RedisLedgerMixin):
    """`FeatureStore` (and `TipLedger`) on Redis or Redis Cluster (`connectors.store.redis_client`
    says which URL is which). Safe to share between threads and processes."""

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "oo",
        socket_timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
        client_retries: int = 2,
        freshness: bool = True,
        ledger_only: bool = False,
    ) -> None:
        """`socket_timeout_s` bounds each reply (a stopped Redis accepts connections and never
        answers), `connect_timeout_s` each connection; `client_retries` retries a call inside
        the client after a connection error or timeout (0: the caller retries). `ledger_only`: this
        server holds only the tip ledger (`SplitLedgerStore`, ADR 0052), so a tip is recorded
        without the user's features being here."""
        if socket_timeout_s <= 0 or connect_timeout_s <= 0 or client_retries < 0:
            raise ValueError(
                "expected positive timeouts and client_retries >= 0; got "
                f"{socket_timeout_s}, {connect_timeout_s}, {client_retries}"
            )
        self._freshness = freshness
        self._ledger_only = ledger_only
        """Keep the freshness bookkeeping (reflected users, lag samples) on each write."""
        self._prefix = key_prefix
        self._users_key = f"{key_prefix}:users"
        fresh = f"{key_prefix}:{{{key_prefix}~fresh}}:"  # '~' is never in a user id
        self._fresh_keys = [f"{fresh}newest", f"{fresh}pending", f"{fresh}reflected"]
        self._lag_prefix = f"{fresh}lag:"
        self._identity_key = f"{key_prefix}:{{{key_prefix}~store}}:identity"
        try:
            self._conn = RedisConnection(
                url,
                socket_timeout_s=socket_timeout_s,
                connect_timeout_s=connect_timeout_s,
                client_retries=client_retries,
            )
        except (redis.RedisError, ValueError) as exc:
            raise StoreError(f"invalid Redis URL {url!r}: {exc}") from exc
        self._where = self._conn.where
        self._scripts = Scripts()
        self._transaction_reads = True

    @property
    def _r(self) -> Any:
        """The redis-py client (`redis.Redis`, or `RedisCluster` made on first use)."""
        return self._conn.client

    # -- keys ---------------------------------------------------------------------------------

    def _base(self, user_id: str) -> str:
        if not user_id:
            raise ValueError("user_id must not be empty")
        return f"{self._prefix}:{{{user_id}}}:"

    def _tomb_key(self, user_id: str) -> str:
        return f"{self._prefix}:tomb:{{{user_id}}}"

    # -- plumbing -------------------------------------------------------------------------------

    def _guard(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return self._conn.call(fn)
        except redis.ConnectionError as exc:
            raise StoreError(f"Redis at {self._where} is unreachable ({what}): {exc}") from exc
        except redis.TimeoutError as exc:
            raise StoreError(f"Redis at {self._where} timed out ({what}): {exc}") from exc
        except redis.RedisError as exc:
            raise StoreError(f"Redis at {self._where} failed ({what}): {exc}") from exc
        except RedisClusterException as exc:  # no node answers, or slots are not covered
            raise StoreError(f"Redis at {self._where} is unavailable ({what}): {exc}") from exc

    def _read_all(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Replies of read commands in one pipeline (per server); the first error raises."""
        replies = self._conn.pipeline(commands, write=False)
        for r in replies:
            if isinstance(r, Exception):
                raise r
        return replies

    def _write_call(
        self, w: UserWrite, now_ms: int, *, deleted_at_ms: int | None = None
    ) -> tuple[list[str], list[Any]]:
        """The `write` script's keys and arguments of one user (`lua/write.lua`)."""
        keys: list[str] = []
        args: list[Any] = []
        self._write_args(w, now_ms, keys, args, deleted_at_ms)
        return keys, args

    def _write_args(
        self,
        w: UserWrite,
        now_ms: int,
        keys: list[str],
        args: list[Any],
        deleted_at_ms: int | None = None,
    ) -> None:
        """Append one user's block of the `write` script's keys and arguments. Numbers go as
        their decimal text, as the client would send them: hiredis packs an int argument at
        about three times the cost of a str one (ADR 0055)."""
        user_id = w.user_id
        base = self._base(user_id)
        deleted = w.deleted_at_ms if deleted_at_ms is None else deleted_at_ms
        keys += (f"{base}meta", f"{base}feedback", f"{base}keys", self._tomb_key(user_id))
        agents = w.agents
        removed = w.removed_agents
        newest_event, newest_ingest = w.newest_event_ms, w.newest_ingest_ms
        now = f"{now_ms}"
        args += (
            now,
            "" if deleted is None else f"{deleted}",
            f"{len(agents)}",
            f"{len(removed)}",
            "" if w.feedback is None else _dumps(w.feedback),
            "" if w.consents is None else _dumps(w.consents),
            "" if newest_event is None else f"{newest_event}",
            "" if newest_ingest is None else f"{newest_ingest}",
            now,
        )
        for agent_id, a in agents.items():
            keys += (f"{base}agent:{agent_id}", f"{base}snippet:{agent_id}")
            ttl_ms = a.ttl_seconds * 1000
            snippet = ""
            if a.snippet is not None and ttl_ms > 0:
                # `_dumps({"text": ..., "expires_at_ms": ...})`, written out: the same text.
                snippet = (
                    f'{{"text":{encode_basestring(a.snippet)},"expires_at_ms":{now_ms + ttl_ms}}}'
                )
            params, extras = a.params_json, a.extras_json
            args += (
                a.version,
                _dumps(a.params) if params is None else params,
                _dumps(a.extras) if extras is None else extras,
                f"{a.event_time_ms}",
                f"{a.ingest_time_ms}",
                f"{a.computed_at_ms}",
                snippet,
                f"{ttl_ms}",
            )
        for agent_id in removed:
            keys += (f"{base}agent:{agent_id}", f"{base}snippet:{agent_id}")
        args.append(encode_history(w.history) if w.history else "")

    @staticmethod
    def _score(w: UserWrite) -> int:
        score = w.newest_event_ms
        for a in w.agents.values():
            if score is None or a.event_time_ms > score:
                score = a.event_time_ms
        return 0 if score is None else score

    def _run_scripts(
        self,
        writes: Sequence[UserWrite],
        now_ms: int,
        *,
        deleted_at_ms: Sequence[int | None] | None = None,
        before: Sequence[Sequence[Any]] = (),
        after: Sequence[Sequence[Any]] = (),
        extra: Sequence[tuple[str, list[str], list[Any]]] = (),
    ) -> list[tuple[int, int, int]]:
        """One pipeline: `before` commands, the `write` script for `writes` (`WRITE_USERS` a
        call on one server, one on a cluster; `deleted_at_ms`, one per write, overrides their
        deletion times), `extra` scripts, `after`.

        `extra` holds (script name, keys, args) of other scripts. Returns each write's
        (tombstone seen, user exists, history refused), in order. A NOSCRIPT (server restarted
        or flushed its script cache) reloads the scripts and re-runs only the script calls
        that were refused.
        """
        per = 1 if self._conn.cluster else WRITE_USERS
        calls: list[tuple[str, list[str], list[Any]]] = []
        weights: list[int] = []
        add = self._write_args
        for start in range(0, len(writes), per):
            keys: list[str] = []
            args: list[Any] = []
            for i in range(start, min(start + per, len(writes))):
                add(
                    writes[i],
                    now_ms,
                    keys,
                    args,
                    None if deleted_at_ms is None else deleted_at_ms[i],
                )
            calls.append(("write", keys, args))
            weights.append(min(per, len(writes) - start))
        weights += [1] * len(extra)
        replies = self._evalsha_all(
            [*calls, *extra], write=True, before=before, after=after, weights=weights
        )
        for r in replies:
            if isinstance(r, Exception):
                raise r
        results = [_WROTE] * len(writes)
        first = len(before)
        for n, reply in enumerate(replies[first : first + len(calls)]):
            for j in range(0, len(reply), 4):
                user, seen, exists, refused = reply[j : j + 4]
                results[n * per + int(user) - 1] = (int(seen), int(exists), int(refused))
        return results

    # -- FeatureStore ---------------------------------------------------------------------------

    def write_batch(self, writes: list[UserWrite], *, now_ms: int | None = None) -> list[str]:
        """Apply every write in one pipelined round trip (a second one only after a deletion).

        Returns the users whose write the history guard refused (ADR 0009)."""
        if not writes:
            return []
        now = _now_ms() if now_ms is None else now_ms
        users_key = self._users_key
        # The users index is updated before the guarded scripts: if a deletion slips in
        # between, the script sees the tombstone and the correction below fixes the index.
        zadd: list[Any] = ["ZADD", users_key, "GT"]
        score = self._score
        for w in writes:
            zadd += (f"{score(w)}", w.user_id)  # as text: cheaper to pack than an int
        # Freshness bookkeeping rides in the same pipeline: the reflect script after the user
        # scripts, then the lag samples.
        if self._freshness:
            reflect, xadds = self._freshness_writes(writes)
            extra = [("reflect", self._fresh_keys, reflect)]
        else:
            xadds, extra = [], []
        # Consent revoked: the removed agents' values leave the user's tip ledger too.
        extra += [
            self.ledger_forget_call(w.user_id, w.removed_agents) for w in writes if w.removed_agents
        ]

        def run() -> list[str]:
            results = self._run_scripts(writes, now, before=[zadd], extra=extra, after=xadds)
            fix: list[tuple[Any, ...]] = []
            refused = [w.user_id for w, r in zip(writes, results, strict=True) if r[2]]
            for w, (tomb_seen, exists, _refused) in zip(writes, results, strict=True):
                if tomb_seen:
                    if exists:
                        fix.append(("ZADD", users_key, "GT", self._score(w), w.user_id))
                    else:
                        fix.append(("ZREM", users_key, w.user_id))
                        for key in self._fresh_keys:  # a deleted user leaves no trace
                            fix.append(("ZREM", key, w.user_id))
            if fix:
                for r in self._conn.pipeline(fix, write=True):
                    if isinstance(r, Exception):
                        raise r
            return refused

        return self._guard("write_batch", run)

    def _read_keys(self, user_id: str) -> list[str]:
        """The `read` script's keys of one user (`lua/read.lua`)."""
        base = self._base(user_id)
        return [f"{base}meta", f"{base}feedback", f"{base}keys"]

    def _read_replies(
        self, what: str, user_ids: list[str], agents: Collection[str] | None = None
    ) -> list[StoredUserBytes | None]:
        """Each user as stored (None: unknown or deleted), in order, in one pipelined round
        trip: one `read` script call per `READ_CHUNK` users (one per user on a cluster, where a
        call's keys must share a slot); only `agents` when given, else every stored agent."""
        if agents is not None and not self._conn.cluster and self._transaction_reads:
            # One MULTI/EXEC of plain commands (`redis_batch_read.py`, ADR 0041); None: this
            # client has no hiredis reader, so the script reads from now on.
            pool, bases, names = self._r.connection_pool, [self._base(u) for u in user_ids], agents
            users = self._guard(what, lambda: read_users_in_transaction(pool, bases, list(names)))
            if users is not None:
                return users
            self._transaction_reads = False
        if self._conn.cluster:
            groups = [[u] for u in user_ids]
        else:
            groups = [user_ids[i : i + READ_CHUNK] for i in range(0, len(user_ids), READ_CHUNK)]
        read_keys = self._read_keys
        args = [] if agents is None else list(agents)
        calls: list[tuple[str, list[str], list[Any]]] = [
            ("read", [k for u in group for k in read_keys(u)], args) for group in groups
        ]

        def run() -> list[Any]:
            replies = self._evalsha_all(calls, write=False, decode=False)
            for r in replies:
                if isinstance(r, Exception):
                    raise r
            return replies

        users_of = self._users_of
        return [user for reply in self._guard(what, run) for user in users_of(reply)]

    def read_user(self, user_id: str, *, now_ms: int | None = None) -> StoredUser | None:
        keys = self._read_keys(user_id)
        reply = self._guard("read_user", lambda: self._eval("read", keys, [], decode=False))
        [user] = self._users_of(reply)
        if user is None:
            return None
        return user.decoded(user_id, _now_ms() if now_ms is None else now_ms).parsed()

    def read_users(
        self, user_ids: Sequence[str], *, now_ms: int | None = None
    ) -> dict[str, StoredUser | None]:
        """Every user's features (None: unknown or deleted) in one pipelined round trip."""
        return {
            user_id: None if user is None else user.parsed()
            for user_id, user in self.read_users_json(user_ids, now_ms=now_ms).items()
        }

    def read_users_json(
        self, user_ids: Sequence[str], *, now_ms: int | None = None
    ) -> dict[str, StoredUserJSON | None]:
        """`read_users` with the stored JSON left as text, in one round trip (`_read_replies`)."""
        wanted = list(dict.fromkeys(user_ids))
        if not wanted:
            return {}
        now = _now_ms() if now_ms is None else now_ms
        return {
            user_id: None if user is None else user.decoded(user_id, now)
            for user_id, user in self.read_users_bytes(wanted).items()
        }

    def read_users_bytes(
        self,
        user_ids: Sequence[str],
        *,
        now_ms: int | None = None,
        agents: Collection[str] | None = None,
    ) -> dict[str, StoredUserBytes | None]:
        """Every user as stored (`StoredUserBytes`; None: unknown or deleted) in one pipelined
        round trip (`_read_replies`), only `agents` when given; `now_ms` is unused (the reader
        checks snippet expiry)."""
        wanted = list(dict.fromkeys(user_ids))
        if not wanted:
            return {}
        users = self._read_replies("read_users", wanted, agents)
        return dict(zip(wanted, users, strict=True))

    @staticmethod
    def _users_of(reply: Sequence[Any]) -> list[StoredUserBytes | None]:
        """The users of one `read` script reply (bytes, flat: `lua/read.lua`), in order; each
        agent row a tuple of bytes and None, as the transaction read (`redis_batch_read.py`)
        answers it, so the two reads give equal `StoredUserBytes`."""
        users: list[StoredUserBytes | None] = []
        add = users.append
        reply = tuple(reply)
        i, end = 0, len(reply)
        while i < end:
            if reply[i] is None:
                add(None)
                i += 1
                continue
            n, consents, newest_event, newest_ingest, feedback = reply[i : i + 5]
            i += 5
            rows: list[Sequence[Any]] = [reply[j : j + 8] for j in range(i, i + 8 * n, 8)]
            i += 8 * n
            add(StoredUserBytes(consents, feedback, newest_event, newest_ingest, rows))
        return users

    def delete_user(self, user_id: str, *, deleted_at_ms: int) -> None:
        """Delete every key of the user atomically and leave a tombstone; one round trip."""
        only = [UserWrite(user_id=user_id)]
        now = _now_ms()
        after = [("ZREM", key, user_id) for key in (self._users_key, *self._fresh_keys)]
        self._guard(
            "delete_user",
            lambda: self._run_scripts(only, now, deleted_at_ms=[deleted_at_ms], after=after),
        )

    def users_known(self, user_ids: Collection[str]) -> set[str]:
        """Those of `user_ids` that have features here; one round trip of reads (no fsync)."""
        wanted = list(dict.fromkeys(user_ids))
        commands = [("EXISTS", f"{self._base(u)}meta") for u in wanted]

        def run() -> list[Any]:
            replies = self._conn.pipeline(commands, write=False)
            for r in replies:
                if isinstance(r, Exception):
                    raise r
            return replies

        replies = self._guard("users_known", run)
        return {u for u, n in zip(wanted, replies, strict=True) if n}

    def forget_in_ledger(
        self, *, deleted: Mapping[str, int], removed: Mapping[str, Collection[str]]
    ) -> None:
        """For a server that holds only the tip ledger (ADR 0052): delete each user of
        `deleted` (user -> deletion ms) as `delete_user` does, tombstone included (a tip
        recorded later is refused), and take the agents of `removed` (user -> agent ids) out of
        the user's entries; one round trip, idempotent."""
        if not deleted and not removed:
            return
        now = _now_ms()
        users = [UserWrite(user_id=u) for u in deleted]
        times: list[int | None] = list(deleted.values())
        forgets = [
            self.ledger_forget_call(u, set(agents)) for u, agents in removed.items() if agents
        ]
        self._guard(
            "forget_in_ledger",
            lambda: self._run_scripts(users, now, deleted_at_ms=times, extra=forgets),
        )

    def tombstone(self, user_id: str) -> int | None:
        value = self._guard("tombstone", lambda: self._r.get(self._tomb_key(user_id)))
        return int(value) if value is not None else None

    def user_ids(self) -> list[str]:
        return list(self._guard("user_ids", lambda: self._r.zrange(self._users_key, 0, -1)))

    # -- identity and refill ------------------------------------------------------------------

    @staticmethod
    def _identity_of(flat: Any) -> StoreIdentity | None:
        fields = flat if isinstance(flat, dict) else dict(zip(flat[::2], flat[1::2], strict=True))
        if not fields.get("id"):
            return None
        return StoreIdentity(
            id=fields["id"],
            created_ms=int(fields.get("created_ms") or 0),
            state=fields.get("state") or IDENTITY_READY,
            state_ms=int(fields.get("state_ms") or 0),
        )

    def identity(self) -> StoreIdentity | None:
        return self._identity_of(
            self._guard("identity", lambda: self._r.hgetall(self._identity_key))
        )

    def create_identity(self, *, state: str = IDENTITY_READY) -> StoreIdentity:
        args = [new_identity_id(), _now_ms(), state]
        reply = self._guard(
            "create_identity",
            lambda: self._eval("identity_create", [self._identity_key], args),
        )
        created = self._identity_of(reply)
        if created is None:
            raise StoreError(f"Redis at {self._where}: the identity marker could not be created")
        return created

    def set_identity_state(self, identity_id: str, state: str) -> bool:
        args = [identity_id, state, _now_ms()]
        reply = self._guard(
            "set_identity_state",
            lambda: self._eval("identity_state", [self._identity_key], args),
        )
        return bool(reply)

    def restore_tombstones(self, tombstones: Mapping[str, int]) -> int:
        """Two round trips per 1,000 users: read their tombstones, delete the ones missing."""
        users = sorted(tombstones)
        restored = 0
        for i in range(0, len(users), 1000):
            chunk = users[i : i + 1000]
            keys = [self._tomb_key(u) for u in chunk]
            gets: list[tuple[Any, ...]] = [("GET", k) for k in keys]
            stored: list[Any] = self._guard("restore_tombstones", partial(self._read_all, gets))
            writes = [
                UserWrite(user_id=u, deleted_at_ms=int(tombstones[u]))
                for u, have in zip(chunk, stored, strict=True)
                if have is None or int(have) < int(tombstones[u])
            ]
            self.write_batch(writes)
            restored += len(writes)
        return restored

    def ping(self) -> None:
        self._guard("ping", lambda: self._r.ping())

    def close(self) -> None:
        self._guard("close", self._conn.close)
