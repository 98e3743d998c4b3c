"""The API in embedded mode (SQLite store, feedback to a JSONL file, no orchestrator).

No Kafka or Redis here: the same app against the real services is in
`tests/integration/test_api.py`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.store import AgentWrite, UserWrite, open_store
from connectors.store.base import FeatureStore
from serving.app import create_app
from serving.settings import Settings
from tests.orchestrator_peer import ApiServer

TOKEN = "unit-test-token-0123456789"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeatureStore]:
    opened = open_store(f"sqlite:///{tmp_path / 'features.db'}", key_prefix="unit")
    yield opened
    opened.close()


@pytest.fixture
def feedback_log(tmp_path: Path) -> Path:
    return tmp_path / "events" / "feedback.jsonl"


@pytest.fixture
def api(store: FeatureStore, feedback_log: Path, tmp_path: Path) -> Iterator[httpx.Client]:
    settings = Settings(
        store_url=f"sqlite:///{tmp_path / 'features.db'}",
        kafka_bootstrap=None,
        orchestrator_url=None,
        api_token=TOKEN,
        feedback_log=feedback_log,
    )
    with (
        ApiServer(create_app(settings, store=store)) as server,
        httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, trust_env=False
        ) as client,
    ):
        yield client


def seed(store: FeatureStore, user_id: str = "u-1") -> None:
    now = time.time_ns() // 1_000_000
    store.write_batch(
        [
            UserWrite(
                user_id=user_id,
                agents={
                    "momentum": AgentWrite(
                        agent_id="momentum",
                        version="1.0.0",
                        params={"baseline": {"value": 3.4, "source": "inferred"}},
                        extras={"done_today": 6},
                        snippet="So far today: 6 tasks done.",
                        ttl_seconds=3600,
                        event_time_ms=now - 2000,
                        ingest_time_ms=now - 1000,
                        computed_at_ms=now,
                    )
                },
                consents={"tasks": True},
                feedback={"feedback_events": 0},
            )
        ]
    )


def events(path: Path, *, at_least: int = 1, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """The logged events, once there are `at_least` (feedback is written after the response)."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= at_least or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.02)


def test_ready_says_kafka_is_disabled(api: httpx.Client) -> None:
    assert api.get("/health").json() == {"status": "alive"}
    ready = api.get("/ready")
    assert ready.status_code == 200
    body = ready.json()
    freshness = body.pop("freshness")
    assert body == {
        "status": "ready",
        "store": "ok",
        "producer": "disabled",
        "reason": None,
    }
    # Without Kafka there is no ingestion stamper; a freshness breach never makes /ready fail.
    assert freshness["stamper"] == "disabled"
    assert freshness["breaching"] == []


def test_fallback_without_orchestrator_and_tip_shown_in_the_log(
    api: httpx.Client, store: FeatureStore, feedback_log: Path
) -> None:
    seed(store)

    body = api.post("/v1/recommend", json={"user_id": "u-1"}).json()

    assert body["fallback"] is True
    assert body["fallback_reason"] == "orchestrator_not_configured"
    assert body["tip"]["text"] == "So far today: 6 tasks done."
    assert body["agents"] == ["momentum"]
    [shown] = events(feedback_log)
    assert shown["source"] == "tip-api"
    assert shown["userId"] == "u-1"
    assert shown["tipShown"] == {"tipId": body["tip"]["tip_id"], "agentIds": ["momentum"]}


def test_feedback_and_deletion_go_to_the_log(
    api: httpx.Client, store: FeatureStore, feedback_log: Path
) -> None:
    seed(store)

    reaction = api.post(
        "/v1/feedback", json={"user_id": "u-1", "tip_id": "t1", "reaction": "snooze"}
    )
    deleted = api.delete("/v1/users/u-1")

    assert reaction.status_code == 202
    assert deleted.status_code == 202
    assert api.get("/v1/users/u-1/features").status_code == 404
    logged = events(feedback_log, at_least=2)
    assert logged[0]["tipReaction"] == {"tipId": "t1", "reaction": "REACTION_SNOOZE"}
    assert logged[0]["eventId"] == reaction.json()["event_id"]
    assert "userDeleted" in logged[1]
    assert logged[1]["occurredAt"].startswith(deleted.json()["deleted_at"][:19])


