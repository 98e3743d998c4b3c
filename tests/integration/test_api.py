"""The HTTP API against the real Redis store, the real Kafka and a real orchestrator peer.

The app runs under uvicorn on loopback (`tests.orchestrator_peer.ApiServer`);
the orchestrator is `OrchestratorPeer`, a real HTTP server whose answers and
failures each test sets. The store is seeded with `write_batch` directly, as
the flow would. Events the API publishes are read back from Kafka.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from connectors import topics
from connectors.codec import decode
from connectors.kafka import consumer_config
from connectors.store import AgentWrite, UserWrite, open_store
from connectors.store.base import FeatureStore
from features.registry import manifests
from proto import events_pb2 as pb
from serving.app import create_app
from serving.settings import Settings
from tests.fixtures_services import Services
from tests.orchestrator_peer import ApiServer, OrchestratorPeer

TOKEN = "integration-token-4f9c2b7e1d"
ANSWER = {"text": "Start with the overdue report, then ride the momentum.", "kind": "todo"}
TTL = {m.id: m.ttl_seconds for m in manifests()}
ALL_AGENTS = sorted(TTL)
BY_RELEVANCE = sorted(TTL, key=lambda agent_id: (TTL[agent_id], agent_id))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def store(services: Services, key_prefix: str) -> Iterator[FeatureStore]:
    opened = open_store(services.redis_url, key_prefix=key_prefix)
    yield opened
    opened.close()


@pytest.fixture
def peer() -> Iterator[OrchestratorPeer]:
    with OrchestratorPeer(answer=ANSWER) as running:
        yield running


StartApi = Callable[..., httpx.Client]


@pytest.fixture
def start_api(
    services: Services, topic_prefix: str, key_prefix: str, peer: OrchestratorPeer
) -> Iterator[StartApi]:
    """`start_api(**settings)`: the app under uvicorn and a client holding the token."""
    with contextlib.ExitStack() as stack:

        def start(*, token: str | None = TOKEN, **overrides: Any) -> httpx.Client:
            values: dict[str, Any] = {
                "store_url": services.redis_url,
                "key_prefix": key_prefix,
                "kafka_bootstrap": services.kafka_bootstrap,
                "topic_prefix": topic_prefix,
                "api_token": TOKEN,
                "orchestrator_url": peer.url,
                "orchestrator_timeout_s": 0.5,
                "orchestrator_budget_s": 1.0,
                "breaker_failure_threshold": 3,
                "breaker_cooldown_s": 1.0,
            }
            values.update(overrides)
            server = stack.enter_context(ApiServer(create_app(Settings(**values))))
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return stack.enter_context(
                httpx.Client(base_url=server.url, headers=headers, trust_env=False, timeout=30)
            )

        yield start


def agent_write(
    agent_id: str, snippet: str | None, *, ttl_seconds: int | None = None, computed_at: int
) -> AgentWrite:
    return AgentWrite(
        agent_id=agent_id,
        version="1.0.0",
        params={"weight": {"value": 0.5, "source": "inferred"}},
        extras={"seen": 3},
        snippet=snippet,
        ttl_seconds=TTL[agent_id] if ttl_seconds is None else ttl_seconds,
        event_time_ms=computed_at - 2_000,
        ingest_time_ms=computed_at - 1_000,
        computed_at_ms=computed_at,
    )


def seed(
    store: FeatureStore,
    user_id: str,
    snippets: dict[str, str | None],
    *,
    consents: dict[str, bool] | None = None,
    written_at_ms: int | None = None,
    ttl_seconds: int | None = None,
) -> None:
    at = now_ms() if written_at_ms is None else written_at_ms
    store.write_batch(
        [
            UserWrite(
                user_id=user_id,
                agents={
                    agent_id: agent_write(
                        agent_id, text, ttl_seconds=ttl_seconds, computed_at=at - 10 * i
                    )
                    for i, (agent_id, text) in enumerate(sorted(snippets.items()))
                },
                consents=consents if consents is not None else {"tasks": True},
                feedback={"feedback_events": 2, "acceptance_rate": 0.5},
                newest_event_ms=at,
                newest_ingest_ms=at,
            )
        ],
        now_ms=at,
    )


def snippet_text(agent_id: str) -> str:
    return f"Signal from {agent_id}."


def seed_all(store: FeatureStore, user_id: str) -> None:
    seed(store, user_id, {agent_id: snippet_text(agent_id) for agent_id in ALL_AGENTS})


def read_events(
    services: Services,
    topic: str,
    until: Callable[[list[pb.Event]], bool],
    *,
    timeout_s: float = 30.0,
) -> list[pb.Event]:
    """Events of `topic` from the beginning, until `until(events)` holds (or the time is up)."""
    consumer = Consumer(consumer_config(services.kafka_bootstrap, f"test-{uuid.uuid4().hex}"))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        found: list[pb.Event] = []
        deadline = time.monotonic() + timeout_s
        while not until(found) and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            found.append(decode(message.value()))
        return found
    finally:
        consumer.close()


def recommend(api: httpx.Client, user_id: str, context: str | None = None) -> dict[str, Any]:
    response = api.post("/v1/recommend", json={"user_id": user_id, "context": context})
    assert response.status_code == 200, response.text
    return response.json()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- tests -----------------------------------------------------------------------------------


def test_ready_with_redis_and_kafka(start_api: StartApi) -> None:
    api = start_api()

    assert api.get("/health").json() == {"status": "alive"}
    ready = api.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["store"] == "ok"
    assert ready.json()["producer"] == "ok"


def test_not_ready_says_why(start_api: StartApi) -> None:
    api = start_api(store_url=closed_port_url().replace("http", "redis") + "/0")

    ready = api.get("/ready")

    assert ready.status_code == 503
    assert ready.json()["status"] == "not_ready"
    assert ready.json()["store"].startswith("unreachable")
    assert ready.json()["producer"] == "ok"
    assert "store" in ready.json()["reason"]
    features = api.get("/v1/users/u-1/features")
    assert features.status_code == 503
    body = features.json()
    assert body["detail"].startswith("the feature store is unavailable (error); retry in")
    assert "127.0.0.1" not in body["detail"]  # internal addresses stay in the log
    assert body["reason"] == "store_unavailable"
    assert features.headers["Retry-After"] == str(body["retry_after_s"])


def test_kafka_down_is_not_fatal(start_api: StartApi, store: FeatureStore) -> None:
    seed_all(store, "u-nokafka")
    api = start_api(kafka_bootstrap=closed_port_url().removeprefix("http://"), kafka_timeout_s=1.0)

    ready = api.get("/ready")
    tip = recommend(api, "u-nokafka")
    deleted = api.delete("/v1/users/u-nokafka")

    assert ready.status_code == 503
    assert ready.json()["store"] == "ok"
    assert ready.json()["producer"].startswith("unreachable")
    assert tip["tip"] is not None  # tips go on; their TipShown is counted as failed
    assert deleted.status_code == 503  # the store is cleared, the event not confirmed: retry
    assert "retry" in deleted.json()["detail"]
    assert store.read_user("u-nokafka") is None
    deadline = time.monotonic() + 10
    while 'oo_events_failed_total{kind="tip_shown"}' not in api.get("/metrics").text:
        assert time.monotonic() < deadline, "the lost TipShown was not counted"
        time.sleep(0.2)


def test_agents_lists_the_registry(start_api: StartApi) -> None:
    body = start_api().get("/v1/agents").json()

    assert [a["id"] for a in body["agents"]] == ALL_AGENTS
    assert all("tasks" in a["required_consents"] for a in body["agents"])
    assert {(a["stage"], a["shadows"]) for a in body["agents"]} == {("live", None)}


def test_features_of_a_user(start_api: StartApi, store: FeatureStore) -> None:
    seed_all(store, "u-feat")
    api = start_api()

    body = api.get("/v1/users/u-feat/features").json()

    assert body["user_id"] == "u-feat"
    assert sorted(body["agents"]) == ALL_AGENTS
    assert body["feedback"] == {"feedback_events": 2, "acceptance_rate": 0.5}
    momentum = body["agents"]["momentum"]
    assert momentum["version"] == "1.0.0"
    assert momentum["params"] == {"weight": {"value": 0.5, "source": "inferred"}}
    assert momentum["snippet"]["text"] == snippet_text("momentum")
    assert momentum["snippet"]["expires_at_ms"] > now_ms()
    assert momentum["computed_at"].endswith("Z")


def test_unknown_user_is_404(start_api: StartApi) -> None:
    api = start_api()

    assert api.get("/v1/users/nobody/features").status_code == 404
    assert api.post("/v1/recommend", json={"user_id": "nobody"}).status_code == 404


def test_normal_tip_and_tip_shown_on_kafka(
    start_api: StartApi,
    store: FeatureStore,
    peer: OrchestratorPeer,
    services: Services,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A proxy in the environment must not be used: the client is trust_env=False.
    monkeypatch.setenv("HTTP_PROXY", closed_port_url())
    monkeypatch.setenv("ALL_PROXY", closed_port_url())
    seed_all(store, "u-tip")
    api = start_api()

    body = recommend(api, "u-tip", "at my desk, 20 minutes free")

    assert body["fallback"] is False
    assert body["fallback_reason"] is None
    assert body["tip"]["text"] == ANSWER["text"]
    assert body["tip"]["kind"] == "todo"
    assert body["agents"] == BY_RELEVANCE
    assert peer.requests == 1
    sent = peer.bodies[0]
    assert sent["model"] == "tip-generator"
    prompt = sent["messages"][0]["content"]
    assert "at my desk, 20 minutes free" in prompt
    positions = [prompt.index(f"- [{a}] {snippet_text(a)}") for a in BY_RELEVANCE]
    assert positions == sorted(positions)

    tip_id = body["tip"]["tip_id"]
    shown = read_events(
        services,
        topic_prefix + topics.FEEDBACK,
        until=lambda evs: any(e.tip_shown.tip_id == tip_id for e in evs),
    )
    [event] = [e for e in shown if e.tip_shown.tip_id == tip_id]
    assert event.user_id == "u-tip"
    assert event.source == "tip-api"
    assert list(event.tip_shown.agent_ids) == BY_RELEVANCE
    assert uuid.UUID(event.event_id)


PLAIN = "Close the two oldest overdue tasks before lunch."


@pytest.mark.parametrize(
    ("answer", "text", "kind"),
    [
        (ANSWER, ANSWER["text"], "todo"),
        (f"```json\n{json.dumps(ANSWER)}\n```", ANSWER["text"], "todo"),
        (f"Here is a tip for you: {json.dumps(ANSWER)} Good luck!", ANSWER["text"], "todo"),
        (PLAIN, PLAIN, "advice"),
    ],
    ids=["json", "fenced-json", "prose-with-json", "plain-sentence"],
)
def test_a_real_models_answer_is_a_tip_each_way(
    start_api: StartApi,
    store: FeatureStore,
    peer: OrchestratorPeer,
    answer: dict[str, str] | str,
    text: str,
    kind: str,
) -> None:
    peer.answer = answer
    seed_all(store, "u-model")
    api = start_api()

    body = recommend(api, "u-model")

    assert body["fallback"] is False, body
    assert body["fallback_reason"] is None
    assert body["tip"]["text"] == text
    assert body["tip"]["kind"] == kind
    assert body["agents"] == BY_RELEVANCE
    # Structured output was asked for, with the tip's schema.
    sent = peer.bodies[0]["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["schema"]["required"] == ["text", "kind"]


def fallback_expected() -> tuple[str, list[str]]:
    best = BY_RELEVANCE[0]
    return snippet_text(best), [best]


@pytest.mark.parametrize(
    ("misbehave", "reason", "requests"),
    [
        ("down", "unreachable", 0),
        ("hang", "timeout", 2),
        ("slow", "timeout", 2),
        ("error", "http_5xx", 2),
        ("garbage", "garbage", 1),
    ],
)
def test_fallback_when_the_orchestrator_fails(
    start_api: StartApi,
    store: FeatureStore,
    peer: OrchestratorPeer,
    misbehave: str,
    reason: str,
    requests: int,
) -> None:
    seed_all(store, "u-fb")
    url = peer.url
    if misbehave == "down":
        url = closed_port_url()
    elif misbehave == "slow":
        peer.latency_s = 5.0
    else:
        peer.mode = misbehave  # type: ignore[assignment]
    api = start_api(orchestrator_url=url, orchestrator_timeout_s=0.4, orchestrator_budget_s=0.8)

    # The budget is proven by the outcome, not a stopwatch: a 5 s peer against a 0.8 s budget
    # can only end as a timeout fallback.
    body = recommend(api, "u-fb")

    text, agents = fallback_expected()
    assert body["fallback"] is True
    assert body["fallback_reason"] == reason
    assert body["tip"]["text"] == text
    assert body["tip"]["kind"] == "advice"
    assert body["agents"] == agents
    assert peer.requests == requests
    metrics = api.get("/metrics").text
    assert f'oo_tip_fallbacks_total{{reason="{reason}"}} 1.0' in metrics
    assert f'oo_orchestrator_calls_total{{outcome="{reason}"}} 1.0' in metrics


def test_fallback_without_orchestrator(start_api: StartApi, store: FeatureStore) -> None:
    seed_all(store, "u-noorch")
    api = start_api(orchestrator_url=None)

    body = recommend(api, "u-noorch")

    assert body["fallback"] is True
    assert body["fallback_reason"] == "orchestrator_not_configured"
    assert (body["tip"]["text"], body["agents"]) == fallback_expected()


def metric(api: httpx.Client, series: str) -> float:
    for line in api.get("/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    return 0.0


@pytest.mark.parametrize("in_process", [False, True])
def test_a_ledger_store_that_is_away_loses_the_line_counted_never_the_tip(
    start_api: StartApi, store: FeatureStore, in_process: bool
) -> None:
    """Through the ledger's own process (ADR 0053) as through the worker thread: the tip is
    answered, the line is lost, logged and counted in the API's metrics."""
    seed_all(store, "u-ledger-away")
    dead = closed_port_url().replace("http://", "redis://") + "/0"
    api = start_api(ledger_store_url=dead, ledger_process=not in_process, store_timeout_s=0.3)

    body = recommend(api, "u-ledger-away")

    assert body["tip"] is not None
    failed = 'oo_ledger_failed_total{what="tip"}'
    deadline = time.monotonic() + 20
    while metric(api, failed) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(api, failed) == 1


