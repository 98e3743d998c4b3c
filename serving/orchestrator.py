"""The orchestrator client: one OpenAI-compatible chat call, bounded, retried, behind a breaker.

It owns the HTTP exchange with the orchestrator (`POST {url}/v1/chat/completions`, sent
straight to an httpx transport),
the reading of its answer, and the circuit breaker that stops calling a peer
that keeps failing. It never builds prompts and never decides on a fallback:
it returns an `Answer` or raises `OrchestratorError` whose `reason` says why.

Bounds: each attempt has its own timeout, and the whole call (retries
included) a total budget; a timeout, a transport error or a 5xx is retried
(`retries` times, default once); a 4xx or an unreadable answer is not, except a 400 to
a request with `response_format` (structured output), which is asked once more without it.
The answer is read by `serving.answer.read_tip` (JSON, fenced or embedded JSON, or a plain
sentence as an `advice` tip). The
breaker counts calls, not attempts: a call that failed after its retry is one
failure.

Breaker states::

    closed ──N consecutive failed calls──▶ open ──cooldown elapsed──▶ half_open
      ▲                                      ▲                            │
      └────────── trial call succeeded ──────┼────── trial call failed ◀──┘

While half-open exactly one trial call goes through; the others are refused
as if open. The breaker is used from one event loop and needs no lock.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from yarl import URL

from serving import answer
from serving.answer import TipKind
from serving.exceptions import BreakerOpenError, OrchestratorError
from serving.orchestrator_transport import OrchestratorTransport

MAX_ANSWER_BYTES = 64 * 1024
USER_AGENT = "oo-feature-engine"
TIP_KINDS = answer.TIP_KINDS
MAX_TIP_CHARS = answer.MAX_TIP_CHARS


class BreakerState(enum.Enum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"

    @property
    def gauge_value(self) -> int:
        """0 closed, 1 half-open, 2 open (the `oo_orchestrator_breaker_state` gauge)."""
        return {"closed": 0, "half_open": 1, "open": 2}[self.value]


class CircuitBreaker:
    """Closed -> open after `failure_threshold` straight failures -> half-open after `cooldown_s`.

    >>> now = [0.0]
    >>> b = CircuitBreaker(failure_threshold=2, cooldown_s=10, clock=lambda: now[0])
    >>> b.allow(); b.record_failure(); b.allow(); b.record_failure()
    True
    True
    >>> b.state.value, b.allow()
    ('open', False)
    >>> now[0] = 10.0
    >>> b.state.value, b.allow(), b.allow()
    ('half_open', True, False)
    >>> b.record_success(); b.state.value
    'closed'
    """

    def __init__(
        self,
        *,
        failure_threshold: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1; got {failure_threshold}")
        if cooldown_s <= 0:
            raise ValueError(f"cooldown_s must be > 0; got {cooldown_s}")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._trial_in_flight or self._clock() - self._opened_at >= self.cooldown_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def retry_in(self) -> float:
        """Seconds until the breaker lets a trial call through (0 when it would now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown_s - self._clock())

    def allow(self) -> bool:
        """May a call go out now? In half-open, True once (the trial) until its outcome."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_in_flight = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._trial_in_flight or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
        self._trial_in_flight = False


@dataclass(frozen=True, slots=True)
class Answer:
    """The orchestrator's tip: one sentence and whether it is advice or a to-do."""

    text: str
    kind: TipKind


def parse_answer(payload: bytes | str) -> Answer:
    """Read a chat-completions response; raise `OrchestratorError("garbage")` unless usable.

    `choices[0].message.content` is read by `serving.answer.read_tip`: a JSON tip (whole,
    fenced, or inside prose), else a plain sentence as an `advice` tip, bounded and trimmed.
    Garbage is a response that is not a chat completion, or content without a usable sentence.

    >>> content = json.dumps({"text": "Walk.", "kind": "advice"})
    >>> parse_answer(json.dumps({"choices": [{"message": {"content": content}}]}))
    Answer(text='Walk.', kind='advice')
    >>> plain = "Close the two oldest overdue tasks before lunch."
    >>> parse_answer(json.dumps({"choices": [{"message": {"content": plain}}]}))
    Answer(text='Close the two oldest overdue tasks before lunch.', kind='advice')
    """
    if len(payload) > MAX_ANSWER_BYTES:
        raise OrchestratorError("garbage", f"answer of {len(payload)} bytes is too large")
    try:
        body: Any = json.loads(payload)
        content = body["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise OrchestratorError(
            "garbage", "expected an OpenAI chat completion with choices[0].message.content"
        ) from exc
    if not isinstance(content, str):
        raise OrchestratorError("garbage", "message content is not a string")
    try:
        tip = answer.read_tip(content)
    except answer.AnswerError as exc:
        raise OrchestratorError("garbage", str(exc)) from exc
    return Answer(text=tip.text, kind=tip.kind)


OutcomeObserver = Callable[[str, float], None]
"""Called once per call with its outcome (`ok` or an `OrchestratorError.reason`) and seconds."""


