"""Freshness SLA math on the embedded store (issue: freshness SLA monitoring).

The summary's counts and compliance, the background check's verdicts and gauges, the
stamper's per-batch reduction, and both routes, all on SQLite without Kafka or Redis. The
same store contract on Redis is in `tests/integration/test_store_freshness.py`; the whole loop
on real Kafka and Redis in `tests/e2e/test_freshness_e2e.py`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE

from connectors.freshness import newest_and_oldest
from connectors.store import AgentWrite, SQLiteStore, UserWrite, open_store
from features.model import Manifest
from serving.api.deps import get_manifests
from serving.app import create_app
from serving.freshness import FreshnessMonitor, compliance
from serving.metrics import Metrics
from serving.settings import Settings
from tests.orchestrator_peer import ApiServer

TOKEN = "unit-test-token-0123456789"
NOW = 1_780_000_000_000
HOUR = 3_600_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def store() -> Iterator[SQLiteStore]:
    opened = open_store("sqlite:///:memory:")
    assert isinstance(opened, SQLiteStore)
    yield opened
    opened.close()


def manifests() -> dict[str, Manifest]:
    return get_manifests()


def sla_ms() -> dict[str, int]:
    return {a: m.freshness_sla_seconds * 1000 for a, m in manifests().items()}


def written(user_id: str, ingest_ms: int, lag_ms: int = 40) -> UserWrite:
    agents = {
        a: AgentWrite(
            agent_id=a,
            version="1",
            params={},
            extras={},
            snippet=None,
            ttl_seconds=0,
            event_time_ms=ingest_ms,
            ingest_time_ms=ingest_ms,
            computed_at_ms=ingest_ms + lag_ms,
        )
        for a in manifests()
    }
    return UserWrite(user_id=user_id, agents=agents, newest_ingest_ms=ingest_ms)


def test_compliance_counts_only_active_users_beyond_each_sla(store: SQLiteStore) -> None:
    slas = sla_ms()
    tightest, loosest = min(slas.values()), max(slas.values())
    # 100 active users: 97 up to date, 2 pending beyond the tightest SLA only, 1 beyond all.
    store.stamp_ingest({f"u{i}": NOW - 60_000 for i in range(97)})
    store.write_batch([written(f"u{i}", NOW - 60_000) for i in range(97)], now_ms=NOW)
    store.stamp_ingest({"u97": NOW - 1_000}, oldest={"u97": NOW - tightest})  # exactly the SLA
    store.stamp_ingest({"u98": NOW - 1_000}, oldest={"u98": NOW - tightest - 1})
    store.stamp_ingest({"u99": NOW}, oldest={"u99": NOW - loosest - 1})
    # An idle user, reflected long ago, and one out of the window: neither counts.
    store.stamp_ingest({"idle": NOW - 2 * HOUR})
    store.write_batch([written("idle", NOW - 2 * HOUR)], now_ms=NOW)

    summary = store.freshness_summary(now_ms=NOW, window_ms=HOUR, sla_ms_by_agent=slas)
    assert summary.active_users == 100
    assert summary.pending_users == 3
    for agent_id, sla in slas.items():
        expected = 3 if sla == tightest else 1
        assert summary.stale_users[agent_id] == expected, agent_id
        assert compliance(summary, agent_id) == (100 - expected) / 100
    assert [u for u, _ in summary.worst] == ["u99", "u98", "u97"]
    assert summary.worst[0][1] == loosest + 1
    assert all(s.samples == 98 and s.p50_ms == 40 for s in summary.lag.values())

    monitor = FreshnessMonitor(
        objective=0.99, window_s=3600, check_interval_s=10, metrics=Metrics()
    )
    point = monitor.record(summary, manifests())
    tight = {a for a, sla in slas.items() if sla == tightest}
    assert monitor.breaching == frozenset(tight)  # 0.97 < 0.99; the others at exactly 0.99
    assert monitor.checked_at_ms == NOW and list(monitor.history) == [point]
    assert monitor.metrics is not None
    registry = monitor.metrics.registry
    for agent_id in slas:
        labels = {"agent": agent_id}
        assert registry.get_sample_value("oo_freshness_breaching", labels) == (
            1.0 if agent_id in tight else 0.0
        )
        assert registry.get_sample_value("oo_freshness_lag_p99_ms", labels) == 40


def test_no_active_users_is_full_compliance(store: SQLiteStore) -> None:
    summary = store.freshness_summary(now_ms=NOW, window_ms=HOUR, sla_ms_by_agent=sla_ms())
    assert summary.active_users == 0
    assert all(compliance(summary, a) == 1.0 for a in sla_ms())
    monitor = FreshnessMonitor(objective=0.99, window_s=3600, check_interval_s=10)
    asyncio.run(monitor.check(store, manifests(), at_ms=NOW))
    assert monitor.breaching == frozenset()


def test_breach_clears_when_the_flow_catches_up(store: SQLiteStore) -> None:
    monitor = FreshnessMonitor(objective=0.99, window_s=3600, check_interval_s=10)
    store.stamp_ingest({"u1": NOW - 400_000, "u2": NOW - 1_000})
    asyncio.run(monitor.check(store, manifests(), at_ms=NOW))
    assert monitor.breaching == frozenset(manifests())  # 1 of 2 users stale beyond every SLA
    store.write_batch([written("u1", NOW - 400_000)], now_ms=NOW)
    asyncio.run(monitor.check(store, manifests(), at_ms=NOW + 1))
    assert monitor.breaching == frozenset()
    assert [p.agents["momentum"].breaching for p in monitor.history] == [True, False]


@dataclass
class FakeMessage:
    """What the stamper reads of a confluent-kafka message."""

    k: bytes | None
    ts: int
    kind: int = TIMESTAMP_CREATE_TIME
    failed: bool = False

    def error(self) -> object | None:
        return object() if self.failed else None

    def key(self) -> bytes | None:
        return self.k

    def timestamp(self) -> tuple[int, int]:
        return self.kind, self.ts


def test_stamper_batch_reduction() -> None:
    newest, oldest = newest_and_oldest(
        [
            FakeMessage(b"a", 30),
            FakeMessage(b"a", 10),
            FakeMessage(b"a", 20),
            FakeMessage(b"b", 5),
            FakeMessage(None, 99),  # no key: skipped
            FakeMessage(b"c", 99, failed=True),  # an error: skipped
            FakeMessage(b"d", -1, kind=TIMESTAMP_NOT_AVAILABLE),  # no timestamp: read time
            FakeMessage(b"\xff", 7),  # not UTF-8: skipped
        ],
        now_ms=1000,
    )
    assert newest == {"a": 30, "b": 5, "d": 1000}
    assert oldest == {"a": 10, "b": 5, "d": 1000}


def test_the_stamper_skips_keys_that_are_not_user_ids() -> None:
    skipped: Counter[str] = Counter()
    newest, _ = newest_and_oldest(
        [
            FakeMessage(b"u-1", 10),
            FakeMessage(b"<b>markup</b>", 11),
            FakeMessage(b"x" * 100_000, 12),
            FakeMessage(b"a b", 13),
            FakeMessage(b"u-1\n", 14),
            FakeMessage(None, 15),
            FakeMessage(b"\xff", 16),
        ],
        now_ms=1000,
        skipped=skipped,
    )
    assert newest == {"u-1": 10}
    assert skipped == {"invalid_user_id": 4, "no_key": 1, "not_utf8": 1}


def test_routes_on_the_embedded_store(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'f.db'}")
    settings = Settings(
        store_url=f"sqlite:///{tmp_path / 'f.db'}",
        api_token=TOKEN,
        feedback_log=tmp_path / "feedback.jsonl",
        freshness_check_interval_s=0.2,
    )
    now = now_ms()
    store.stamp_ingest({"waiting": now - 100_000, "done": now - 5_000})
    store.write_batch([written("done", now - 5_000)])
    store.write_batch([UserWrite(user_id="private", consents={"tasks": False})])
    try:
        with (
            ApiServer(create_app(settings, store=store)) as server,
            httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, trust_env=False
            ) as http,
        ):
            assert http.get("/v1/freshness", headers={"Authorization": ""}).status_code == 401
            deadline = time.monotonic() + 10
            while not http.get("/v1/freshness").json()["history"]:
                assert time.monotonic() < deadline, "no background check"
                time.sleep(0.05)
            body = http.get("/v1/freshness", params={"worst": 1}).json()
            assert {"generated_at", "window_s", "objective", "check_interval_s"} <= body.keys()
            momentum = body["agents"]["momentum"]
            assert momentum["sla_seconds"] == 30
            assert (momentum["active_users"], momentum["users_within_sla"]) == (2, 1)
            assert momentum["compliance"] == 0.5 and momentum["breaching"] is True
            assert momentum["lag_ms"] == {"p50": 40, "p99": 40, "samples": 1}
            assert [w["user_id"] for w in momentum["worst"]] == ["waiting"]
            assert momentum["worst"][0]["within_sla"] is False
            assert body["history"][-1]["agents"]["momentum"]["breaching"] is True
            ready = http.get("/ready").json()
            assert ready["status"] == "ready" and "momentum" in ready["freshness"]["breaching"]

            done = http.get("/v1/users/done/freshness").json()
            assert done["reflected_ingest_ms"] == done["newest_event_ingest_ms"] == now - 5_000
            assert done["agents"]["momentum"]["lag_ms"] == 40
            assert done["agents"]["momentum"]["age_ms"] >= 5_000 - 40
            assert done["agents"]["momentum"]["staleness_ms"] == 0

            waiting = http.get("/v1/users/waiting/freshness").json()
            assert waiting["pending_since_ms"] == now - 100_000
            agent = waiting["agents"]["momentum"]
            assert agent["lag_ms"] is None and agent["age_ms"] is None
            assert agent["staleness_ms"] >= 100_000 and agent["within_sla"] is False

            private = http.get("/v1/users/private/freshness").json()
            assert "momentum" not in private["agents"]  # no consent, not listed

            assert http.get("/v1/users/nobody/freshness").status_code == 404
    finally:
        store.close()
