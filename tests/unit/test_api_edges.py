"""The API's edges (issue 11): body limit, auth before the body, bounded 422, headers, docs,
weak tokens and the bounded `method` label. A real uvicorn on loopback, raw sockets where
httpx would not send what an attacker sends.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from connectors.store import open_store
from connectors.store.base import FeatureStore
from serving.api.models import BATCH_BODY_BYTES, MAX_INFER_BYTES, MAX_INFER_EVENTS
from serving.app import create_app
from serving.metrics import Metrics
from serving.settings import InsecureSettingsError, Settings, check_bind
from tests.orchestrator_peer import ApiServer
from tests.unit.test_serving_app import seed

TOKEN = "unit-test-token-0123456789"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeatureStore]:
    opened = open_store(f"sqlite:///{tmp_path / 'features.db'}", key_prefix="edges")
    yield opened
    opened.close()


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "store_url": f"sqlite:///{tmp_path / 'features.db'}",
        "kafka_bootstrap": None,
        "orchestrator_url": None,
        "api_token": TOKEN,
        "feedback_log": tmp_path / "feedback.jsonl",
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def server(store: FeatureStore, tmp_path: Path) -> Iterator[ApiServer]:
    with ApiServer(create_app(_settings(tmp_path), store=store)) as running:
        yield running


def _raw(url: str, request: bytes, *, timeout_s: float = 10.0) -> bytes:
    """Send `request` as is and return everything the server answers (until it closes)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
                length = [
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if length and len(rest) >= length[0]:
                    break
    return b"".join(chunks)


def test_a_declared_huge_body_is_refused_413_before_it_is_sent(server: ApiServer) -> None:
    # Only the headers go out: an answer proves the server did not wait for 64 MB of body.
    answer = _raw(
        server.url,
        b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {TOKEN}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 67108864\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"at most 16384 bytes" in answer


def test_a_chunked_body_past_the_limit_is_refused_413(server: ApiServer) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 1024

    with httpx.Client(trust_env=False) as client:
        answer = client.post(
            server.url + "/v1/recommend",
            content=chunks(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
    assert answer.status_code == 413


def test_the_largest_valid_batch_is_not_refused_by_the_body_limit(server: ApiServer) -> None:
    # 1,000 ids of 128 characters: about 130 KB, valid by the route's own model.
    asked = [f"{i:04d}" + "u" * 124 for i in range(1000)]
    with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as client:
        answer = client.post(
            "/v1/features/batch",
            json={"user_ids": asked},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        past = client.post(
            "/v1/features/batch",
            content=b"x" * (BATCH_BODY_BYTES + 1),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
    assert answer.status_code == 200, answer.text[:300]
    assert set(answer.json()["users"]) == set(asked)
    assert past.status_code == 413
    assert f"at most {BATCH_BODY_BYTES} bytes" in past.text


def test_an_infer_body_of_megabytes_reaches_its_route_and_its_own_limit_holds(
    server: ApiServer,
) -> None:
    event = {"eventId": "e", "userId": "u1", "occurredAt": "2025-01-01T00:00:00Z"}
    many = {"events": [event] * (MAX_INFER_EVENTS + 1)}
    with httpx.Client(base_url=server.url, trust_env=False, timeout=60) as client:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        too_many = client.post("/v1/agents/momentum/infer", json=many, headers=headers)
        too_big = client.post(
            "/v1/agents/momentum/infer",
            content=b" " * (MAX_INFER_BYTES + 1),
            headers={**headers, "Content-Type": "application/json"},
        )
        other = client.post(
            "/v1/feedback",
            content=b" " * (16 * 1024 + 1),
            headers={**headers, "Content-Type": "application/json"},
        )
    assert too_many.status_code == 422, too_many.text[:300]  # over 16 KiB, under 8 MiB
    assert too_big.status_code == 413
    assert other.status_code == 413  # the larger limits are per route, not global


def test_the_bearer_check_comes_before_the_body(server: ApiServer) -> None:
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        invalid_json = client.post(
            "/v1/recommend", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        wrong_token = client.post(
            "/v1/feedback", json={"nope": 1}, headers={"Authorization": "Bearer wrong"}
        )
    assert invalid_json.status_code == 401
    assert wrong_token.status_code == 401
    assert invalid_json.headers["www-authenticate"] == "Bearer"


def test_an_unauthenticated_body_is_never_read(server: ApiServer) -> None:
    # Content-Length under the limit, body never sent: the 401 comes without waiting for it.
    answer = _raw(
        server.url,
        b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


def test_a_422_is_bounded_and_never_echoes_the_input(store: FeatureStore, tmp_path: Path) -> None:
    settings = _settings(tmp_path, max_body_bytes=4 * 1024 * 1024)
    huge = "y" * 1_000_000
    body = {"user_id": huge, "context": huge, **{f"extra{i}": huge[:1000] for i in range(50)}}
    with (
        ApiServer(create_app(settings, store=store)) as running,
        httpx.Client(base_url=running.url, trust_env=False) as client,
    ):
        answer = client.post(
            "/v1/recommend", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert answer.status_code == 422
    assert len(answer.content) < 8 * 1024, len(answer.content)
    errors = answer.json()["detail"]
    assert 1 <= len(errors) <= 10
    assert all(set(error) == {"loc", "msg", "type"} for error in errors)
    assert "yyyyyyyyyy" not in answer.text


def test_per_user_answers_say_no_store(server: ApiServer, store: FeatureStore) -> None:
    seed(store)
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, trust_env=False
    ) as client:
        answers = [
            client.get("/v1/users/u-1/features"),
            client.get("/v1/users/u-1/freshness"),
            client.get("/v1/users/nobody/features"),
            client.get("/v1/freshness"),
            client.post("/v1/recommend", json={"user_id": "u-1"}),
            client.get("/v1/agents", headers={"Authorization": "Bearer wrong"}),
        ]
    for answer in answers:
        assert answer.headers.get("cache-control") == "no-store", answer.request.url


def test_no_docs_page_loads_a_third_party_script(server: ApiServer) -> None:
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        docs, redoc, spec = client.get("/docs"), client.get("/redoc"), client.get("/openapi.json")
    assert docs.status_code == 404
    assert redoc.status_code == 404
    assert "cdn.jsdelivr.net" not in docs.text + redoc.text
    assert spec.status_code == 200 and spec.json()["info"]["title"] == "oO feature engine"


@pytest.mark.parametrize(
    "token",
    ["changemechangeme", "aaaaaaaaaaaaaaaa", "abcdefghijklmnopqrst", "my-secret-api-key-2026"],
)
def test_a_weak_token_is_refused_for_a_public_bind(token: str) -> None:
    with pytest.raises(InsecureSettingsError, match="weak OO_API_TOKEN"):
        check_bind("0.0.0.0", SecretStr(token))
    check_bind("127.0.0.1", SecretStr(token))  # loopback: the old rule (16+, no placeholder)


def test_a_strong_token_binds_anywhere() -> None:
    check_bind("0.0.0.0", SecretStr("k7Vq2mXp9LrT4wZs8NcB"))
    check_bind("::", SecretStr("3f9c1a7e5b2d8f04c6a19e7b3d5f2a80"))


def test_invented_methods_share_one_label(store: FeatureStore, tmp_path: Path) -> None:
    # h11 (uvicorn's other parser) passes any token as a method; ASGI shows what it would.
    app = create_app(_settings(tmp_path), store=store)

    async def scrape() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            for i in range(5):
                await client.request(f"FOO{i}BAR", "/health")
            return (await client.get("/metrics")).text

    text = asyncio.run(scrape())
    assert "FOO0BAR" not in text
    assert 'method="other"' in text


def test_the_method_label_is_bounded() -> None:
    metrics = Metrics()
    for i in range(300):
        metrics.observe_request(f"M{i}", "/health", 405, 0.001)
    metrics.observe_request("GET", "/health", 200, 0.001)
    labels = {
        sample.labels["method"]
        for family in metrics.registry.collect()
        for sample in family.samples
        if "method" in sample.labels
    }
    assert labels == {"other", "GET"}
