"""Writing to a store that may be away: the same batch again, with capped jittered backoff.

The flow's store sink (`connectors.bytewax_io.StoreSink`) hands every batch to
`RetryingWriter.write`, which returns only once the store has taken the whole batch. While the
store is unreachable, stopped (SIGSTOP), restarting or refusing writes, every `StoreError` is
followed by a pause of `EqualJitterBackoff` (redis-py's: half of `min(cap, base * 2**n)` plus a
random part of the same size, so never zero and never above the cap) and the same batch again,
for as long as it takes. Blocking is the backpressure: the worker that waits for the store reads
nothing more, so memory stays bounded by one batch and Kafka keeps the backlog.

Retrying a batch is safe: every write is guarded by event time in the store (equal replaces), the
freshness stamps only move forward, and batches are retried in order, one at a time. The only
trace a retried, partly applied batch can leave twice is a lag sample (see ADR 0010).

It shows in the flow's metrics (`oo_flow_store_up`, `oo_flow_store_write_retries_total`,
`oo_flow_store_unavailable_seconds_total`) and in the log: one line when the store goes away,
one every `log_every_s` while it stays away, one when it is back. Never one per attempt.

What it must never do: drop, split or reorder a batch, or swallow an error that is not the
store's (a bug raises, so the flow stops and says where).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from redis.backoff import EqualJitterBackoff

from connectors import flow_metrics
from connectors.exceptions import StoreError

__all__ = ["RetryPolicy", "RetryingWriter"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failed store write is retried (ADR 0010)."""

    base_s: float = 0.1
    """The pause after the first failure is between base_s and 2 * base_s; it doubles after each."""
    cap_s: float = 5.0
    """No pause is longer than this: a store that is back is noticed within cap + one timeout."""
    log_every_s: float = 30.0
    """While the store stays away, one reminder line this often."""

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError(f"expected 0 < base_s <= cap_s; got {self.base_s}, {self.cap_s}")
        if self.log_every_s <= 0:
            raise ValueError(f"log_every_s: expected > 0; got {self.log_every_s}")


class RetryingWriter(Generic[T, R]):
    """Calls `write(batch)` until it succeeds and returns what it returned; `StoreError` means
    "again, after a pause".

    `where` names the store in log lines. `sleep` and `clock` are seams for unit tests.
    """

    def __init__(
        self,
        write: Callable[[T], R],
        *,
        where: str,
        policy: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._where = where
        self._policy = policy
        self._backoff = EqualJitterBackoff(cap=policy.cap_s, base=policy.base_s)
        self._sleep = sleep
        self._clock = clock
        self._down_since: float | None = None
        self._last_log = 0.0
        self._attempts = 0
        self._last_error = ""
        flow_metrics.STORE_UP.set(1)

    @property
    def store_up(self) -> bool:
        """False from the first failed write until a write succeeds again."""
        return self._down_since is None

    def write(self, batch: T) -> R:
        failures = 0
        while True:
            try:
                result = self._write(batch)
            except StoreError as exc:
                failures += 1
                self._failed(exc)
                self._sleep(self._backoff.compute(failures))
                continue
            if self._down_since is not None:
                self._recovered()
            return result

    def _failed(self, exc: StoreError) -> None:
        now = self._clock()
        self._attempts += 1
        self._last_error = str(exc)
        flow_metrics.STORE_RETRIES.inc()
        if self._down_since is None:
            self._down_since = self._last_log = now
            flow_metrics.STORE_UP.set(0)
            log.warning(
                "store %s unavailable, holding the batch and retrying with backoff "
                "(at most %g s apart): %s",
                self._where,
                self._policy.cap_s,
                exc,
            )
        elif now - self._last_log >= self._policy.log_every_s:
            self._last_log = now
            log.warning(
                "store %s still unavailable after %.0f s and %d attempts: %s",
                self._where,
                now - self._down_since,
                self._attempts,
                exc,
            )

    def _recovered(self) -> None:
        assert self._down_since is not None
        away_s = self._clock() - self._down_since
        flow_metrics.STORE_UP.set(1)
        flow_metrics.STORE_UNAVAILABLE_SECONDS.inc(away_s)
        log.warning(
            "store %s is back after %.1f s and %d failed attempts; the held batch is written",
            self._where,
            away_s,
            self._attempts,
        )
        self._down_since = None
        self._attempts = 0
