"""The store on a real Redis Cluster: every script stays in one slot, and a slip is caught.

The whole store contract already runs on the cluster (`tests/integration/test_store.py`, the
`redis-cluster` cases); these tests pin what only a cluster checks: the key layout puts each
user's keys in one slot, and a script whose keys span slots is refused (CROSSSLOT) rather than
silently run, so a key without the `{user_id}` hash tag fails the suite.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ClusterCrossSlotError

from connectors.exceptions import StoreError
from connectors.store import RedisStore, open_store
from connectors.store.ledger import LedgerEntry
from connectors.store.redis_client import cluster_nodes_of, delete_keys_with_prefix
from tests.integration.test_store import T0, _free_port, agent, user

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster(redis_cluster: Any, key_prefix: str) -> Any:
    store = open_store(redis_cluster.url, key_prefix=key_prefix)
    assert isinstance(store, RedisStore)
    raw = RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in cluster_nodes_of(redis_cluster.url)],
        decode_responses=True,
    )
    yield store, raw
    store.close()
    raw.close()


def _tip(user_id: str, tip_id: str) -> LedgerEntry:
    """A fallback-free advice tip of `user_id` with no agents, shown at T0."""
    return LedgerEntry(
        tip_id=tip_id,
        user_id=user_id,
        shown_at_ms=T0,
        text="Walk.",
        kind="advice",
        agents=[],
        fallback_reason=None,
        prompt_version=None,
        model=None,
        orchestrator_latency_ms=None,
    )


def test_every_key_of_a_user_lives_in_the_users_slot(cluster: Any, key_prefix: str) -> None:
    store, raw = cluster
    users = [f"user-{i}" for i in range(20)]
    store.write_batch(
        [user(u, agent("mood"), agent("tasks"), feedback={"shown": 1}, consents={}) for u in users],
        now_ms=T0,
    )
    store.record_tip(_tip("user-3", "t1"), retention_ms=10**12, now_ms=T0)
    store.delete_user("user-7", deleted_at_ms=T0 + 1)
    keys = list(raw.scan_iter(match=f"{key_prefix}:*", count=1000))
    masters = {n.name for n in raw.get_primaries()}
    assert len(masters) == 3
    per_user: dict[str, set[int]] = {}
    for key in keys:
        for u in users:
            if f"{{{u}}}" in key:
                per_user.setdefault(u, set()).add(raw.keyslot(key))
    assert set(per_user) == set(users)
    assert all(len(slots) == 1 for slots in per_user.values()), per_user
    # and the users really are spread over the three masters
    nodes = {raw.get_node_from_key(f"{key_prefix}:{{{u}}}:meta").name for u in users}
    assert nodes == masters


def test_a_script_across_two_users_slots_is_refused_with_crossslot(
    cluster: Any, key_prefix: str
) -> None:
    store, raw = cluster
    store.write_batch([user("alice", agent())], now_ms=T0)  # loads the scripts
    keys, args = store._write_call(user("alice", agent()), T0)
    keys[3] = store._tomb_key("bob")  # another user's tombstone: another slot
    assert raw.keyslot(keys[0]) != raw.keyslot(keys[3])
    node = raw.get_redis_connection(raw.get_node_from_key(keys[0]))
    with pytest.raises(ClusterCrossSlotError):  # the server's CROSSSLOT reply
        node.evalsha(store._sha("write"), len(keys), *keys, *args)


def test_a_key_without_the_hash_tag_fails_the_store_on_a_cluster(
    cluster: Any, monkeypatch: pytest.MonkeyPatch, key_prefix: str
) -> None:
    store, _ = cluster
    monkeypatch.setattr(store, "_base", lambda u: f"{key_prefix}:{u}:")  # the tag forgotten
    with pytest.raises(StoreError, match="don't hash to the same slot"):  # CROSSSLOT
        store.write_batch([user("carol", agent())], now_ms=T0)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://127.0.0.1:7000/1", "only database 0"),
        ("redis+cluster://127.0.0.1/0", "host:port"),
        ("redis+cluster://127.0.0.1:7000/0?replicas=2", "wait_replicas"),
    ],
)
def test_a_bad_cluster_url_is_refused_saying_why(url: str, says: str) -> None:
    with pytest.raises(StoreError, match=says):
        open_store(url)


def test_keys_of_a_prefix_are_deleted_on_every_master(cluster: Any, key_prefix: str) -> None:
    store, raw = cluster
    store.write_batch([user(f"user-{i}", agent()) for i in range(30)], now_ms=T0)
    store.stamp_ingest({"user-1": T0})
    before = list(raw.scan_iter(match=f"{key_prefix}:*", count=1000))
    assert len({raw.get_node_from_key(k).name for k in before}) == 3
    assert delete_keys_with_prefix(store_url(raw), f"{key_prefix}:") == len(before)
    assert list(raw.scan_iter(match=f"{key_prefix}:*", count=1000)) == []


def store_url(raw: Any) -> str:
    nodes = raw.get_primaries()
    return "redis+cluster://" + ",".join(f"{n.host}:{n.port}" for n in nodes) + "/0"


def test_a_cluster_that_does_not_answer_is_a_store_error_on_use_not_on_open() -> None:
    port = _free_port()
    store = open_store(f"redis+cluster://127.0.0.1:{port}/0", connect_timeout_s=0.5)
    with pytest.raises(StoreError, match=f"127.0.0.1:{port}"):
        store.ping()
    with pytest.raises(StoreError, match=f"127.0.0.1:{port}"):
        store.write_batch([user("dave", agent())], now_ms=T0)
    store.close()


def test_a_trip_of_tips_on_a_cluster_is_one_call_a_tip(cluster: Any) -> None:
    """`record_tips` records a whole trip in one script call on one server only (ADR 0046): on
    a cluster it sends one call a tip, so tips of users on different masters are recorded, and
    an unknown user's tip answers False on its own."""
    store, _ = cluster
    users = [f"user-{i}" for i in range(12)]
    store.write_batch([user(u, agent("mood")) for u in users], now_ms=T0)

    tips = [(_tip(u, f"t-{u}"), T0) for u in [*users, "nobody"]]
    assert store.record_tips(tips, retention_ms=10**12) == [True] * len(users) + [False]
    exported = store.ledger_export(since_ms=None, now_ms=T0, retention_ms=10**12)
    assert sorted(line["tip_id"] for line in exported) == sorted(f"t-{u}" for u in users)
