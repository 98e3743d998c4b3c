"""The orchestrator circuit breaker: closed -> open -> half-open -> closed (or open again)."""

from __future__ import annotations

import pytest

from serving.orchestrator import BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(threshold: int = 3, cooldown: float = 10.0) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker(failure_threshold=threshold, cooldown_s=cooldown, clock=clock), clock


def test_starts_closed_and_allows() -> None:
    breaker, _ = make()

    assert breaker.state is BreakerState.CLOSED
    assert all(breaker.allow() for _ in range(10))


def test_opens_after_threshold_consecutive_failures() -> None:
    breaker, _ = make(threshold=3)

    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()

    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    assert breaker.retry_in() == pytest.approx(10.0)


def test_a_success_resets_the_count() -> None:
    breaker, _ = make(threshold=3)

    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()

    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 2


def test_half_open_after_cooldown_lets_exactly_one_trial_through() -> None:
    breaker, clock = make(threshold=1, cooldown=10.0)
    breaker.record_failure()

    clock.now += 9.99
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()

    clock.now += 0.01
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # everyone else waits for its outcome
    assert breaker.state is BreakerState.HALF_OPEN


def test_successful_trial_closes() -> None:
    breaker, clock = make(threshold=2, cooldown=5.0)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 5.0
    assert breaker.allow()

    breaker.record_success()

    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0
    assert breaker.allow() and breaker.allow()


def test_failed_trial_reopens_for_a_full_cooldown() -> None:
    breaker, clock = make(threshold=2, cooldown=5.0)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 7.0
    assert breaker.allow()

    breaker.record_failure()  # one failure in half-open is enough

    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_in() == pytest.approx(5.0)
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()


def test_gauge_values() -> None:
    assert [s.gauge_value for s in BreakerState] == [0, 1, 2]


@pytest.mark.parametrize(("threshold", "cooldown"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_rejects_nonsense_configuration(threshold: int, cooldown: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=threshold, cooldown_s=cooldown)
