"""The API's store guard: bounded waits, a breaker that answers at once, probes that recover."""

from __future__ import annotations

import threading

import anyio
import pytest

from connectors.exceptions import StoreError
from serving.exceptions import StoreUnavailableError
from serving.orchestrator import CircuitBreaker
from serving.store_guard import StoreGuard


def guard(threshold: int = 2) -> StoreGuard:
    breaker = CircuitBreaker(failure_threshold=threshold, cooldown_s=60.0)
    return StoreGuard(timeout_s=0.2, concurrency=2, breaker=breaker)


def test_a_hanging_store_call_is_abandoned_and_the_breaker_then_answers_without_asking() -> None:
    stalled = threading.Event()
    calls: list[str] = []

    def hang() -> None:
        calls.append("hang")
        stalled.wait(30)

    g = guard()

    async def scenario() -> None:
        for _ in range(2):
            with pytest.raises(StoreUnavailableError, match=r"within 0\.2 s"):
                await g.call(hang)
        with pytest.raises(StoreUnavailableError, match="failed repeatedly") as refused:
            await g.call(hang)
        assert refused.value.retry_after_s >= 1

    try:
        anyio.run(scenario)
    finally:
        stalled.set()
    assert calls == ["hang", "hang"]  # the third call never reached the store


def test_a_store_error_is_unavailable_and_a_probe_success_closes_the_breaker() -> None:
    g = guard(threshold=1)

    def fail() -> None:
        raise StoreError("Redis at x:1 is unreachable (read_user): refused")

    async def scenario() -> None:
        with pytest.raises(StoreUnavailableError, match="unreachable"):
            await g.call(fail)
        with pytest.raises(StoreUnavailableError, match="failed repeatedly"):
            await g.call(lambda: "never asked")
        assert await g.call(lambda: "pong", probe=True) == "pong"
        assert await g.call(lambda: 42) == 42

    anyio.run(scenario)


def test_a_cancelled_trial_call_does_not_leave_the_breaker_stuck() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=0.05)
    g = StoreGuard(timeout_s=5.0, concurrency=2, breaker=breaker)
    stalled = threading.Event()

    def fail() -> None:
        raise StoreError("refused")

    async def scenario() -> None:
        with pytest.raises(StoreUnavailableError):
            await g.call(fail)
        await anyio.sleep(0.1)  # half-open: the next call is the trial
        with anyio.move_on_after(0.1):  # the client went away during the trial
            await g.call(stalled.wait, 30)
        await anyio.sleep(0.1)
        assert await g.call(lambda: "back") == "back"

    try:
        anyio.run(scenario)
    finally:
        stalled.set()
