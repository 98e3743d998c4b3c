"""`POST /v1/features/batch` and `POST /v1/agents/{id}/infer` against a real store.

Generated users are backfilled (the stream's own fold and writes) into Redis or SQLite; the
API runs under uvicorn. Batch: every user's answer equals the single read, deleted and unknown
users are null, more than 1,000 ids is a 422. Infer: for every user and every agent, the
answer from the user's events equals what the store holds for the same history.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from connectors.store import open_store
from flows.backfill import backfill
from oo_features.generate import ChaosOptions, write_jsonl
from oo_features.services import delete_keys
from serving.api.models import BatchOut
from serving.app import create_app
from serving.settings import Settings
from tests.compare import close
from tests.orchestrator_peer import ApiServer

TOKEN = "batch-infer-token-0123456789"


@pytest.fixture(scope="module", params=["redis", "sqlite"])
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, dict[str, list[dict[str, Any]]]]]:
    """One backfilled store and API per backend for the module (the tests only read, but
    one deletes a user no other test reads)."""
    tmp_path = tmp_path_factory.mktemp("batch-infer")
    key_prefix = f"t{uuid.uuid4().hex[:8]}"
    if request.param == "redis":
        services = request.getfixturevalue("services")
        url = services.redis_url
        request.addfinalizer(lambda: delete_keys(services.redis_url, key_prefix))
    else:
        url = f"sqlite:///{tmp_path}/features.db"
    log = tmp_path / "events.jsonl"
    with log.open("w") as out:
        write_jsonl(out, 8, 21, 11, chaos=ChaosOptions(out_of_order=0.05, duplicates=0.02))
    store = open_store(url, key_prefix=key_prefix)
    backfill(log, store)
    store.close()
    events: dict[str, list[dict[str, Any]]] = {}
    for line in log.read_text().splitlines():
        event = json.loads(line)
        events.setdefault(event["userId"], []).append(event)
    settings = Settings(store_url=url, key_prefix=key_prefix, api_token=TOKEN)
    with (
        ApiServer(create_app(settings)) as server,
        httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {TOKEN}"},
            trust_env=False,
            timeout=60,
        ) as http,
    ):
        yield http, events


def test_a_batch_equals_single_reads_and_says_null_for_deleted_and_unknown(
    api: tuple[httpx.Client, dict[str, list[dict[str, Any]]]],
) -> None:
    http, events = api
    users = sorted(events)
    assert http.delete(f"/v1/users/{users[0]}").status_code in (202, 503)  # 503: no Kafka
    asked = [*users, "nobody", users[1]]

    answer = http.post("/v1/features/batch", json={"user_ids": asked})

    assert answer.status_code == 200, answer.text
    got = answer.json()["users"]
    assert list(got) == [*users, "nobody"]  # in the order asked, a duplicate once
    assert got[users[0]] is None and got["nobody"] is None
    for user_id in users[1:]:
        assert got[user_id] == http.get(f"/v1/users/{user_id}/features").json()
    assert sum(bool(got[u]["agents"]) for u in users[1:]) >= 5
    # Written from the stored JSON (ADR 0025), the answer is still the documented `BatchOut`.
    assert BatchOut.model_validate_json(answer.text).model_dump(mode="json") == answer.json()
    schema = http.get("/openapi.json").json()
    ok = schema["paths"]["/v1/features/batch"]["post"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/BatchOut")


def test_a_batch_answered_again_from_kept_answers_equals_single_reads(
    api: tuple[httpx.Client, dict[str, list[dict[str, Any]]]],
) -> None:
    """A second call of the same users (in another order) is served from the answers kept
    across calls (ADR 0036; checked against their stored parts as one bytes object, ADR 0050):
    every user's answer is the first call's, and still the single read's."""
    http, events = api
    users = sorted(events)[1:]  # the first may have been deleted by the test above

    first = http.post("/v1/features/batch", json={"user_ids": users})
    again = http.post("/v1/features/batch", json={"user_ids": users[::-1]})

    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert list(again.json()["users"]) == users[::-1]
    assert again.json() == first.json()
    for user_id, got in again.json()["users"].items():
        single = http.get(f"/v1/users/{user_id}/features")
        assert got == (single.json() if single.status_code == 200 else None), user_id