def _remembered() -> bytes:
    """Everything the batch writer's cross-call tables hold, keys and values, as bytes."""
    import serving.features_json as fj

    tables = (fj._TIMES, fj._STRINGS, fj._EXPIRIES, fj._SNIPPETS, fj._ANSWERS)
    return repr([list(table.items()) for table in tables]).encode()


def test_a_deleted_users_snippet_leaves_the_batch_writers_memory(
    api: httpx.Client, store: FeatureStore
) -> None:
    """Regression (privacy): the batch writer remembered each stored snippet's answer across
    calls, so a deleted user's text stayed in the API's memory until the table filled up."""
    seed(store, "u-1")
    seed(store, "u-2")
    [stored] = store.read_users_bytes(["u-1"]).values()
    assert stored is not None
    times = [t for t in stored.agents[0][4:7]]

    batch = api.post("/v1/features/batch", json={"user_ids": ["u-1", "u-2"]})
    assert batch.json()["users"]["u-1"]["agents"]["momentum"]["snippet"] is not None
    assert b"So far today: 6 tasks done." in _remembered()

    assert api.delete("/v1/users/u-1").status_code == 202

    remembered = _remembered()
    assert b"So far today" not in remembered
    assert not [t for t in times if t in remembered]
    again = api.post("/v1/features/batch", json={"user_ids": ["u-1", "u-2"]}).json()
    assert again["users"]["u-1"] is None
    assert again["users"]["u-2"]["agents"]["momentum"]["snippet"] is not None


def test_features_shape(api: httpx.Client, store: FeatureStore) -> None:
    seed(store)

    body = api.get("/v1/users/u-1/features").json()

    momentum = body["agents"]["momentum"]
    assert body["user_id"] == "u-1"
    assert body["feedback"] == {"feedback_events": 0}
    assert momentum["params"] == {"baseline": {"value": 3.4, "source": "inferred"}}
    assert momentum["extras"] == {"done_today": 6}
    assert momentum["snippet"]["text"] == "So far today: 6 tasks done."
    for name in ("event_time", "ingest_time", "computed_at"):
        assert momentum[name].endswith("Z")
        assert isinstance(momentum[f"{name}_ms"], int)
    assert momentum["snippet"]["expires_at_ms"] - momentum["computed_at_ms"] == pytest.approx(
        3_600_000, abs=5_000
    )


def test_metrics_use_route_templates(api: httpx.Client, store: FeatureStore) -> None:
    seed(store)
    api.get("/v1/users/u-1/features")
    api.get("/v1/users/nobody/features")

    text = api.get("/metrics").text

    assert 'route="/v1/users/{user_id}/features"' in text
    assert "u-1" not in text and "nobody" not in text
    assert "oo_orchestrator_breaker_state 0.0" in text


def test_two_apps_have_separate_registries(tmp_path: Path) -> None:
    settings = Settings(store_url=f"sqlite:///{tmp_path / 'x.db'}")
    first, second = create_app(settings), create_app(settings)
    assert first.state.metrics.registry is not second.state.metrics.registry


def test_a_running_app_raises_the_young_generations_threshold_and_restores_it(
    store: FeatureStore, tmp_path: Path
) -> None:
    """While the app runs, the cyclic collector's generation-0 threshold is
    `GC_YOUNG_THRESHOLD` (a batch call's young containers no longer set off a collection);
    its shutdown puts back the thresholds it found (ADR 0059)."""
    import gc

    from serving.app import GC_YOUNG_THRESHOLD

    before = gc.get_threshold()
    gc.set_threshold(700, *before[1:])
    try:
        settings = Settings(
            store_url=f"sqlite:///{tmp_path / 'features.db'}",
            kafka_bootstrap=None,
            orchestrator_url=None,
            api_token=TOKEN,
            feedback_log=tmp_path / "feedback.jsonl",
        )
        with ApiServer(create_app(settings, store=store)):
            running = gc.get_threshold()
        assert running == (GC_YOUNG_THRESHOLD, *before[1:])
        assert gc.get_threshold() == (700, *before[1:])
    finally:
        gc.set_threshold(*before)
