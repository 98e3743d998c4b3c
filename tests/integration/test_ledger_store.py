"""The tip ledger's store contract on every backend (SQLite file, real Redis, and real Redis
with the ledger on a Redis of its own: ADR 0052): record, join reactions, export; deletion
removes a user's entries at once; consent revocation removes the revoked agents' values;
retention."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from connectors.exceptions import StoreError
from connectors.store import UserWrite, open_store
from connectors.store.base import dumps_compact
from connectors.store.ledger import DAY_MS, LedgerAgent, LedgerEntry
from connectors.store.split_ledger import SplitLedgerStore
from tests.integration.test_store import T0, Backend, _open, agent, user

RETENTION = 30 * DAY_MS


@contextlib.contextmanager
def _open_ledger(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, key_prefix: str
) -> Iterator[Backend]:
    """`_open` of the store tests, plus `redis-split`: features on the services' Redis, the
    ledger on a Redis of its own (`raw` is a client of the ledger's, where its keys are)."""
    if kind != "redis-split":
        with _open(kind, request, tmp_path, key_prefix) as b:
            yield b
        return
    ledger_url = request.getfixturevalue("ledger_redis")
    store = open_store(
        request.getfixturevalue("services").redis_url, key_prefix=key_prefix, ledger_url=ledger_url
    )
    assert isinstance(store, SplitLedgerStore)
    raw = redis.Redis.from_url(ledger_url, decode_responses=True)
    try:
        yield Backend(kind, store, key_prefix, raw)
    finally:
        raw.close()
        store.close()


REDIS_KINDS = ["redis", "redis-split"]


@pytest.fixture(params=["sqlite", *REDIS_KINDS])
def backend(request: pytest.FixtureRequest, tmp_path: Path, key_prefix: str):  # type: ignore[no-untyped-def]
    with _open_ledger(request.param, request, tmp_path, key_prefix) as b:
        yield b


def entry(
    tip_id: str,
    user_id: str = "u1",
    *,
    at: int = T0,
    fallback: str | None = None,
    agents: tuple[str, ...] = ("mood", "focus"),
) -> LedgerEntry:
    return LedgerEntry(
        tip_id=tip_id,
        user_id=user_id,
        shown_at_ms=at,
        text="Close the report." if fallback is None else f"snippet of {agents[0]}",
        kind="todo" if fallback is None else "advice",
        agents=[
            LedgerAgent(a, "1.0.0", {"p": {"value": 0.25, "source": "inferred"}}, f"snippet of {a}")
            for a in agents
        ],
        fallback_reason=fallback,
        prompt_version="v4-orchestrator",
        model="tip-generator",
        orchestrator_latency_ms=12.5,
    )


def seed_users(b: Backend, *user_ids: str) -> None:
    b.store.write_batch([user(u, agent("mood"), agent("focus")) for u in user_ids], now_ms=T0)


def export(b: Backend, *, since: int | None = None, now: int = T0 + 1000) -> list[dict]:
    return list(b.store.ledger_export(since_ms=since, now_ms=now, retention_ms=RETENTION))


def test_a_tip_and_its_reactions_are_exported_as_recorded(backend: Backend) -> None:
    seed_users(backend, "u1")
    assert backend.store.record_tip(entry("t1"), retention_ms=RETENTION, now_ms=T0)
    assert backend.store.record_reaction(
        "u1", "t1", reaction="like", reaction_id="r1", at_ms=T0 + 5
    )
    assert backend.store.record_reaction(
        "u1", "t1", reaction="done", reaction_id="r2", at_ms=T0 + 9
    )
    # A reaction to a tip the ledger does not have is not joined anywhere.
    assert not backend.store.record_reaction(
        "u1", "t-unknown", reaction="like", reaction_id="r3", at_ms=T0
    )

    [line] = export(backend)

    assert line["tip_id"] == "t1" and line["user_id"] == "u1"
    assert (line["text"], line["kind"], line["fallback"]) == ("Close the report.", "todo", False)
    assert line["shown_at_ms"] == T0 and line["shown_at"].endswith("Z")
    assert (line["prompt_version"], line["model"]) == ("v4-orchestrator", "tip-generator")
    assert line["orchestrator_latency_ms"] == 12.5
    assert line["agents"] == [
        {
            "agent_id": a,
            "version": "1.0.0",
            "params": {"p": {"value": 0.25, "source": "inferred"}},
            "snippet": f"snippet of {a}",
        }
        for a in ("mood", "focus")
    ]
    assert [(r["reaction"], r["at_ms"]) for r in line["reactions"]] == [
        ("like", T0 + 5),
        ("done", T0 + 9),
    ]


def test_since_and_retention_bound_the_export(backend: Backend) -> None:
    seed_users(backend, "u1")
    old = T0 - RETENTION - 1
    for tip, at in (("t-a", T0 - 10), ("t-b", T0), ("t-old", old)):
        backend.store.record_tip(entry(tip, at=at), retention_ms=RETENTION, now_ms=T0)
    if backend.raw is not None:  # an old tip never shortens the ledger's life
        ttl = backend.raw.pttl(f"{backend.prefix}:{{u1}}:ledger")
        assert RETENTION - 60_000 < ttl <= RETENTION

    assert [line["tip_id"] for line in export(backend)] == ["t-a", "t-b"]
    assert [line["tip_id"] for line in export(backend, since=T0)] == ["t-b"]
    # Later, the first tip has outlived the retention: it is not exported, and the next
    # record trims it.
    later = T0 - 10 + RETENTION + 1
    assert [line["tip_id"] for line in export(backend, now=later)] == ["t-b"]
    backend.store.record_tip(entry("t-c", at=later), retention_ms=RETENTION, now_ms=later)
    assert [line["tip_id"] for line in export(backend, now=later)] == ["t-b", "t-c"]
    if backend.raw is not None:
        fields = backend.raw.hkeys(f"{backend.prefix}:{{u1}}:ledger")
        assert not [f for f in fields if ":t-a" in f]


def test_deleting_a_user_removes_their_entries_at_once_and_refuses_late_ones(
    backend: Backend,
) -> None:
    seed_users(backend, "u1", "u2")
    for u in ("u1", "u2"):
        backend.store.record_tip(entry(f"t-{u}", u), retention_ms=RETENTION, now_ms=T0)

    backend.store.delete_user("u1", deleted_at_ms=T0 + 100)

    assert [line["user_id"] for line in export(backend)] == ["u2"]
    # A background write of a tip shown before the deletion arrives late: refused.
    assert not backend.store.record_tip(
        entry("t-late", "u1", at=T0 + 50), retention_ms=RETENTION, now_ms=T0
    )
    assert [line["user_id"] for line in export(backend)] == ["u2"]
    if backend.raw is not None:  # no ledger key of the deleted user is left behind
        assert not [k for k in backend.keys() if "{u1}" in k and "ledger" in k]  # noqa: SIM118


def test_a_deletion_through_the_flow_removes_the_entries_too(backend: Backend) -> None:
    seed_users(backend, "u1")
    backend.store.record_tip(entry("t1"), retention_ms=RETENTION, now_ms=T0)

    backend.store.write_batch([UserWrite(user_id="u1", deleted_at_ms=T0 + 100)], now_ms=T0 + 100)

    assert export(backend) == []


def test_revoking_a_consent_removes_that_agents_values_from_every_entry(backend: Backend) -> None:
    seed_users(backend, "u1")
    backend.store.record_tip(entry("t1"), retention_ms=RETENTION, now_ms=T0)
    backend.store.record_tip(
        entry("t2", at=T0 + 1, fallback="timeout", agents=("mood",)),
        retention_ms=RETENTION,
        now_ms=T0,
    )

    backend.store.write_batch(
        [UserWrite(user_id="u1", removed_agents={"mood"}, consents={"mood": False})], now_ms=T0 + 2
    )

    t1, t2 = export(backend)
    assert t1["agents"][0] == {
        "agent_id": "mood",
        "version": "1.0.0",
        "params": None,
        "snippet": None,
        "removed": "consent",
    }
    assert t1["agents"][1]["snippet"] == "snippet of focus"  # the other agent keeps its values
    assert t1["text"] == "Close the report."
    # A fallback tip's text is the revoked agent's snippet verbatim: it goes too.
    assert t2["text"] is None and t2["fallback_reason"] == "timeout"
    assert t2["agents"][0]["removed"] == "consent"


def test_an_unknown_user_gets_no_entry(backend: Backend) -> None:
    assert not backend.store.record_tip(entry("t1", "nobody"), retention_ms=RETENTION, now_ms=T0)
    assert export(backend) == []


@pytest.mark.parametrize("kind", REDIS_KINDS)
def test_tips_recorded_in_one_round_trip_leave_what_one_by_one_leaves(
    request: pytest.FixtureRequest, tmp_path: Path, key_prefix: str, kind: str
) -> None:
    """Redis `record_tips` (the ledger worker's round trip, ADR 0033): the same export and
    the same keys as `record_tip` one by one; an old, a deleted and an unknown user's tips
    answer False, as they do one by one."""
    tips = [
        (entry("t1"), T0),
        (entry("t2", at=T0 + 1), T0 + 1),
        (entry("t-old", at=T0 - RETENTION - 1), T0),
        (entry("t3", "u2"), T0),
        (entry("t4", "gone"), T0 + 200),
        (entry("t5", "nobody"), T0),
    ]
    dumps = []
    for many in (False, True):
        with _open_ledger(kind, request, tmp_path, f"{key_prefix}-{many}") as b:
            seed_users(b, "u1", "u2", "gone")
            b.store.delete_user("gone", deleted_at_ms=T0 + 100)
            if many:
                got = b.store.record_tips(tips, retention_ms=RETENTION)
            else:
                got = [b.store.record_tip(e, retention_ms=RETENTION, now_ms=n) for e, n in tips]
            assert got == [True, True, False, True, False, False]
            assert b.raw is not None
            dumps.append(
                (
                    export(b, now=T0 + 1000),
                    {
                        k.removeprefix(b.prefix): sorted(b.raw.hgetall(k).items())
                        for k in b.keys()  # noqa: SIM118
                        if k.endswith(":ledger")
                    },
                )
            )
    assert dumps[0] == dumps[1]
    assert [line["tip_id"] for line in dumps[1][0]] == ["t1", "t2", "t3"]


@pytest.mark.parametrize("kind", REDIS_KINDS)
def test_tips_recorded_together_survive_a_server_that_lost_its_scripts(
    request: pytest.FixtureRequest, tmp_path: Path, key_prefix: str, kind: str
) -> None:
    """Redis `record_tips` sends its calls in one `MULTI`/`EXEC` (ADR 0041): after a
    `SCRIPT FLUSH` (a restarted server) the refused calls are sent again, and every tip is
    recorded once."""
    with _open_ledger(kind, request, tmp_path, key_prefix) as b:
        seed_users(b, "u1", "u2")
        assert b.raw is not None
        b.raw.script_flush()
        tips = [(entry("t1"), T0), (entry("t2", "u2"), T0), (entry("t3", "nobody"), T0)]
        assert b.store.record_tips(tips, retention_ms=RETENTION) == [True, True, False]
        assert [line["tip_id"] for line in export(b)] == ["t1", "t2"]


@pytest.mark.parametrize("kind", REDIS_KINDS)
def test_a_tip_that_fails_alone_costs_the_others_of_its_trip_nothing(
    request: pytest.FixtureRequest, tmp_path: Path, key_prefix: str, kind: str
) -> None:
    """Redis `record_tips` records a whole trip in one script call, each tip in its own pcall
    (ADR 0046): a tip whose ledger key holds the wrong type answers its own `StoreError`, and
    the tips before and after it are recorded."""
    with _open_ledger(kind, request, tmp_path, key_prefix) as b:
        seed_users(b, "u1", "u2", "u3")
        assert b.raw is not None
        bad = f"{b.prefix}:{{u2}}:ledger"
        b.raw.set(bad, "not a hash")
        tips = [(entry("t1"), T0), (entry("t2", "u2"), T0), (entry("t3", "u3"), T0)]
        got = b.store.record_tips(tips, retention_ms=RETENTION)
        assert got[0] is True and got[2] is True
        assert isinstance(got[1], StoreError) and "WRONGTYPE" in str(got[1])
        b.raw.delete(bad)  # the export reads every ledger
        assert [line["tip_id"] for line in export(b)] == ["t1", "t3"]


def test_stored_params_are_spliced_as_the_store_holds_them(backend: Backend) -> None:
    """A read user's agents carry their stored params text (`StoredAgent.params_json`), which
    the ledger splices instead of encoding the params again (ADR 0046): the stored values and
    the export are those of the params encoded anew."""
    seed_users(backend, "u1")
    stored = backend.store.read_user("u1", now_ms=T0)
    assert stored is not None
    mood = stored.agents["mood"]
    assert mood.params_json == dumps_compact(mood.params)
    spliced = LedgerEntry(
        tip_id="t1",
        user_id="u1",
        shown_at_ms=T0,
        text="Walk.",
        kind="advice",
        agents=[LedgerAgent("mood", mood.version, mood.params, "s", params_json=mood.params_json)],
        fallback_reason="timeout",
        prompt_version=None,
        model=None,
        orchestrator_latency_ms=None,
    )
    assert spliced.encoded() == (
        dumps_compact(spliced.header()),
        [(aid, dumps_compact(v)) for aid, v in spliced.values().items()],
    )
    assert backend.store.record_tip(spliced, retention_ms=RETENTION, now_ms=T0)
    [line] = export(backend)
    assert line["agents"][0]["params"] == mood.params and line["text"] == "Walk."


def test_a_ledger_of_its_own_leaves_the_feature_store_no_ledger_key(
    request: pytest.FixtureRequest, tmp_path: Path, key_prefix: str, redis_client: Any
) -> None:
    """ADR 0052: with `ledger_url`, tips, reactions, deletions and revocations write only to
    the ledger's Redis: the feature store's Redis gets no ledger key (no write, so no fsync
    that its readers wait behind), and the ledger's Redis no feature."""
    with _open_ledger("redis-split", request, tmp_path, key_prefix) as b:
        seed_users(b, "u1", "u2")
        b.store.record_tip(entry("t1"), retention_ms=RETENTION, now_ms=T0)
        assert b.store.record_reaction("u1", "t1", reaction="like", reaction_id="r1", at_ms=T0 + 1)
        b.store.write_batch([UserWrite(user_id="u2", removed_agents={"mood"})], now_ms=T0 + 2)
        features_keys = {k.decode() for k in redis_client.scan_iter(match=f"{key_prefix}:*")}
        assert features_keys and not [k for k in features_keys if "ledger" in k]
        assert {k for k in b.keys() if ":{u1}:" in k} == {  # noqa: SIM118
            f"{key_prefix}:{{u1}}:{name}" for name in ("ledger", "ledger_at", "keys")
        }
        assert [line["reactions"][0]["reaction"] for line in export(b)] == ["like"]


def test_a_ledger_of_its_own_is_for_redis_only(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"a separate ledger store is for Redis"):
        open_store(f"sqlite:///{tmp_path}/f.db", ledger_url="redis://127.0.0.1:1/0")


def test_a_ledger_server_that_is_down_costs_reads_and_plain_writes_nothing(
    request: pytest.FixtureRequest, tmp_path: Path, key_prefix: str
) -> None:
    """ADR 0052's failure behaviour, with the ledger's Redis stopped (SIGSTOP: it accepts
    connections and never answers): reads and writes without a deletion or revocation go on;
    a tip's record and a deletion raise `StoreError` (the caller counts or retries); once the
    server is back, the same deletion succeeds and the user's entries are gone."""
    from tests.outage import PrivateRedis

    with PrivateRedis(tmp_path / "ledger") as ledger:
        store = open_store(
            request.getfixturevalue("services").redis_url,
            key_prefix=key_prefix,
            ledger_url=ledger.url,
            socket_timeout_s=1.0,
            connect_timeout_s=1.0,
            client_retries=0,
        )
        b = Backend("redis-split", store, key_prefix, None)
        try:
            seed_users(b, "u1", "u2")
            assert store.record_tip(entry("t1"), retention_ms=RETENTION, now_ms=T0)
            ledger.pause()
            store.ping()
            assert store.read_user("u2", now_ms=T0) is not None
            store.write_batch([user("u2", agent("mood", et=T0 + 1, value=0.5))], now_ms=T0 + 1)
            with pytest.raises(StoreError):
                store.record_tip(entry("t2"), retention_ms=RETENTION, now_ms=T0)
            with pytest.raises(StoreError):
                store.delete_user("u1", deleted_at_ms=T0 + 100)
            ledger.resume()
            store.delete_user("u1", deleted_at_ms=T0 + 100)
            assert export(b) == []
            assert not store.record_tip(entry("t3", at=T0 + 50), retention_ms=RETENTION, now_ms=T0)
        finally:
            store.close()
