"""The flow's store writer: the same batch again after a capped, jittered pause, until it is taken.

A write function that fails a given number of times stands in for the store here; the real
outages (Redis stopped, killed) are in tests/e2e/test_outage_e2e.py.
"""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY

from connectors.exceptions import StoreError
from connectors.store_retry import RetryingWriter, RetryPolicy


class FlakyStore:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[list[str]] = []

    def write(self, batch: list[str]) -> None:
        self.calls.append(list(batch))
        if len(self.calls) <= self.failures:
            raise StoreError(f"Redis at x:1 timed out (write_batch): attempt {len(self.calls)}")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds + 5.0  # each failed attempt also waited for a socket timeout

    def __call__(self) -> float:
        return self.now


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_a_failing_batch_is_retried_whole_until_the_store_takes_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, clock = FlakyStore(failures=40), FakeClock()
    writer: RetryingWriter[list[str], None] = RetryingWriter(
        store.write,
        where="redis store",
        policy=RetryPolicy(base_s=0.1, cap_s=5.0, log_every_s=30.0),
        sleep=clock.sleep,
        clock=clock,
    )
    retries_before = metric("oo_flow_store_write_retries_total")
    with caplog.at_level(logging.WARNING, logger="connectors.store_retry"):
        writer.write(["u1", "u2"])
    assert store.calls == [["u1", "u2"]] * 41
    assert metric("oo_flow_store_write_retries_total") - retries_before == 40
    assert metric("oo_flow_store_up") == 1 and writer.store_up
    # Exponential, jittered, capped, never zero.
    assert all(0 < p <= 5.0 for p in clock.pauses)
    assert 0.1 <= clock.pauses[0] <= 0.2
    assert max(clock.pauses[-10:]) > 2.5
    # Rate-limited: 40 failures over ~330 s give one line down, ~10 reminders, one line back.
    lines = [r.getMessage() for r in caplog.records]
    assert "unavailable, holding the batch" in lines[0]
    assert "is back after" in lines[-1]
    assert len(lines) <= 2 + 330 / 30 + 1, lines


def test_the_gauge_says_down_while_retrying() -> None:
    seen: list[float] = []

    def write(batch: list[str]) -> None:
        seen.append(metric("oo_flow_store_up"))
        if len(seen) < 3:
            raise StoreError("unreachable")

    writer: RetryingWriter[list[str], None] = RetryingWriter(
        write, where="redis store", sleep=lambda s: None
    )
    writer.write(["u1"])
    assert seen == [1, 0, 0]
    assert metric("oo_flow_store_up") == 1


def test_an_error_that_is_not_the_stores_is_not_retried() -> None:
    calls = []

    def write(batch: list[str]) -> None:
        calls.append(batch)
        raise KeyError("a bug")

    writer: RetryingWriter[list[str], None] = RetryingWriter(write, where="x", sleep=lambda s: None)
    with pytest.raises(KeyError):
        writer.write(["u1"])
    assert len(calls) == 1


def test_policy_is_checked() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(base_s=2.0, cap_s=1.0)
