"""The write path of issue 13 (ADR 0029): fewer statements and commands per user, the same store.

A batch written in one `write_batch` equals the same writes one call each (users twice in a
batch, deletions, a tombstone newer than some writes, snippets dropped, the history guard);
the SQLite write runs a bounded number of statements per batch, not several per user; the
Redis write script makes fewer than 4 + 3 calls per agent (a user known to the store: 3 + 2 a
written agent and the snippets it sets; a new user: 2 + 1 an agent and its snippets) and many
users a call, the reflect script a handful of calls a batch (ADR 0055), each with the outcome
of its one-user-at-a-time form; `build_write`'s encoded text is what the store keeps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from connectors.store import open_store
from connectors.store.base import AgentWrite, UserWrite, dumps_compact
from connectors.store.redis_store import WRITE_USERS
from connectors.store.sqlite_store import SQLiteStore
from tests.integration.test_store import T0, agent, user

pytestmark = pytest.mark.usefixtures("services")


def _writes() -> list[list[UserWrite]]:
    """Batches covering each rule of `write_batch`."""
    first = [
        user(f"u{i}", agent("mood", et=T0 + i), agent("focus-area", et=T0 + i, snippet=None))
        for i in range(30)
    ]
    second = [
        user("u1", agent("mood", et=T0 + 500, value=2)),
        user("u2", deleted_at_ms=T0 + 1_000),
        user("u3", agent("mood", et=T0 - 5, value=9)),  # older than stored: ignored
        user("u4", agent("mood", et=T0 + 600, snippet=None)),  # snippet goes
        user("u1", agent("mood", et=T0 + 700, value=3), feedback={"n": 1}, consents={"a": True}),
        user("u2", agent("mood", et=T0 + 900)),  # before its tombstone: dropped
        user("u5", agent("mood", et=T0 + 800), history={"s:0": 5}),
        user("u6", agent("mood", et=T0 + 800), removed_agents={"focus-area"}),
    ]
    third = [
        user("u5", agent("mood", et=T0 + 900, value=7), history={"s:0": 9}),  # refused
        user("u2", agent("mood", et=T0 + 2_000, value=5)),  # after the tombstone: back
        user("u7", agent("a-new", et=T0 + 5)),
    ]
    return [first, second, third]


def _contents(store: Any, users: list[str]) -> dict[str, Any]:
    out = {}
    for u in users:
        got = store.read_user(u, now_ms=T0)
        out[u] = (got, store.tombstone(u), store.user_freshness(u))
    return out


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_batch_equals_its_writes_one_by_one(
    kind: str, tmp_path: Path, key_prefix: str, services: Any
) -> None:
    users = [f"u{i}" for i in range(32)]
    results = []
    for mode in ("batch", "single"):
        prefix = f"{key_prefix}{mode}"
        url = (
            f"sqlite:///{tmp_path / mode}.db" if kind == "sqlite" else services.redis_url
        )  # fmt: skip
        store = open_store(url, key_prefix=prefix)
        refused: list[str] = []
        try:
            for batch in _writes():
                if mode == "batch":
                    refused += store.write_batch(batch, now_ms=T0)
                else:
                    for w in batch:
                        refused += store.write_batch([w], now_ms=T0)
            results.append((_contents(store, users), sorted(store.user_ids()), refused))
        finally:
            store.close()
            if kind == "redis":
                from oo_features.services import delete_keys

                delete_keys(services.redis_url, prefix + ":")
    assert results[0] == results[1]
    assert results[0][2] == ["u5"]


def test_sqlite_runs_a_few_statements_per_batch_not_per_user(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}", key_prefix="t")
    assert isinstance(store, SQLiteStore)
    statements: list[str] = []
    try:
        store.write_batch(_writes()[0], now_ms=T0)  # a first write creates the users
        store._conn.set_trace_callback(statements.append)
        batch = [
            user(f"u{i}", agent("mood", et=T0 + 100 + i), agent("focus-area", et=T0 + 100 + i))
            for i in range(30)
        ]
        store.write_batch(batch, now_ms=T0)
    finally:
        store._conn.set_trace_callback(None)
        store.close()
    # executemany traces each row; count statements by their text instead.
    distinct_runs = len({s.split(" ")[0] + s[:60] for s in statements})
    assert distinct_runs <= 15, statements[:20]
    # Before ADR 0029: a tombstone read and an executemany per user (> 4 per user).
    per_user_reads = [s for s in statements if "tombstones WHERE user_id = " in s]
    assert not per_user_reads, per_user_reads[:3]


def _calls(raw: Any) -> dict[str, int]:
    stats = raw.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def _inner(before: dict[str, int], after: dict[str, int]) -> int:
    return sum(
        after.get(c, 0) - before.get(c, 0)
        for c in ("get", "set", "del", "hget", "hmget", "hset", "hsetnx", "sadd", "srem", "exists")
    )


def test_redis_write_script_makes_fewer_calls_for_known_and_new_users(
    key_prefix: str, services: Any
) -> None:
    import redis

    raw = redis.Redis.from_url(services.redis_url, decode_responses=True)
    store = open_store(services.redis_url, key_prefix=key_prefix, freshness=False)
    try:
        batch = [
            user(f"u{i}", agent("mood", et=T0 + i), agent("focus-area", et=T0 + i, snippet=None))
            for i in range(50)
        ]
        store.write_batch(batch[:1], now_ms=T0)  # scripts loaded
        before = _calls(raw)
        store.write_batch(batch[1:], now_ms=T0)
        new = _inner(before, _calls(raw))
        again = [
            user(f"u{i}", agent("mood", et=T0 + 100 + i), agent("focus-area", et=T0 + 100 + i))
            for i in range(50)
        ]
        before = _calls(raw)
        store.write_batch(again, now_ms=T0)
        known = _inner(before, _calls(raw))
        evalsha = _calls(raw)["evalsha"] - before["evalsha"]
    finally:
        store.close()
        raw.close()
    # 49 new users of 2 agents, one snippet: GET, HMGET, 2 HSET, SET, HSET, SADD = 7 each
    # (4 + 3 * 2 = 10 before ADR 0055).
    assert new <= 49 * 7, new
    # 50 known users, 2 agents with snippets: GET, HMGET, 2 * (HGET, HSET, SET), HSET, SADD.
    assert known <= 50 * 10, known
    assert evalsha == -(-50 // WRITE_USERS), evalsha


def test_redis_reflect_script_makes_a_few_calls_a_batch(key_prefix: str, services: Any) -> None:
    import redis

    raw = redis.Redis.from_url(services.redis_url, decode_responses=True)
    store = open_store(services.redis_url, key_prefix=key_prefix)
    try:
        batch = [user(f"u{i}", agent("mood", et=T0 + i)) for i in range(40)]
        store.write_batch(batch, now_ms=T0)
        before = _calls(raw)
        later = [user(f"u{i}", agent("mood", et=T0 + 1_000 + i)) for i in range(40)]
        store.write_batch(later, now_ms=T0)
        after = _calls(raw)
    finally:
        store.close()
        raw.close()
    zcalls = sum(after.get(c, 0) - before.get(c, 0) for c in ("zscore", "zmscore", "zadd", "zrem"))
    # 1 ZADD of the users index, then 2 ZMSCOREs and at most 4 writes (3 a user before).
    assert zcalls <= 1 + 6, zcalls


def _freshness(raw: Any, prefix: str) -> list[Any]:
    keys = [f"{prefix}:{{{prefix}~fresh}}:{name}" for name in ("newest", "pending", "reflected")]
    return [raw.zrange(k, 0, -1, withscores=True) for k in keys]


def test_the_reflect_script_in_bulk_equals_it_user_by_user(key_prefix: str, services: Any) -> None:
    """Distinct users none deleted take the bulk path of `reflect.lua`; a deletion in the
    batch takes the loop. Both leave the same stamps, whatever was stamped before."""
    import redis

    raw = redis.Redis.from_url(services.redis_url, decode_responses=True)
    got = []
    try:
        for mode in ("bulk", "loop"):
            prefix = f"{key_prefix}{mode}"
            store = open_store(services.redis_url, key_prefix=prefix)
            try:
                # Stamped newer than, as new as, older than the write, or not at all; some
                # reflected before, newer or older than this write.
                store.stamp_ingest(
                    {f"u{i}": T0 + 10 * (i % 4) for i in range(24) if i % 5},
                    oldest={f"u{i}": T0 - 3 for i in range(24)},
                )
                store.write_batch(
                    [
                        user(f"u{i}", agent(et=T0), newest_ingest_ms=T0 + 15)
                        for i in range(0, 24, 3)
                    ],
                    now_ms=T0,
                )
                writes = [
                    user(f"u{i}", agent(et=T0 + 1), newest_ingest_ms=T0 + 10) for i in range(24)
                ]
                if mode == "loop":
                    writes.append(user("gone", deleted_at_ms=T0))
                store.write_batch(writes, now_ms=T0)
            finally:
                store.close()
            got.append(_freshness(raw, prefix))
    finally:
        from oo_features.services import delete_keys

        for mode in ("bulk", "loop"):
            delete_keys(services.redis_url, f"{key_prefix}{mode}:")
        raw.close()
    assert got[0] == got[1]
    assert got[0][1], "some users are still pending"


def test_a_batch_of_several_write_calls_answers_each_user(key_prefix: str, services: Any) -> None:
    """Tombstones and the history guard met at the edges of the `WRITE_USERS`-user calls are
    reported for the right users: refused ones returned, deleted ones kept out of the users
    index."""
    n = 2 * WRITE_USERS + 3
    edges = {0, WRITE_USERS - 1, WRITE_USERS, n - 1}
    store = open_store(services.redis_url, key_prefix=key_prefix)
    try:
        store.write_batch(
            [user(f"u{i}", agent(et=T0), history={"s:0": 5}) for i in range(n)], now_ms=T0
        )
        for i in edges:
            store.delete_user(f"u{i}", deleted_at_ms=T0 + 10)
        writes = []
        for i in range(n):
            if i in edges:  # before the tombstone: dropped
                writes.append(user(f"u{i}", agent(et=T0 + 5), history={"s:0": 5}))
            elif i - 1 in edges or i + 1 in edges:  # starts later: refused
                writes.append(user(f"u{i}", agent(et=T0 + 20), history={"s:0": 9}))
            else:
                writes.append(user(f"u{i}", agent(et=T0 + 20, value=2), history={"s:0": 5}))
        refused = store.write_batch(writes, now_ms=T0)
        expected = sorted(
            f"u{i}" for i in range(n) if i not in edges and (i - 1 in edges or i + 1 in edges)
        )
        assert sorted(refused) == expected
        assert set(store.user_ids()) == {f"u{i}" for i in range(n)} - {f"u{i}" for i in edges}
        for i in range(n):
            got = store.read_user(f"u{i}", now_ms=T0)
            if i in edges:
                assert got is None
            else:
                assert got is not None
                value = 1 if f"u{i}" in refused else 2
                assert got.agents["mood"].params["p"]["value"] == value
    finally:
        store.close()


def test_the_store_keeps_build_writes_text(tmp_path: Path) -> None:
    values: list[Any] = [1.0, 1e-7, 10**30, "é\u2028\"'", [True, None, {"k": [1.5]}], {"a": {}}]
    params = {f"p{i}": {"value": v, "source": "inferred"} for i, v in enumerate(values)}
    text = dumps_compact(params)
    assert text == json.dumps(params, separators=(",", ":"), ensure_ascii=False)
    write = AgentWrite("mood", "1", params, {"x": values}, None, 60, T0, T0, T0, text, None)
    assert write.params_text() is text and json.loads(write.extras_text()) == {"x": values}
    store = open_store(f"sqlite:///{tmp_path / 't.db'}", key_prefix="t")
    try:
        store.write_batch([UserWrite("u1", agents={"mood": write}, newest_event_ms=T0)])
        got = store.read_users_json(["u1"], now_ms=T0)["u1"]
        assert got is not None and got.agents["mood"].params_json == text
    finally:
        store.close()
