"""The store's freshness bookkeeping (issue: freshness SLA), on both backends.

Ingestion stamps (`stamp_ingest`), what the flow reflects (`write_batch`), lag samples, the
summary behind `GET /v1/freshness`, and deletion leaving no freshness trace. The backends and
helpers are `tests/integration/test_store.py`'s.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from connectors.store import RedisStore, UserWrite
from connectors.store.base import (
    LAG_SAMPLES_PER_WRITE,
    LAG_SAMPLES_READ,
    LagStats,
    nearest_rank,
)
from connectors.store.redis_freshness import LAG_ENTRIES_PER_STEP
from tests.integration.test_store import T0, Backend, agent, user
from tests.integration.test_store import backend as backend  # a fixture
from tests.integration.test_store import redis_backend as redis_backend  # a fixture

SLA = {"fast": 30_000, "slow": 300_000}
HOUR = 3_600_000


def reflect(user_id: str, ingest_ms: int, *, computed_at_ms: int | None = None) -> UserWrite:
    """What the flow writes once it folded the user's events up to `ingest_ms`."""
    a = agent("fast", et=ingest_ms - 5)
    a.ingest_time_ms = ingest_ms
    a.computed_at_ms = ingest_ms + 20 if computed_at_ms is None else computed_at_ms
    return user(user_id, a, newest_ingest_ms=ingest_ms)


def summary(backend: Backend, now_ms: int, **kw: Any) -> Any:
    kw.setdefault("window_ms", HOUR)
    kw.setdefault("sla_ms_by_agent", SLA)
    return backend.store.freshness_summary(now_ms=now_ms, **kw)


def test_stamp_then_reflect(backend: Backend) -> None:
    s = backend.store
    assert s.user_freshness("u1") is None
    s.stamp_ingest({"u1": T0 + 300}, oldest={"u1": T0 + 100})
    got = s.user_freshness("u1")
    assert got is not None
    assert (got.newest_ingest_ms, got.reflected_ingest_ms, got.pending_since_ms) == (
        T0 + 300,
        None,
        T0 + 100,
    )
    assert got.staleness_ms(T0 + 10_100) == 10_000

    # A later stamp neither moves the newest back nor the pending time forward.
    s.stamp_ingest({"u1": T0 + 200})
    s.stamp_ingest({"u1": T0 + 500})
    got = s.user_freshness("u1")
    assert got is not None
    assert (got.newest_ingest_ms, got.pending_since_ms) == (T0 + 500, T0 + 100)

    # The flow reflects part of it: still pending, but only since after what it reflected.
    s.write_batch([reflect("u1", T0 + 300)], now_ms=T0)
    got = s.user_freshness("u1")
    assert got is not None
    assert (got.reflected_ingest_ms, got.pending_since_ms) == (T0 + 300, T0 + 301)

    # Everything reflected: up to date, staleness 0 however late it is.
    s.write_batch([reflect("u1", T0 + 500)], now_ms=T0)
    got = s.user_freshness("u1")
    assert got is not None
    assert (got.newest_ingest_ms, got.reflected_ingest_ms, got.pending_since_ms) == (
        T0 + 500,
        T0 + 500,
        None,
    )
    assert got.staleness_ms(T0 + 10 * HOUR) == 0


def test_a_stamp_after_the_flow_already_wrote_is_not_pending(backend: Backend) -> None:
    """The stamper may lag behind the flow: an event already reflected is never pending."""
    s = backend.store
    s.write_batch([reflect("u1", T0 + 500)], now_ms=T0)
    s.stamp_ingest({"u1": T0 + 500}, oldest={"u1": T0 + 400})
    got = s.user_freshness("u1")
    assert got is not None and got.pending_since_ms is None
    s.stamp_ingest({"u1": T0 + 900}, oldest={"u1": T0 + 450})
    got = s.user_freshness("u1")
    assert got is not None
    assert got.pending_since_ms == T0 + 501  # the oldest unreflected is after T0 + 500


