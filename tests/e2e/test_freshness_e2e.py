"""Freshness SLA end to end on real Kafka and Redis (issue: freshness SLA monitoring).

The flow runs in tail mode as a subprocess, the API (with its ingestion stamper and a 1 s
check) under uvicorn, and a thread produces events at a steady rate. Phases:

1. steady: the flow keeps up; once the producer pauses and the flow has caught up, the lag
   percentiles and compliance the API reports equal what this test computes itself from the
   store's stamps (the lag samples and each user's freshness stamps);
2. outage: the flow is stopped while events keep arriving; staleness grows and the breach shows
   in /metrics, /v1/freshness and /ready;
3. recovery: the flow is restarted; once it has caught up the breach clears everywhere.

An idle user (events at the start only, reflected) is never reported stale. Deadlines are
generous polls; nothing asserts on speed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis

from connectors.codec import from_json
from connectors.kafka import EventProducer
from connectors.store import open_store
from connectors.store.base import FeatureStore, nearest_rank
from features.registry import manifests
from serving.app import create_app
from serving.settings import Settings
from tests.fixtures_services import Services, service_env
from tests.orchestrator_peer import ApiServer

TOKEN = "e2e-freshness-token-0123456789"
USERS = [f"busy-{i:02d}" for i in range(40)]
IDLE = "idle-user"
RATE_PER_S = 200
WINDOW_S = 3600
SLA_MS = {m.id: m.freshness_sla_seconds * 1000 for m in manifests()}
FASTEST = min(SLA_MS, key=lambda a: (SLA_MS[a], a))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def completed(user_id: str) -> Any:
    event_id = uuid.uuid4().hex
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return from_json(
        f'{{"eventId":"{event_id}","userId":"{user_id}","occurredAt":"{when}",'
        f'"utcOffsetMinutes":60,"taskCompleted":{{"taskId":"{event_id}","projectId":"p1"}}}}'
    )


class SteadyProducer:
    """Publishes `RATE_PER_S` events per second round-robin over `USERS` while running."""

    def __init__(self, producer: EventProducer) -> None:
        self._producer = producer
        self._running = threading.Event()
        self._stop = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="steady-producer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = 1 / RATE_PER_S
        next_at = time.monotonic()
        while not self._stop.is_set():
            if not self._running.wait(0.05):
                next_at = time.monotonic()
                continue
            self._producer.publish(completed(USERS[self.sent % len(USERS)]))
            self.sent += 1
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._producer.poll(0)

    def resume(self) -> None:
        self._running.set()

    def pause(self) -> None:
        self._running.clear()
        time.sleep(0.1)  # the event in hand goes out
        assert self._producer.flush(30).ok

    def close(self) -> None:
        self._stop.set()
        self._running.set()
        self._thread.join(timeout=10)


def start_flow(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "oo_features.cli", "flow"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_flow(flow: subprocess.Popen[bytes]) -> None:
    flow.terminate()
    try:
        flow.wait(timeout=30)
    except subprocess.TimeoutExpired:
        flow.kill()
        flow.wait(timeout=10)


def wait_for(what: str, check: Callable[[], Any], *, timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}; last: {last!r}")


def breaching_metric(http: httpx.Client, agent_id: str) -> float | None:
    text = http.get("/metrics").text
    found = re.search(
        rf'^oo_freshness_breaching\{{agent="{re.escape(agent_id)}"\}} (\S+)$', text, re.M
    )
    return None if found is None else float(found.group(1))


def lag_samples(raw: redis.Redis, key_prefix: str, agent_id: str, since_ms: int) -> list[int]:
    """This test's own reading of the agent's lag samples (the store's stamps), newest first."""
    key = f"{key_prefix}:{{{key_prefix}~fresh}}:lag:{agent_id}"
    values: list[int] = []
    for _id, fields in raw.xrevrange(key, "+", str(since_ms)):
        values += [int(v) for v in fields[b"l"].decode().split(",")]
    return values


def own_stale_counts(store: FeatureStore, at_ms: int) -> tuple[int, dict[str, int]]:
    """Active users and, per agent, users stale beyond its SLA, from the users' own stamps."""
    active = 0
    stale = dict.fromkeys(SLA_MS, 0)
    for user_id in [*USERS, IDLE]:
        stamps = store.user_freshness(user_id)
        if stamps is None or (stamps.newest_ingest_ms or 0) < at_ms - WINDOW_S * 1000:
            continue
        active += 1
        for agent_id, sla in SLA_MS.items():
            if stamps.staleness_ms(at_ms) >= sla:
                stale[agent_id] += 1
    return active, stale


@pytest.fixture
def env(services: Services, topic_prefix: str, key_prefix: str) -> dict[str, str]:
    return service_env(services, topic_prefix, key_prefix)


@pytest.fixture
def producer(services: Services, topic_prefix: str) -> Iterator[EventProducer]:
    made = EventProducer(bootstrap=services.kafka_bootstrap, topic_prefix=topic_prefix)
    yield made
    made.close()


def test_freshness_sla_end_to_end(
    services: Services, env: dict[str, str], key_prefix: str, producer: EventProducer
) -> None:
    settings = Settings(
        kafka_bootstrap=services.kafka_bootstrap,
        store_url=services.redis_url,
        topic_prefix=env["OO_TOPIC_PREFIX"],
        key_prefix=key_prefix,
        api_token=TOKEN,
        freshness_check_interval_s=1.0,
        freshness_window_s=WINDOW_S,
    )
    app = create_app(settings)
    store = open_store(services.redis_url, key_prefix=key_prefix)
    raw = redis.Redis.from_url(services.redis_url)
    steady = SteadyProducer(producer)
    flow = start_flow(env)
    try:
        with ApiServer(app) as api:
            http = httpx.Client(
                base_url=api.url,
                headers={"Authorization": f"Bearer {TOKEN}"},
                trust_env=False,
                timeout=10,
            )
            assert app.state.stamper.wait_assigned(60), "the ingestion stamper got no partitions"

            def report() -> dict[str, Any]:
                got = http.get("/v1/freshness")
                assert got.status_code == 200, got.text
                return got.json()

            def user(user_id: str) -> dict[str, Any]:
                got = http.get(f"/v1/users/{user_id}/freshness")
                assert got.status_code == 200, got.text
                return got.json()

            # The idle user: a few events at the start, then nothing, ever.
            for _ in range(3):
                producer.publish(completed(IDLE))
            assert producer.flush(30).ok

            def idle_reflected() -> bool:
                stamps = store.user_freshness(IDLE)
                return bool(
                    stamps
                    and stamps.newest_ingest_ms
                    and stamps.pending_since_ms is None
                    and stamps.reflected_ingest_ms == stamps.newest_ingest_ms
                )

            wait_for("the flow to reflect the idle user", idle_reflected)

            # 1. Steady: the flow keeps up.
            steady.resume()
            time.sleep(5)
            steady.pause()
            wait_for("the flow to catch up", lambda: report()["pending_users"] == 0)
            time.sleep(1.5)  # a check after the catch-up
            body = report()
            at = body["generated_at_ms"]
            active, stale = own_stale_counts(store, at)
            assert active == len(USERS) + 1
            written = 0
            for agent_id, agent in body["agents"].items():
                assert agent["active_users"] == active
                assert agent["users_within_sla"] == active - stale[agent_id] == active
                assert agent["compliance"] == 1.0
                assert agent["breaching"] is False
                own = sorted(lag_samples(raw, key_prefix, agent_id, at - WINDOW_S * 1000))
                assert agent["lag_ms"] == {
                    "p50": nearest_rank(own, 0.5),
                    "p99": nearest_rank(own, 0.99),
                    "samples": len(own),
                }, agent_id
                written += len(own) > 0
            assert written, "no agent wrote anything"
            assert body["history"] and body["history"][-1]["agents"][FASTEST]["compliance"] == 1.0

            # Per user: lag and age from the stored stamps; nobody is stale.
            features = store.read_user(USERS[0])
            assert features is not None
            mine = user(USERS[0])
            for agent_id, stored in features.agents.items():
                got = mine["agents"][agent_id]
                assert got["lag_ms"] == stored.computed_at_ms - stored.ingest_time_ms
                assert got["age_ms"] >= 0
                assert got["staleness_ms"] == 0 and got["within_sla"] is True
            assert mine["reflected_ingest_ms"] == mine["newest_event_ingest_ms"]

            # 2. Outage: the flow stops, events keep arriving.
            stop_flow(flow)
            steady.resume()
            first = user(USERS[1])["agents"][FASTEST]["staleness_ms"]
            time.sleep(2)
            assert user(USERS[1])["agents"][FASTEST]["staleness_ms"] > first  # it grows
            deadline_s = SLA_MS[FASTEST] / 1000 + 60
            wait_for(
                f"{FASTEST} to breach in /v1/freshness",
                lambda: report()["agents"][FASTEST]["breaching"],
                timeout_s=deadline_s,
            )
            # Within one check interval, everywhere.
            wait_for(
                "the breach in /metrics",
                lambda: breaching_metric(http, FASTEST) == 1.0,
                timeout_s=5,
            )
            ready = http.get("/ready").json()
            assert ready["status"] == "ready"  # a breach is reported, never a reason to be unready
            assert FASTEST in ready["freshness"]["breaching"]

            body = report()
            at = body["generated_at_ms"]
            active, stale = own_stale_counts(store, at)
            fastest = body["agents"][FASTEST]
            assert fastest["active_users"] == active
            assert fastest["users_within_sla"] == active - stale[FASTEST]
            assert fastest["compliance"] < settings.freshness_objective
            assert fastest["worst"][0]["staleness_ms"] >= SLA_MS[FASTEST]
            assert IDLE not in {w["user_id"] for w in fastest["worst"]}
            idle = user(IDLE)
            assert all(a["staleness_ms"] == 0 and a["within_sla"] for a in idle["agents"].values())

            # 3. Recovery: the flow comes back and catches up (events still arriving).
            flow = start_flow(env)
            wait_for(
                "the breach to clear in /v1/freshness",
                lambda: not report()["agents"][FASTEST]["breaching"],
                timeout_s=180,
            )
            wait_for(
                "the breach to clear in /metrics",
                lambda: breaching_metric(http, FASTEST) == 0.0,
                timeout_s=5,
            )
            assert FASTEST not in http.get("/ready").json()["freshness"]["breaching"]
            steady.pause()
            wait_for("the flow to catch up again", lambda: report()["pending_users"] == 0)
            assert user(IDLE)["agents"][FASTEST]["staleness_ms"] == 0
            history = report()["history"]
            assert any(p["agents"][FASTEST]["breaching"] for p in history)
            assert not history[-1]["agents"][FASTEST]["breaching"]
            http.close()
    finally:
        steady.close()
        stop_flow(flow)
        store.close()
        raw.close()