def breaker_gauge(api: httpx.Client) -> float:
    for line in api.get("/metrics").text.splitlines():
        if line.startswith("oo_orchestrator_breaker_state "):
            return float(line.split()[1])
    raise AssertionError("no breaker gauge in /metrics")


def test_breaker_opens_then_closes_after_cooldown(
    start_api: StartApi, store: FeatureStore, peer: OrchestratorPeer
) -> None:
    seed_all(store, "u-brk")
    peer.mode = "error"
    api = start_api(breaker_failure_threshold=2, breaker_cooldown_s=1.5)

    for _ in range(2):
        assert recommend(api, "u-brk")["fallback_reason"] == "http_5xx"
    assert peer.requests == 4  # two calls, each retried once
    assert breaker_gauge(api) == 2  # open

    for _ in range(3):
        body = recommend(api, "u-brk")
        assert body["fallback_reason"] == "breaker_open"
        assert body["tip"] is not None
    assert peer.requests == 4  # an open breaker sends nothing

    peer.mode = "ok"
    time.sleep(1.6)
    assert breaker_gauge(api) == 1  # half-open: the next call is the trial
    body = recommend(api, "u-brk")
    assert body["fallback"] is False
    assert body["tip"]["text"] == ANSWER["text"]
    assert peer.requests == 5
    assert breaker_gauge(api) == 0  # closed again
    assert recommend(api, "u-brk")["fallback"] is False


