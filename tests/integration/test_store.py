"""The feature store contract, run against every backend: SQLite (a file per test), Redis and
Redis Cluster.

Redis is the `services` fixture's server (`tests/fixtures_services.py`), asked for only by the
Redis cases; the cluster (3 masters, 3 replicas) is the `redis_cluster` fixture's
(`tests/fixtures_cluster.py`), asked for only by the `redis-cluster` cases (marker `cluster`).
Every test has its own `key_prefix`, so tests never see each other's keys.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from connectors.exceptions import StoreError
from connectors.store import (
    AgentWrite,
    FeatureStore,
    RedisStore,
    SQLiteStore,
    UserWrite,
    open_store,
)
from connectors.store.redis_client import cluster_nodes_of
from connectors.store.redis_scripts import STREAM_CHUNK

T0 = 1_750_000_000_000  # a fixed "now" (ms) for tests that pass now_ms explicitly


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Backend:
    kind: str
    store: FeatureStore
    prefix: str
    raw: Any  # a plain client (redis.Redis or RedisCluster) on the same Redis, to look at keys

    def keys(self) -> set[str]:
        assert self.raw is not None
        return set(self.raw.scan_iter(match=f"{self.prefix}:*", count=1000))


@contextlib.contextmanager
def _open(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, key_prefix: str
) -> Iterator[Backend]:
    if kind == "sqlite":
        store = open_store(f"sqlite:///{tmp_path}/nested/dir/features.db", key_prefix=key_prefix)
        assert isinstance(store, SQLiteStore)
        try:
            yield Backend("sqlite", store, key_prefix, None)
        finally:
            store.close()
        return
    if kind == "redis-cluster":
        url = request.getfixturevalue("redis_cluster").url
        raw: Any = RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in cluster_nodes_of(url)],
            decode_responses=True,
        )
    else:
        url = request.getfixturevalue("services").redis_url
        raw = redis.Redis.from_url(url, decode_responses=True)
    store = open_store(url, key_prefix=key_prefix)
    assert isinstance(store, RedisStore)
    try:
        yield Backend(kind, store, key_prefix, raw)
    finally:  # the `key_prefix` fixture deletes the keys
        raw.close()
        store.close()


BACKENDS = ["sqlite", "redis", pytest.param("redis-cluster", marks=pytest.mark.cluster)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path, key_prefix: str) -> Iterator[Backend]:
    with _open(request.param, request, tmp_path, key_prefix) as b:
        yield b


@pytest.fixture
def redis_backend(
    request: pytest.FixtureRequest, tmp_path: Path, key_prefix: str
) -> Iterator[Backend]:
    with _open("redis", request, tmp_path, key_prefix) as b:
        yield b


def agent(
    agent_id: str = "mood",
    *,
    et: int = T0,
    snippet: str | None = "Take a short walk.",
    ttl: int = 3600,
    value: Any = 1,
) -> AgentWrite:
    return AgentWrite(
        agent_id=agent_id,
        version="1.0.0",
        params={"p": {"value": value, "source": "inferred"}},
        extras={"n": value},
        snippet=snippet,
        ttl_seconds=ttl,
        event_time_ms=et,
        ingest_time_ms=et + 5,
        computed_at_ms=et + 10,
    )


def user(user_id: str = "u1", *agents: AgentWrite, **kw: Any) -> UserWrite:
    newest = max((a.event_time_ms for a in agents), default=None)
    kw.setdefault("newest_event_ms", newest)
    kw.setdefault("newest_ingest_ms", None if newest is None else newest + 5)
    return UserWrite(user_id=user_id, agents={a.agent_id: a for a in agents}, **kw)


def test_agent_write_round_trip(backend: Backend) -> None:
    s = backend.store
    s.write_batch([user("u1", agent("mood"), agent("tasks", snippet=None))], now_ms=T0)
    got = s.read_user("u1", now_ms=T0 + 1)
    assert got is not None
    assert got.user_id == "u1"
    assert set(got.agents) == {"mood", "tasks"}
    mood = got.agents["mood"]
    assert mood.version == "1.0.0"
    assert mood.params == {"p": {"value": 1, "source": "inferred"}}
    assert mood.extras == {"n": 1}
    assert (mood.event_time_ms, mood.ingest_time_ms, mood.computed_at_ms) == (T0, T0 + 5, T0 + 10)
    assert mood.snippet == "Take a short walk."
    assert mood.snippet_expires_at_ms == T0 + 3_600_000
    assert got.agents["tasks"].snippet is None
    assert got.agents["tasks"].snippet_expires_at_ms is None
    assert (got.newest_event_ms, got.newest_ingest_ms) == (T0, T0 + 5)
    assert got.feedback == {}
    assert got.consents == {}


def test_unknown_user_reads_none(backend: Backend) -> None:
    assert backend.store.read_user("nobody") is None
    assert backend.store.tombstone("nobody") is None


def test_older_write_is_ignored_newer_replaces(backend: Backend) -> None:
    s = backend.store
    s.write_batch([user("u1", agent(et=T0 + 2000, value=2, snippet="new"))], now_ms=T0)
    s.write_batch([user("u1", agent(et=T0 + 1000, value=1, snippet="old"))], now_ms=T0)
    got = s.read_user("u1", now_ms=T0)
    assert got is not None
    assert got.agents["mood"].params["p"]["value"] == 2
    assert got.agents["mood"].snippet == "new"
    assert got.newest_event_ms == T0 + 2000  # freshness stamps only move forward

    s.write_batch([user("u1", agent(et=T0 + 3000, value=3, snippet="newer"))], now_ms=T0)
    got = s.read_user("u1", now_ms=T0)
    assert got is not None
    assert got.agents["mood"].params["p"]["value"] == 3
    assert got.agents["mood"].event_time_ms == T0 + 3000
    assert got.agents["mood"].snippet == "newer"


def test_snippet_ttl_is_enforced_on_read(backend: Backend) -> None:
    s = backend.store
    s.write_batch([user("u1", agent(ttl=1))], now_ms=T0)
    before = s.read_user("u1", now_ms=T0 + 999)
    assert before is not None
    assert before.agents["mood"].snippet == "Take a short walk."
    after = s.read_user("u1", now_ms=T0 + 1000)
    assert after is not None
    assert after.agents["mood"].snippet is None  # expired, though nothing evicted it yet
    assert after.agents["mood"].snippet_expires_at_ms is None
    assert after.agents["mood"].params["p"]["value"] == 1  # parameters stay


def test_snippet_really_expires(backend: Backend) -> None:
    s = backend.store
    s.write_batch([user("u1", agent(ttl=1))])
    got = s.read_user("u1")
    assert got is not None
    assert got.agents["mood"].snippet is not None
    if backend.raw is not None:
        assert 0 < backend.raw.pttl(f"{backend.prefix}:{{u1}}:snippet:mood") <= 1000
    time.sleep(1.2)
    got = s.read_user("u1")
    assert got is not None
    assert got.agents["mood"].snippet is None
    if backend.raw is not None:
        assert not backend.raw.exists(f"{backend.prefix}:{{u1}}:snippet:mood")


def test_rewrite_refreshes_ttl(backend: Backend) -> None:
    s = backend.store
    s.write_batch([user("u1", agent(et=T0, ttl=1))], now_ms=T0)
    s.write_batch([user("u1", agent(et=T0 + 800, ttl=1, snippet="again"))], now_ms=T0 + 800)
    got = s.read_user("u1", now_ms=T0 + 1500)
    assert got is not None
    assert got.agents["mood"].snippet == "again"
    assert got.agents["mood"].snippet_expires_at_ms == T0 + 1800
    if backend.raw is not None:
        backend.raw.pexpire(f"{backend.prefix}:{{u1}}:snippet:mood", 100)
        s.write_batch([user("u1", agent(et=T0 + 900, ttl=60))], now_ms=T0 + 900)
        assert backend.raw.pttl(f"{backend.prefix}:{{u1}}:snippet:mood") > 50_000
    # an ignored (older) write does not touch the snippet nor its expiry
    s.write_batch([user("u1", agent(et=T0 + 100, ttl=3600, snippet="stale"))], now_ms=T0 + 900)
    got = s.read_user("u1", now_ms=T0 + 1000)
    assert got is not None
    assert got.agents["mood"].snippet != "stale"


def test_agent_without_snippet_drops_the_old_one(backend: Backend) -> None:
    s = backend.store
    s.write_batch([user("u1", agent(et=T0))], now_ms=T0)
    s.write_batch([user("u1", agent(et=T0 + 1, snippet=None))], now_ms=T0)
    got = s.read_user("u1", now_ms=T0)
    assert got is not None
    assert got.agents["mood"].snippet is None


def test_removed_agents(backend: Backend) -> None:
    s = backend.store
    s.write_batch([user("u1", agent("mood"), agent("tasks"))], now_ms=T0)
    s.write_batch(
        [user("u1", removed_agents={"mood"}, consents={"mood": False, "tasks": True})], now_ms=T0
    )
    got = s.read_user("u1", now_ms=T0)
    assert got is not None
    assert set(got.agents) == {"tasks"}
    assert got.consents == {"mood": False, "tasks": True}
    if backend.raw is not None:
        keys = backend.keys()
        assert not any(":agent:mood" in k or ":snippet:mood" in k for k in keys)
        index = backend.raw.smembers(f"{backend.prefix}:{{u1}}:keys")
        assert not any(k.endswith(":mood") for k in index)


def test_feedback_and_consents_round_trip(backend: Backend) -> None:
    s = backend.store
    feedback = {"shown": 3, "liked": {"mood": 1}, "last": "2025-06-01"}
    s.write_batch([user("u1", feedback=feedback, consents={"mood": True})], now_ms=T0)
    got = s.read_user("u1")
    assert got is not None
    assert got.feedback == feedback
    assert got.consents == {"mood": True}
    assert got.agents == {}
    # a write without feedback or consents keeps them; a new one replaces them
    s.write_batch([user("u1", agent())], now_ms=T0)
    s.write_batch([user("u1", consents={"mood": False}, feedback={"shown": 4})], now_ms=T0)
    got = s.read_user("u1")
    assert got is not None
    assert got.consents == {"mood": False}
    assert got.feedback == {"shown": 4}
    assert "mood" in got.agents


def test_user_ids(backend: Backend) -> None:
    s = backend.store
    assert s.user_ids() == []
    s.write_batch([user(f"u{i}", agent(et=T0 + i)) for i in range(5)], now_ms=T0)
    assert sorted(s.user_ids()) == [f"u{i}" for i in range(5)]
    s.delete_user("u3", deleted_at_ms=T0 + 10)
    assert sorted(s.user_ids()) == ["u0", "u1", "u2", "u4"]


def _assert_only_tombstone(backend: Backend, user_id: str) -> None:
    if backend.raw is not None:
        # The per-agent lag samples (freshness) are numbers only, no user id: not a trace.
        lag_streams = f"{backend.prefix}:{{{backend.prefix}~fresh}}:lag:"
        present = backend.keys()
        keys = {k for k in present if not k.startswith(lag_streams)}
        assert keys == {f"{backend.prefix}:tomb:{{{user_id}}}"}


def test_delete_user_removes_every_key_and_guards_later_writes(backend: Backend) -> None:
    s = backend.store
    s.write_batch(
        [
            user(
                "u1",
                agent("mood", et=T0),
                agent("tasks", et=T0 + 1),
                feedback={"shown": 1},
                consents={"mood": True},
            )
        ],
        now_ms=T0,
    )
    s.delete_user("u1", deleted_at_ms=T0 + 5000)
    assert s.read_user("u1") is None
    assert s.tombstone("u1") == T0 + 5000
    assert s.user_ids() == []
    _assert_only_tombstone(backend, "u1")

    # data not newer than the deletion is ignored, whatever it carries
    s.write_batch(
        [user("u1", agent("mood", et=T0 + 4000), feedback={"shown": 9}, consents={"x": True})],
        now_ms=T0,
    )
    s.write_batch([user("u1", agent("mood", et=T0 + 5000))], now_ms=T0)
    assert s.read_user("u1") is None
    assert s.user_ids() == []
    _assert_only_tombstone(backend, "u1")

    # the user comes back only with what happened after the deletion
    s.write_batch(
        [user("u1", agent("mood", et=T0 + 4000), agent("tasks", et=T0 + 6000))], now_ms=T0
    )
    got = s.read_user("u1", now_ms=T0)
    assert got is not None
    assert set(got.agents) == {"tasks"}
    assert got.feedback == {}
    assert got.newest_event_ms == T0 + 6000
    assert s.user_ids() == ["u1"]

    # an older deletion never moves the tombstone back
    s.delete_user("u1", deleted_at_ms=T0 + 7000)
    s.delete_user("u1", deleted_at_ms=T0 + 1000)
    assert s.tombstone("u1") == T0 + 7000
    assert s.read_user("u1") is None
    _assert_only_tombstone(backend, "u1")


def test_deletion_inside_a_batch(backend: Backend) -> None:
    """The flow's path: `deleted_at_ms` in a `UserWrite`, with what came after the deletion."""
    s = backend.store
    s.write_batch([user("u1", agent("mood", et=T0), feedback={"shown": 2})], now_ms=T0)
    s.write_batch([user("u2", agent("mood", et=T0))], now_ms=T0)
    s.write_batch([UserWrite(user_id="u1", deleted_at_ms=T0 + 100)], now_ms=T0)
    assert s.read_user("u1") is None
    assert s.user_ids() == ["u2"]
    s.write_batch(
        [
            user(
                "u2",
                agent("tasks", et=T0 + 300),
                deleted_at_ms=T0 + 200,
                feedback={"shown": 0},
            )
        ],
        now_ms=T0,
    )
    got = s.read_user("u2", now_ms=T0)
    assert got is not None
    assert set(got.agents) == {"tasks"}
    assert got.feedback == {"shown": 0}
    assert s.tombstone("u2") == T0 + 200
    assert sorted(s.user_ids()) == ["u2"]
    if backend.raw is not None:
        keys = backend.keys()
        assert f"{backend.prefix}:{{u2}}:agent:mood" not in keys