def test_a_batch_over_the_limit_or_with_a_bad_id_is_a_422(
    api: tuple[httpx.Client, dict[str, list[dict[str, Any]]]],
) -> None:
    http, _ = api
    too_many = http.post("/v1/features/batch", json={"user_ids": [f"u{i}" for i in range(1001)]})
    assert too_many.status_code == 422
    assert "1000" in too_many.text
    bad = http.post("/v1/features/batch", json={"user_ids": ["ok", "not ok!"]})
    assert bad.status_code == 422 and "user_ids" in bad.text
    assert http.post("/v1/features/batch", json={"user_ids": []}).status_code == 422


def test_infer_equals_the_stored_features_of_the_same_history_for_every_agent(
    api: tuple[httpx.Client, dict[str, list[dict[str, Any]]]],
) -> None:
    http, events = api
    agents = [a["id"] for a in http.get("/v1/agents").json()["agents"]]
    compared = 0
    for user_id, history in sorted(events.items())[1:]:  # the first is the deleted one
        stored = http.get(f"/v1/users/{user_id}/features").json()["agents"]
        for agent_id in agents:
            answer = http.post(f"/v1/agents/{agent_id}/infer", json={"events": history})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert (body["user_id"], body["events"], body["failed"]) == (user_id, len(history), [])
            if agent_id not in stored:
                assert body["features"] is None, (user_id, agent_id)
                continue
            want, got = stored[agent_id], body["features"]
            where = f"{user_id} {agent_id}"
            assert got["version"] == want["version"], where
            assert close(got["params"], want["params"]), where
            assert close(got["extras"], want["extras"]), where
            assert got["snippet"] == (want["snippet"] or {}).get("text"), where
            compared += 1
    assert compared >= 25


def test_infer_names_every_invalid_event_in_a_422(
    api: tuple[httpx.Client, dict[str, list[dict[str, Any]]]],
) -> None:
    http, events = api
    history = events[sorted(events)[1]][:5]
    broken = [
        *history[:2],
        {**history[2], "occurredAt": "yesterday"},
        {"eventId": "x"},
        {**history[3], "userId": "someone-else"},
    ]

    answer = http.post("/v1/agents/momentum/infer", json={"events": broken})

    assert answer.status_code == 422
    detail = answer.json()["detail"]
    named = {e["index"]: e["reason"] for e in detail["errors"]}
    assert set(named) == {2, 3, None}
    assert "occurredAt" in named[2] or "occurred" in named[2].lower()
    assert "several users" in named[None]
    assert http.post("/v1/agents/nope/infer", json={"events": history}).status_code == 404
    too_many = http.post("/v1/agents/momentum/infer", json={"events": [history[0]] * 10_001})
    assert too_many.status_code == 422
    empty = http.post("/v1/agents/momentum/infer", json={"events": []}).json()
    assert empty["features"] is None and empty["events"] == 0


def test_a_batch_read_is_one_round_trip_to_redis(
    services: Any, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis.connection

    from connectors.store import AgentWrite, UserWrite

    store = open_store(services.redis_url, key_prefix=key_prefix)
    agent = AgentWrite(
        "momentum", "1.0.0", {"z": {"value": 1.0, "source": "inferred"}}, {}, "Go.", 600, 5, 6, 7
    )
    store.write_batch(
        [UserWrite(f"u{i}", agents={"momentum": agent}, newest_event_ms=5) for i in range(1000)]
    )
    store.read_user("u0")  # scripts loaded
    sent: list[int] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sent.append(1)
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    users = store.read_users([f"u{i}" for i in range(999)] + ["nobody"])
    monkeypatch.undo()
    store.close()

    assert len(sent) == 1
    assert len(users) == 1000 and users["nobody"] is None
    assert users["u7"] is not None and users["u7"].agents["momentum"].snippet == "Go."