def test_no_fresh_snippet_means_no_tip(
    start_api: StartApi, store: FeatureStore, peer: OrchestratorPeer
) -> None:
    seed(store, "u-cold", {"momentum": None, "overdue-task": None})
    api = start_api()

    body = recommend(api, "u-cold")

    assert body == {
        "tip": None,
        "agents": [],
        "fallback": False,
        "fallback_reason": None,
        "reason": "no_fresh_snippets",
    }
    assert peer.requests == 0


def test_expired_snippets_are_never_used(
    start_api: StartApi, store: FeatureStore, peer: OrchestratorPeer
) -> None:
    long_ago = now_ms() - 7 * 86_400_000
    # Expired by its stamp (the key may still be in Redis: the read enforces the TTL too).
    seed(store, "u-exp", {"overdue-task": "Old overdue news."}, written_at_ms=long_ago)
    # Expired by Redis itself after one second.
    seed(store, "u-exp", {"momentum": "Short-lived momentum."}, ttl_seconds=1)
    seed(store, "u-exp", {"recent-patterns": "You do best in the morning."})
    time.sleep(1.2)
    api = start_api()

    features = api.get("/v1/users/u-exp/features").json()["agents"]
    body = recommend(api, "u-exp")

    assert features["overdue-task"]["snippet"] is None
    assert features["momentum"]["snippet"] is None
    assert features["recent-patterns"]["snippet"]["text"] == "You do best in the morning."
    assert body["agents"] == ["recent-patterns"]
    prompt = peer.bodies[0]["messages"][0]["content"]
    assert "Old overdue news" not in prompt
    assert "Short-lived momentum" not in prompt

    peer.mode = "error"
    fallback = recommend(api, "u-exp")
    assert fallback["tip"]["text"] == "You do best in the morning."


