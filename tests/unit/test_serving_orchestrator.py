"""The orchestrator client against a real loopback peer: parsing, retry, budget, breaker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from serving.answer import RESPONSE_FORMAT
from serving.exceptions import BreakerOpenError, OrchestratorError
from serving.orchestrator import (
    Answer,
    BreakerState,
    CircuitBreaker,
    OrchestratorClient,
    parse_answer,
)
from serving.orchestrator_transport import OrchestratorTransport
from tests.orchestrator_peer import OrchestratorPeer


def completion(content: Any) -> str:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '{"text": "Walk for 5 minutes.", "kind": "advice"}',
            Answer("Walk for 5 minutes.", "advice"),
        ),
        ('  {"text": " File the report. ", "kind": "todo"} ', Answer("File the report.", "todo")),
        ('```json\n{"text": "Stretch.", "kind": "advice"}\n```', Answer("Stretch.", "advice")),
        # A real model's other answers: prose around the JSON, and a plain sentence.
        (
            'Here is your tip:\n```json\n{"text": "Stretch.", "kind": "todo"}\n```\nGood luck!',
            Answer("Stretch.", "todo"),
        ),
        ('Sure! {"text": "Call Ana.", "kind": "todo"}', Answer("Call Ana.", "todo")),
        (
            "Close the two oldest overdue tasks before lunch.",
            Answer("Close the two oldest overdue tasks before lunch.", "advice"),
        ),
        ("Sure! Drink water.", Answer("Sure! Drink water.", "advice")),
    ],
)
def test_parse_answer_accepts_the_contract(content: str, expected: Answer) -> None:
    assert parse_answer(completion(content)) == expected


@pytest.mark.parametrize(
    "payload",
    [
        "not json at all",
        json.dumps({"choices": []}),
        json.dumps({"error": "x"}),
        completion(None),
        completion(""),
        completion("  ```\n ... \n```  "),
        completion('{"answer": null}'),
        completion('Here: {"text": "", "kind": "advice"}'),
        completion('{"text": "unfinished'),
        completion('["text", "kind"]'),
        completion('{"text": "", "kind": "advice"}'),
        completion('{"text": "Go.", "kind": "command"}'),
        completion('{"text": 5, "kind": "todo"}'),
        completion(json.dumps({"text": "x" * 601, "kind": "todo"})),
    ],
)
def test_parse_answer_calls_anything_else_garbage(payload: str) -> None:
    with pytest.raises(OrchestratorError) as caught:
        parse_answer(payload)
    assert caught.value.reason == "garbage"


@pytest.fixture
def peer() -> Iterator[OrchestratorPeer]:
    with OrchestratorPeer(answer={"text": "Take a walk.", "kind": "advice"}) as running:
        yield running


TRANSPORTS: dict[str, Any] = {
    "httpx": httpx.AsyncHTTPTransport,
    "aiohttp": OrchestratorTransport,  # what the app uses (ADR 0034)
}
_transport = ["httpx"]


@pytest.fixture(autouse=True, params=sorted(TRANSPORTS))
def transport(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs through httpx's transport and through the app's (aiohttp's)."""
    _transport[0] = request.param
    yield request.param
    _transport[0] = "httpx"


def call(
    url: str,
    breaker: CircuitBreaker | None = None,
    *,
    timeout_s: float = 1.0,
    budget_s: float = 2.0,
    outcomes: list[str] | None = None,
) -> Answer:
    async def go() -> Answer:
        async with TRANSPORTS[_transport[0]]() as http:
            client = OrchestratorClient(
                http,
                base_url=url,
                model="tip-generator",
                breaker=breaker or CircuitBreaker(failure_threshold=5, cooldown_s=30),
                timeout_s=timeout_s,
                budget_s=budget_s,
                api_key="orch-key",
                observe=(lambda outcome, _: outcomes.append(outcome))
                if outcomes is not None
                else None,
            )
            return await client.complete("the prompt")

    return asyncio.run(go())


def test_a_good_answer(peer: OrchestratorPeer) -> None:
    outcomes: list[str] = []
    assert call(peer.url, outcomes=outcomes) == Answer("Take a walk.", "advice")

    assert peer.requests == 1
    assert peer.bodies[0] == {
        "model": "tip-generator",
        "messages": [{"role": "user", "content": "the prompt"}],
        "response_format": RESPONSE_FORMAT,
    }
    schema = peer.bodies[0]["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["text", "kind"]
    assert schema["properties"]["kind"]["enum"] == ["advice", "todo"]
    assert peer.headers[0]["Authorization"] == "Bearer orch-key"
    assert outcomes == ["ok"]


def test_5xx_is_retried_once(peer: OrchestratorPeer) -> None:
    peer.mode = "error"
    with pytest.raises(OrchestratorError) as caught:
        call(peer.url)
    assert caught.value.reason == "http_5xx"
    assert peer.requests == 2


def test_4xx_is_not_retried(peer: OrchestratorPeer) -> None:
    peer.mode, peer.status_on_error = "error", 404
    with pytest.raises(OrchestratorError) as caught:
        call(peer.url)
    assert caught.value.reason == "http_4xx"
    assert peer.requests == 1


def test_garbage_is_not_retried(peer: OrchestratorPeer) -> None:
    peer.mode = "garbage"
    with pytest.raises(OrchestratorError) as caught:
        call(peer.url)
    assert caught.value.reason == "garbage"
    assert peer.requests == 1


def test_a_hang_ends_within_the_budget(peer: OrchestratorPeer) -> None:
    peer.mode = "hang"
    with pytest.raises(OrchestratorError) as caught:
        call(peer.url, timeout_s=0.3, budget_s=0.5)

    # A hanging peer can only end as a timeout; the retry got what was left of the budget.
    assert caught.value.reason == "timeout"
    assert peer.requests == 2  # timed out at 0.3 s, retried with the 0.2 s left


def test_a_closed_port_is_unreachable() -> None:
    with OrchestratorPeer() as gone:
        url = gone.url
    with pytest.raises(OrchestratorError) as caught:
        call(url)
    assert caught.value.reason == "unreachable"


def test_open_breaker_sends_nothing(peer: OrchestratorPeer) -> None:
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=60)
    peer.mode = "error"
    for _ in range(2):
        with pytest.raises(OrchestratorError):
            call(peer.url, breaker)
    assert breaker.state is BreakerState.OPEN
    sent = peer.requests

    outcomes: list[str] = []
    with pytest.raises(BreakerOpenError):
        call(peer.url, breaker, outcomes=outcomes)
    assert peer.requests == sent
    assert outcomes == ["breaker_open"]


def test_a_peer_without_structured_output_is_asked_again_without_it(
    peer: OrchestratorPeer,
) -> None:
    peer.reject_response_format = True
    peer.answer = "Close the two oldest overdue tasks before lunch."
    outcomes: list[str] = []

    got = call(peer.url, outcomes=outcomes)

    assert got == Answer("Close the two oldest overdue tasks before lunch.", "advice")
    assert [("response_format" in body) for body in peer.bodies] == [True, False]
    assert outcomes == ["ok"]