def test_batch_of_1000_users_is_one_round_trip(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One round trip per server: one on Redis, one per master on the cluster (ADR 0021)."""
    s = backend.store
    s.write_batch([user("warm-up", agent())], now_ms=T0)  # connects and loads the scripts
    writes = [
        user(f"user-{i:04d}", agent("mood", et=T0 + i), agent("tasks", et=T0 + i, snippet=None))
        for i in range(1000)
    ]
    calls: list[str] = []
    if isinstance(s, RedisStore):
        conn_class = (
            redis.Connection
            if backend.kind == "redis-cluster"
            else s._r.connection_pool.connection_class
        )
        original = conn_class.send_packed_command
        original_read = conn_class.read_response
        last: dict[int, str] = {}

        # A round trip starts with a send after the replies of the previous one were read
        # (a streamed write sends its commands in several chunks before reading any reply).
        def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
            if last.get(self.port) != "send":
                calls.append(f"send {self.port}")
            last[self.port] = "send"
            return original(self, *args, **kwargs)

        def reading(self: Any, *args: Any, **kwargs: Any) -> Any:
            last[self.port] = "read"
            return original_read(self, *args, **kwargs)

        monkeypatch.setattr(conn_class, "send_packed_command", counting)
        monkeypatch.setattr(conn_class, "read_response", reading)
    else:
        assert isinstance(s, SQLiteStore)
        s._conn.set_trace_callback(
            lambda sql: calls.append(sql) if sql.startswith(("BEGIN", "COMMIT")) else None
        )
    s.write_batch(writes, now_ms=T0)
    if isinstance(s, RedisStore):
        monkeypatch.undo()
        servers = 3 if backend.kind == "redis-cluster" else 1  # three masters
        assert len(calls) == servers and len(set(calls)) == servers, calls
    else:
        s._conn.set_trace_callback(None)
        assert calls == ["BEGIN IMMEDIATE", "COMMIT"]
    assert len(s.user_ids()) == 1001
    got = s.read_user("user-0999", now_ms=T0)
    assert got is not None
    assert got.agents["mood"].event_time_ms == T0 + 999


def test_read_is_one_round_trip(redis_backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    s = redis_backend.store
    assert isinstance(s, RedisStore)
    s.write_batch([user("u1", agent("a"), agent("b"), agent("c"), feedback={"x": 1})])
    assert s.read_user("u1") is not None  # warm-up
    conn_class = s._r.connection_pool.connection_class
    original = conn_class.send_packed_command
    calls: list[int] = []

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(conn_class, "send_packed_command", counting)
    got = s.read_user("u1")
    monkeypatch.undo()
    assert got is not None
    assert set(got.agents) == {"a", "b", "c"}
    assert got.feedback == {"x": 1}
    assert len(calls) == 1


def test_lost_scripts_are_reloaded(redis_backend: Backend) -> None:
    backend = redis_backend
    assert backend.raw is not None
    s = backend.store
    s.write_batch([user("u1", agent(et=T0))], now_ms=T0)
    backend.raw.script_flush()
    s.write_batch([user("u1", agent(et=T0 + 1, value=5)), user("u2", agent())], now_ms=T0)
    backend.raw.script_flush()
    got = s.read_user("u1", now_ms=T0)
    assert got is not None
    assert got.agents["mood"].params["p"]["value"] == 5
    backend.raw.script_flush()
    s.delete_user("u2", deleted_at_ms=T0 + 1)
    assert s.read_user("u2") is None


def test_a_streamed_batch_larger_than_a_chunk_survives_lost_scripts(redis_backend: Backend) -> None:
    """A write batch is sent `STREAM_CHUNK` commands at a time: every reply is matched to its
    command, and scripts the server lost are reloaded and only the refused calls re-run."""
    backend = redis_backend
    assert backend.raw is not None
    s = backend.store
    n = 3 * STREAM_CHUNK + 5
    s.write_batch([user(f"s{i}", agent(et=T0)) for i in range(n)], now_ms=T0)
    backend.raw.script_flush()
    refused = s.write_batch([user(f"s{i}", agent(et=T0 + 1, value=i)) for i in range(n)], now_ms=T0)
    assert refused == []
    for i in (0, STREAM_CHUNK - 1, STREAM_CHUNK, n - 1):
        got = s.read_user(f"s{i}", now_ms=T0)
        assert got is not None
        assert got.agents["mood"].params["p"]["value"] == i


def _execs(raw: Any) -> int:
    """EXEC commands the server has run so far."""
    return int(raw.info("commandstats").get("cmdstat_exec", {}).get("calls", 0))


def test_a_streamed_write_runs_each_chunk_in_one_transaction(redis_backend: Backend) -> None:
    """Each `STREAM_CHUNK` commands of a streamed write are one MULTI/EXEC (one append-only-file
    fsync each, ADR 0042): replies stay matched to their commands, and a command the server
    refuses before running it (wrong arity here) discards its chunk only, every command of
    which answers with an error; the other chunks apply."""
    assert redis_backend.raw is not None
    s = redis_backend.store
    assert isinstance(s, RedisStore)
    p = redis_backend.prefix
    commands: list[tuple[str, ...]] = [
        ("SET", f"{p}:k{i}", str(i)) for i in range(2 * STREAM_CHUNK + 3)
    ]
    bad = STREAM_CHUNK + 1
    commands[bad] = ("SET", f"{p}:k{bad}")  # wrong arity: refused while queued
    execs = _execs(redis_backend.raw)
    replies = s._stream(commands)
    assert _execs(redis_backend.raw) == execs + 3
    assert len(replies) == len(commands)
    for i, reply in enumerate(replies):
        if STREAM_CHUNK <= i < 2 * STREAM_CHUNK:
            assert isinstance(reply, redis.ResponseError), (i, reply)
            assert redis_backend.raw.get(f"{p}:k{i}") is None
        else:
            assert reply is True or reply == "OK", (i, reply)
            assert redis_backend.raw.get(f"{p}:k{i}") == str(i)


def test_ping(backend: Backend) -> None:
    backend.store.ping()


def test_ping_on_a_dead_redis_raises_store_error() -> None:
    port = _free_port()  # nothing listens there
    store = open_store(f"redis://127.0.0.1:{port}/0")
    try:
        started = time.monotonic()
        with pytest.raises(StoreError, match=rf"Redis at 127\.0\.0\.1:{port} is unreachable"):
            store.ping()
        assert time.monotonic() - started < 5
        with pytest.raises(StoreError, match="unreachable"):
            store.read_user("u1")
        with pytest.raises(StoreError, match="unreachable"):
            store.write_batch([user("u1", agent())])
    finally:
        store.close()


def test_closed_sqlite_store_raises_store_error(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/f.db")
    store.close()
    with pytest.raises(StoreError, match=r"f\.db"):
        store.ping()


def test_sqlite_store_is_shared_between_connections(tmp_path: Path) -> None:
    """The flow and the API open the same file: each sees what the other committed."""
    url = f"sqlite:///{tmp_path}/shared.db"
    writer, reader = open_store(url), open_store(url)
    try:
        writer.write_batch([user("u1", agent())])
        got = reader.read_user("u1")
        assert got is not None
        assert got.agents["mood"].snippet == "Take a short walk."
        reader.delete_user("u1", deleted_at_ms=T0 + 10_000_000_000)
        assert writer.read_user("u1") is None
    finally:
        writer.close()
        reader.close()


@pytest.mark.parametrize(
    "url", ["memcached://localhost", "sqlite://relative.db", "sqlite:///", "no-scheme"]
)
def test_open_store_rejects_unknown_urls(url: str) -> None:
    with pytest.raises(StoreError, match="store URL"):
        open_store(url)


# -- identity marker and tombstone restore (ADR 0008) ---------------------------------------


def test_identity_marker_is_created_once_and_its_state_is_guarded_by_id(
    backend: Backend,
) -> None:
    s = backend.store
    assert s.identity() is None

    first = s.create_identity(state="filling")
    again = s.create_identity()

    assert again == first and first.state == "filling" and len(first.id) == 32
    assert s.identity() == first
    assert s.set_identity_state("another-store", "ready") is False
    assert s.identity() == first
    assert s.set_identity_state(first.id, "ready") is True
    now = s.identity()
    assert now is not None and (now.id, now.state) == (first.id, "ready")


def test_identity_marker_is_a_key_of_the_prefix_and_goes_with_a_wipe(
    redis_backend: Backend,
) -> None:
    s, raw = redis_backend.store, redis_backend.raw
    assert raw is not None
    first = s.create_identity()
    present = redis_backend.keys()
    assert f"{redis_backend.prefix}:{{{redis_backend.prefix}~store}}:identity" in present

    raw.delete(*redis_backend.keys())  # the test's whole store wiped

    assert s.identity() is None
    assert s.create_identity().id != first.id


def test_restore_tombstones_deletes_what_the_store_lost_and_nothing_else(
    backend: Backend,
) -> None:
    s = backend.store
    s.write_batch([user("kept", agent("mood", et=T0)), user("back", agent("mood", et=T0))])
    s.delete_user("known", deleted_at_ms=T0 + 50)

    restored = s.restore_tombstones({"back": T0 + 10, "known": T0 + 50, "never": T0 + 20})

    assert restored == 2  # "known" already had its tombstone
    assert s.read_user("back") is None and s.tombstone("back") == T0 + 10
    assert s.tombstone("never") == T0 + 20 and s.tombstone("known") == T0 + 50
    assert s.read_user("kept") is not None
    assert sorted(s.user_ids()) == ["kept"]
    # the restored tombstones guard later writes like any deletion
    s.write_batch([user("back", agent("mood", et=T0 + 5))])
    assert s.read_user("back") is None
    assert s.restore_tombstones({"back": T0 + 10}) == 0


def test_the_batch_read_in_a_transaction_answers_what_the_read_script_answers(
    redis_backend: Backend,
) -> None:
    """Named agents on one Redis are read as plain commands in one MULTI/EXEC (ADR 0041): the
    same `StoredUserBytes` as the `read` script's, for users with and without feedback,
    snippets, some of the named agents, a deleted user, an unknown user and an unknown agent."""
    s = redis_backend.store
    assert isinstance(s, RedisStore)
    s.write_batch(
        [
            user("u1", agent("mood"), agent("focus", snippet=None), consents={"mood": True}),
            user("u2", agent("focus", snippet='He said "go".')),
            user("u3", agent("mood"), feedback={"shown": 2}),
            user("gone", agent("mood")),
        ],
        now_ms=T0,
    )
    s.delete_user("gone", deleted_at_ms=T0 + 1)
    asked = ["u1", "nobody", "u2", "gone", "u3", "u1"]
    named = ["focus", "mood", "unknown-agent"]
    via_transaction = s.read_users_bytes(asked, agents=named)
    assert s._transaction_reads  # read in a transaction, not fallen back to the script
    s._transaction_reads = False  # the script, as on a cluster
    via_script = s.read_users_bytes(asked, agents=named)
    assert via_transaction == via_script
    assert [u is None for u in via_transaction.values()] == [False, True, False, True, False]
    u1 = via_transaction["u1"]
    assert u1 is not None and [row[0] for row in u1.agents] == [b"focus", b"mood"]


def test_the_batch_read_of_many_users_checks_acknowledgements_past_one_socket_read(
    redis_backend: Backend,
) -> None:
    """1,000 users of 8 named agents queue 10,001 commands: their `+QUEUED` acknowledgements
    (~90 kB, checked as bytes: ADR 0046) span several socket reads, and the answer is still
    the read script's."""
    s = redis_backend.store
    assert isinstance(s, RedisStore)
    s.write_batch([user(f"m{i}", agent("mood", value=i)) for i in range(0, 1000, 7)], now_ms=T0)
    asked = [f"m{i}" for i in range(1000)]
    named = ["mood", "focus", *(f"unknown-{k}" for k in range(6))]
    via_transaction = s.read_users_bytes(asked, agents=named)
    assert s._transaction_reads
    s._transaction_reads = False
    assert via_transaction == s.read_users_bytes(asked, agents=named)
    assert sum(u is not None for u in via_transaction.values()) == len(range(0, 1000, 7))


def test_the_batch_read_raises_a_command_redis_refused_to_queue(redis_backend: Backend) -> None:
    """A command refused while queued (here a wrong arity) is not an acknowledgement: every
    reply is read (the connection stays usable) and the refusal is raised (ADR 0046)."""
    from connectors.store.redis_batch_read import _exec_reply

    s = redis_backend.store
    assert isinstance(s, RedisStore)
    pool = s._r.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command(
            [
                b"*1\r\n$5\r\nMULTI\r\n*2\r\n$6\r\nEXISTS\r\n$1\r\nk\r\n*1\r\n$3\r\nGET\r\n*1\r\n$4\r\nEXEC\r\n"
            ]
        )
        with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
            _exec_reply(conn, 2)
        conn.send_command("PING")
        assert conn.read_response() in (b"PONG", "PONG", True)
    finally:
        pool.release(conn)


def test_the_batch_read_raises_an_error_reply_inside_its_transaction(
    redis_backend: Backend,
) -> None:
    """A command that fails when the transaction runs (here `HMGET` of an agent key that is a
    string: `WRONGTYPE`) answers an error inside `EXEC`'s reply; the read fails with it, as the
    read script does, rather than answering the user (ADR 0050: the reply's parts are checked
    by their types in one pass, then one by one)."""
    s = redis_backend.store
    assert isinstance(s, RedisStore)
    s.write_batch([user("w1", agent("mood")), user("w2", agent("mood"))], now_ms=T0)
    s._r.set(f"{s._base('w2')}agent:focus", "not a hash")
    with pytest.raises(StoreError, match="WRONGTYPE"):
        s.read_users_bytes(["w1", "w2"], agents=["mood", "focus"])
    s._transaction_reads = False  # the script, as on a cluster
    with pytest.raises(StoreError, match="WRONGTYPE"):
        s.read_users_bytes(["w1", "w2"], agents=["mood", "focus"])
    s._transaction_reads = True
    assert s._transaction_reads
    assert s.read_users_bytes(["w1"], agents=["mood", "focus"])["w1"] is not None