def test_revoked_consent_hides_the_agents(
    start_api: StartApi, store: FeatureStore, peer: OrchestratorPeer
) -> None:
    seed_all(store, "u-consent")
    store.write_batch([UserWrite(user_id="u-consent", consents={"tasks": False})])
    api = start_api()

    features = api.get("/v1/users/u-consent/features")
    body = recommend(api, "u-consent")

    assert features.status_code == 200
    assert features.json()["agents"] == {}
    assert body["tip"] is None
    assert body["reason"] == "no_fresh_snippets"
    assert peer.requests == 0


def test_feedback_publishes_tip_reaction(
    start_api: StartApi, services: Services, topic_prefix: str
) -> None:
    api = start_api()

    response = api.post(
        "/v1/feedback", json={"user_id": "u-react", "tip_id": "abc123", "reaction": "done"}
    )

    assert response.status_code == 202
    event_id = response.json()["event_id"]
    found = read_events(
        services,
        topic_prefix + topics.FEEDBACK,
        until=lambda evs: any(e.event_id == event_id for e in evs),
    )
    [event] = [e for e in found if e.event_id == event_id]
    assert event.user_id == "u-react"
    assert event.tip_reaction.tip_id == "abc123"
    assert event.tip_reaction.reaction == pb.REACTION_DONE