def test_summary_counts_active_stale_and_worst(backend: Backend) -> None:
    s = backend.store
    now = T0 + 2 * HOUR
    s.stamp_ingest(
        {
            "fresh": now - 1_000,  # pending for 1 s: within every SLA
            "late": now - 60_000,  # pending for 60 s: beyond "fast" (30 s), within "slow"
            "later": now - 400_000,  # beyond both
            "done": now - 10_000,  # reflected below: up to date
            "idle": now - 3 * HOUR,  # outside the window: not active
        }
    )
    s.write_batch([reflect("done", now - 10_000), reflect("idle", now - 3 * HOUR)], now_ms=now)
    got = summary(backend, now)
    assert got.active_users == 4
    assert got.pending_users == 3
    assert got.stale_users == {"fast": 2, "slow": 1}
    assert got.worst == [("later", 400_000), ("late", 60_000), ("fresh", 1_000)]
    assert summary(backend, now, worst_n=1).worst == [("later", 400_000)]
    assert summary(backend, now, worst_n=0).worst == []

    # Idleness is not staleness: an up-to-date user stays at 0 however long nothing happens.
    much_later = now + 10 * HOUR
    got = summary(backend, much_later)
    idle = s.user_freshness("idle")
    assert idle is not None and idle.staleness_ms(much_later) == 0
    assert ("idle", 0) not in got.worst


def test_pending_users_idle_for_the_whole_window_are_forgotten(backend: Backend) -> None:
    """An event the flow never reflects (e.g. a duplicate it dropped) must not count forever."""
    s = backend.store
    s.stamp_ingest({"lost": T0})
    assert summary(backend, T0 + 60_000).stale_users["fast"] == 1
    later = T0 + HOUR + 1
    got = summary(backend, later)
    assert (got.active_users, got.pending_users, got.stale_users["fast"]) == (0, 0, 0)
    lost = s.user_freshness("lost")
    assert lost is not None and lost.pending_since_ms is None


def test_lag_percentiles(backend: Backend) -> None:
    s = backend.store
    now = int(time.time() * 1000)
    lags = list(range(1, 201))  # 200 writes, lag 1..200 ms
    writes = [
        reflect(f"u{i}", now - 1_000, computed_at_ms=now - 1_000 + lag)
        for i, lag in enumerate(lags)
    ]
    s.write_batch(writes[:100], now_ms=now)
    s.write_batch(writes[100:], now_ms=now)
    got = summary(backend, now + 1_000)
    fast = got.lag["fast"]
    assert fast.samples == 200
    assert (fast.p50_ms, fast.p99_ms) == (nearest_rank(lags, 0.5), nearest_rank(lags, 0.99))
    assert (fast.p50_ms, fast.p99_ms) == (100, 198)
    assert got.lag["slow"].samples == 0 and got.lag["slow"].p50_ms is None

    # A big batch keeps an evenly spread sample of its lags.
    big = [reflect(f"b{i}", now, computed_at_ms=now + 1_000) for i in range(1000)]
    s.write_batch(big, now_ms=now)
    assert summary(backend, now + 1_000).lag["fast"].samples == 200 + LAG_SAMPLES_PER_WRITE


def test_deletion_leaves_no_freshness_trace(backend: Backend) -> None:
    s = backend.store
    s.stamp_ingest({"gone": T0 + 10, "kept": T0 + 10})
    s.write_batch([reflect("gone", T0 + 5), reflect("kept", T0 + 10)], now_ms=T0)
    s.delete_user("gone", deleted_at_ms=T0 + 100)
    assert s.user_freshness("gone") is None
    assert s.user_freshness("kept") is not None
    # A write older than the tombstone is ignored and leaves no trace either.
    s.write_batch([reflect("gone", T0 + 50)], now_ms=T0)
    assert s.user_freshness("gone") is None
    # The flow's own deletion (inside a batch) too.
    s.write_batch([UserWrite(user_id="kept", deleted_at_ms=T0 + 100)], now_ms=T0)
    assert s.user_freshness("kept") is None
    if isinstance(s, RedisStore):
        assert backend.raw is not None
        present = backend.keys()
        for key in present:
            if "~fresh" in key and backend.raw.type(key) == "zset":
                assert backend.raw.zrange(key, 0, -1) == [], key