class OrchestratorClient:
    """Asks the orchestrator for one tip through a shared httpx transport (its connection pool).

    The request goes straight to the transport (`httpx.AsyncHTTPTransport`, or any
    `httpx.AsyncBaseTransport`: tests hand in their own), not through an `httpx.AsyncClient`:
    the client's layers (URL merging, auth and redirect handling, cookies, default headers)
    cost about a third of the call's CPU and do nothing for this one fixed request (ADR 0027).
    No proxy is taken from the environment (as `trust_env=False`).
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        *,
        base_url: str,
        model: str,
        breaker: CircuitBreaker,
        timeout_s: float,
        budget_s: float,
        retries: int = 1,
        api_key: str | None = None,
        observe: OutcomeObserver | None = None,
    ) -> None:
        self._transport = transport
        self.url = base_url.rstrip("/") + "/v1/chat/completions"
        self._url = httpx.URL(self.url)
        self._yarl_url = URL(self.url)
        self.model = model
        self.breaker = breaker
        self.timeout_s = timeout_s
        self.budget_s = budget_s
        self.retries = retries
        self._headers = [
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
            ("User-Agent", USER_AGENT),
        ]
        if api_key:
            self._headers.append(("Authorization", f"Bearer {api_key}"))
        # The names as httpx sends them (lower case), for the app's transport's `exchange`.
        self._plain_headers = {name.lower(): value for name, value in self._headers}
        self._observe = observe
        self.structured_output = True
        """Send `response_format`; turned off for good after the peer answers it with a 400."""

    async def _post(self, body: dict[str, Any], *, timeout_s: float) -> tuple[int, bytes]:
        """One attempt: (status, the whole answer). httpx's timeout and transport errors
        pass through."""
        content = orjson.dumps(body)
        if isinstance(self._transport, OrchestratorTransport):
            # The app's transport, without httpx's request and response objects (ADR 0053).
            return await self._transport.exchange(
                self._yarl_url, self._plain_headers, content, timeout_s=timeout_s
            )
        timeout = {"connect": timeout_s, "read": timeout_s, "write": timeout_s, "pool": timeout_s}
        request = httpx.Request(
            "POST",
            self._url,
            headers=self._headers,
            content=content,
            extensions={"timeout": timeout},
        )
        response = await self._transport.handle_async_request(request)
        try:
            content = await response.aread()
        finally:
            await response.aclose()
        return response.status_code, content

    async def complete(self, prompt: str) -> Answer:
        """The orchestrator's answer to `prompt`, or `OrchestratorError` within `budget_s`."""
        if not self.breaker.allow():
            error = BreakerOpenError(self.breaker.retry_in())
            self._report(error.reason, 0.0)
            raise error
        started = time.monotonic()
        outcome = "error"
        try:
            try:
                async with asyncio.timeout(self.budget_s):
                    answer = await self._attempts(prompt, deadline=started + self.budget_s)
            except TimeoutError as exc:
                raise OrchestratorError("timeout", f"no answer within {self.budget_s}s") from exc
        except OrchestratorError as exc:
            outcome = exc.reason
            raise
        else:
            outcome = "ok"
            return answer
        finally:
            # Cancellation (client gone) also ends the call: it counts as a failure
            # so a half-open trial never stays in flight forever.
            if outcome == "ok":
                self.breaker.record_success()
            else:
                self.breaker.record_failure()
            self._report(outcome, time.monotonic() - started)

    def request_body(self, prompt: str) -> dict[str, Any]:
        """The chat request: the prompt as one user message, structured output asked for
        (`response_format` with the tip's JSON schema) unless the peer refused it before."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
        }
        if self.structured_output:
            body["response_format"] = answer.RESPONSE_FORMAT
        return body

    async def _attempts(self, prompt: str, *, deadline: float) -> Answer:
        last: OrchestratorError | None = None
        attempts = self.retries + 1
        while attempts > 0:
            attempts -= 1
            body = self.request_body(prompt)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                status, content = await self._post(body, timeout_s=min(self.timeout_s, remaining))
            except httpx.TimeoutException as exc:
                last = OrchestratorError("timeout", type(exc).__name__)
                continue
            except httpx.TransportError as exc:
                last = OrchestratorError("unreachable", type(exc).__name__)
                continue
            if status >= 500:
                last = OrchestratorError("http_5xx", f"status {status}")
                continue
            if status == 400 and "response_format" in body:
                # A peer that does not know structured output: ask again without it, and
                # from now on (a plain answer is read too). One extra attempt, within budget.
                self.structured_output = False
                attempts += 1
                last = OrchestratorError("http_4xx", "status 400 with response_format")
                continue
            if status >= 400:
                raise OrchestratorError("http_4xx", f"status {status}")
            return parse_answer(content)
        raise last or OrchestratorError("timeout", f"no answer within {self.budget_s}s")

    def _report(self, outcome: str, seconds: float) -> None:
        if self._observe is not None:
            self._observe(outcome, seconds)