def test_deletion_is_immediate_and_reaches_the_flow(
    start_api: StartApi, store: FeatureStore, services: Services, topic_prefix: str
) -> None:
    seed_all(store, "u-del")
    api = start_api()
    assert api.get("/v1/users/u-del/features").status_code == 200

    response = api.delete("/v1/users/u-del")

    assert response.status_code == 202
    deleted_at = response.json()["deleted_at_ms"]
    assert store.read_user("u-del") is None  # gone at once, before any flow runs
    assert store.tombstone("u-del") == deleted_at
    assert api.get("/v1/users/u-del/features").status_code == 404
    assert api.post("/v1/recommend", json={"user_id": "u-del"}).status_code == 404
    found = read_events(
        services,
        topic_prefix + topics.SIGNALS,
        until=lambda evs: any(e.HasField("user_deleted") for e in evs),
    )
    [event] = [e for e in found if e.HasField("user_deleted")]
    assert event.user_id == "u-del"
    assert event.event_id == response.json()["event_id"]
    assert event.occurred_at.ToMilliseconds() == deleted_at


V1_CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/agents", None),
    ("GET", "/v1/users/u-1/features", None),
    ("DELETE", "/v1/users/u-1", None),
    ("POST", "/v1/recommend", {"user_id": "u-1"}),
    ("POST", "/v1/feedback", {"user_id": "u-1", "tip_id": "t", "reaction": "like"}),
]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Basic {TOKEN}",
        TOKEN,
        "Bearer",
        "Bearer  x",
    ],
)
def test_bad_tokens_are_401(
    start_api: StartApi, store: FeatureStore, authorization: str | None
) -> None:
    seed_all(store, "u-1")
    api = start_api(token=None)
    headers = {"Authorization": authorization} if authorization else {}

    for method, path, body in V1_CALLS:
        response = api.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert store.read_user("u-1") is not None  # the DELETE did nothing
    for path in ("/health", "/ready", "/metrics"):
        assert api.get(path, headers=headers).status_code == 200


@pytest.mark.parametrize("bad_id", ["has space", "slash%2Fid", "é", "x" * 129, "semi;colon"])
def test_bad_user_ids_are_422(start_api: StartApi, bad_id: str) -> None:
    api = start_api()

    for method, path in (
        ("GET", f"/v1/users/{bad_id}/features"),
        ("DELETE", f"/v1/users/{bad_id}"),
    ):
        response = api.request(method, path)
        assert response.status_code in (404, 422), (method, path)
        if response.status_code == 422:
            assert "should match pattern" in response.text
    for path, body in (
        ("/v1/recommend", {"user_id": bad_id}),
        ("/v1/feedback", {"user_id": bad_id, "tip_id": "t", "reaction": "like"}),
    ):
        response = api.post(path, json=body)
        assert response.status_code == 422
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "user_id"]
        assert "should match pattern" in error["msg"]