def test_summary_holds_redis_only_in_short_steps(
    redis_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADR 0040: one script call for the counts, then the lag samples in XREVRANGE steps of
    bounded length; no step sorts or parses samples inside Redis."""
    backend = redis_backend
    s = backend.store
    assert isinstance(s, RedisStore)
    s.stamp_ingest({"u1": T0})
    summary(backend, T0)  # loads the script
    sent: list[tuple[Any, ...]] = []
    original = s._r.execute_command

    def recording(*args: Any, **kwargs: Any) -> Any:
        sent.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(s._r, "execute_command", recording)
    summary(backend, T0)
    monkeypatch.undo()
    names = [str(a[0]).upper() for a in sent]
    assert names[0] == "EVALSHA" and names.count("EVALSHA") == 1
    assert names[1:] == ["XREVRANGE"] * len(SLA)
    for args in sent[1:]:
        assert int(args[-1]) <= LAG_ENTRIES_PER_STEP  # COUNT


def test_stamp_is_one_round_trip(redis_backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    s = redis_backend.store
    assert isinstance(s, RedisStore)
    s.stamp_ingest({"u1": T0})
    conn_class = s._r.connection_pool.connection_class
    original = conn_class.send_packed_command
    calls: list[int] = []

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(conn_class, "send_packed_command", counting)
    s.stamp_ingest({f"u{i}": T0 + i for i in range(500)})
    monkeypatch.undo()
    assert len(calls) == 1


@pytest.mark.parametrize(
    "sizes",
    [
        [LAG_SAMPLES_PER_WRITE] * 40,  # full entries: the first step suffices
        [1] * 5_200,  # one sample an entry: several steps, the last one capped
        [(i * 37) % LAG_SAMPLES_PER_WRITE + 1 for i in range(120)],  # mixed; crosses mid-entry
        [3] * 10,  # fewer samples than kept: all of them
    ],
    ids=["full", "single", "mixed", "few"],
)
def test_lag_steps_read_what_one_script_read(redis_backend: Backend, sizes: list[int]) -> None:
    """The lag percentiles read in steps are those of the rule the summary always had: whole
    stream entries in the window, newest first, until at least `LAG_SAMPLES_READ` samples."""
    s = redis_backend.store
    assert isinstance(s, RedisStore)
    raw = redis_backend.raw
    key = s._lag_prefix + "fast"
    now = int(time.time() * 1000)
    raw.xadd(key, {"l": "999999"}, id=f"{now - 2 * HOUR}-0")  # outside the window
    pipe = raw.pipeline(transaction=False)
    value = 0
    for n, size in enumerate(sizes):
        lags = [(value + 7919 * k) % 100_003 for k in range(size)]
        value += size
        pipe.xadd(key, {"l": ",".join(map(str, lags))}, id=f"{now - HOUR + 1_000 + n}-0")
    pipe.execute()
    expected: list[int] = []
    for _entry_id, fields in raw.xrevrange(key, "+", now - HOUR + 1):
        expected += map(int, fields["l"].split(","))
        if len(expected) >= LAG_SAMPLES_READ:
            break
    expected.sort()
    got = summary(redis_backend, now + 1).lag["fast"]
    assert got == LagStats(len(expected), nearest_rank(expected, 0.5), nearest_rank(expected, 0.99))


def test_lost_freshness_scripts_are_reloaded(redis_backend: Backend) -> None:
    backend = redis_backend
    s = backend.store
    assert backend.raw is not None
    s.stamp_ingest({"u1": T0 + 10})
    backend.raw.script_flush()
    s.write_batch([reflect("u1", T0 + 10)], now_ms=T0)
    backend.raw.script_flush()
    s.stamp_ingest({"u2": T0 + 10})
    backend.raw.script_flush()
    got = summary(backend, T0 + 60_000)
    assert (got.active_users, got.pending_users) == (2, 1)