def test_path_ids_are_validated(start_api: StartApi) -> None:
    api = start_api()

    response = api.get("/v1/users/has space/features")

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["path", "user_id"]


def test_other_bad_bodies_are_422(start_api: StartApi) -> None:
    api = start_api()

    for body in (
        {"user_id": "u-1", "tip_id": "t", "reaction": "love"},
        {"user_id": "u-1", "reaction": "done"},
        {"user_id": "u-1", "tip_id": "t", "reaction": "done", "extra": 1},
    ):
        assert api.post("/v1/feedback", json=body).status_code == 422
    assert (
        api.post("/v1/recommend", json={"user_id": "u-1", "context": "x" * 501}).status_code == 422
    )


def test_openapi_lists_every_route_with_models(start_api: StartApi) -> None:
    spec = start_api(token=None).get("/openapi.json").json()

    operations = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in ("get", "post", "delete")
    }
    assert operations == {
        ("GET", "/health"),
        ("GET", "/ready"),
        ("GET", "/metrics"),
        ("GET", "/v1/agents"),
        ("GET", "/v1/agents/{agent_id}/agreement"),
        ("GET", "/v1/users/{user_id}/features"),
        ("DELETE", "/v1/users/{user_id}"),
        ("POST", "/v1/recommend"),
        ("POST", "/v1/feedback"),
        ("GET", "/v1/freshness"),
        ("GET", "/v1/users/{user_id}/freshness"),
        ("POST", "/v1/features/batch"),
        ("POST", "/v1/agents/{agent_id}/infer"),
    }

    def ref(schema: dict[str, Any]) -> str:
        return schema["$ref"].rsplit("/", 1)[1]

    paths = spec["paths"]
    ok = "application/json"
    assert ref(paths["/ready"]["get"]["responses"]["200"]["content"][ok]["schema"]) == "ReadyOut"
    assert ref(paths["/v1/agents"]["get"]["responses"]["200"]["content"][ok]["schema"]) == (
        "AgentsOut"
    )
    features = paths["/v1/users/{user_id}/features"]["get"]
    assert ref(features["responses"]["200"]["content"][ok]["schema"]) == "FeaturesOut"
    assert {"401", "404", "422"} <= set(features["responses"])
    user_id, include_shadow = features["parameters"]
    assert include_shadow["name"] == "include_shadow" and include_shadow["in"] == "query"
    agreement = paths["/v1/agents/{agent_id}/agreement"]["get"]
    assert ref(agreement["responses"]["200"]["content"][ok]["schema"]) == "AgreementOut"
    assert user_id["schema"]["pattern"] == r"^[A-Za-z0-9_.:-]{1,128}$"
    rec = paths["/v1/recommend"]["post"]
    assert ref(rec["requestBody"]["content"][ok]["schema"]) == "RecommendIn"
    assert ref(rec["responses"]["200"]["content"][ok]["schema"]) == "RecommendOut"
    batch = paths["/v1/features/batch"]["post"]
    assert ref(batch["requestBody"]["content"][ok]["schema"]) == "BatchIn"
    assert ref(batch["responses"]["200"]["content"][ok]["schema"]) == "BatchOut"
    infer = paths["/v1/agents/{agent_id}/infer"]["post"]
    assert ref(infer["responses"]["200"]["content"][ok]["schema"]) == "InferOut"
    assert "events" in infer["requestBody"]["content"][ok]["schema"]["properties"]
    feedback = paths["/v1/feedback"]["post"]
    assert ref(feedback["requestBody"]["content"][ok]["schema"]) == "FeedbackIn"
    assert ref(feedback["responses"]["202"]["content"][ok]["schema"]) == "AcceptedOut"
    delete = paths["/v1/users/{user_id}"]["delete"]
    assert ref(delete["responses"]["202"]["content"][ok]["schema"]) == "DeletedOut"
    fresh = paths["/v1/freshness"]["get"]
    assert ref(fresh["responses"]["200"]["content"][ok]["schema"]) == "FreshnessOut"
    user_fresh = paths["/v1/users/{user_id}/freshness"]["get"]
    assert ref(user_fresh["responses"]["200"]["content"][ok]["schema"]) == "UserFreshnessOut"
    assert {"401", "404", "422"} <= set(user_fresh["responses"])
    for path, item in paths.items():
        for operation in item.values():
            secured = "security" in operation
            assert secured == path.startswith("/v1"), path
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
