"""Every store call of the API goes through `StoreGuard.call`: bounded, timed, and cut off when
the store is away.

Why: store calls are blocking (redis-py, sqlite3), so they run in worker threads. Run in the
shared thread pool, a stalled Redis filled it and every route waited, even those that never
touch the store (`GET /v1/agents` took 13.9 s). Here:

- store calls run on their own `anyio.CapacityLimiter` (`OO_STORE_CONCURRENCY` threads), never
  on the default pool that the rest of the app (sync dependencies, background tasks, the event
  sink) uses;
- the caller waits at most `OO_STORE_TIMEOUT_S` (the wait for a thread included); a call that
  takes longer is abandoned (its thread ends with the client's own socket timeout) and the
  request answers 503 at once;
- a circuit breaker (`serving.orchestrator.CircuitBreaker`) opens after
  `OO_STORE_BREAKER_THRESHOLD` straight failures; while open, calls fail at once without
  touching the store, and after `OO_STORE_BREAKER_COOLDOWN_S` one trial call goes through,
  whose success closes it. Readiness probes (`probe=True`) always try the store, so `/ready`
  tells the truth and its success closes the breaker too: the API recovers by itself.

What it must never do: hold a request longer than its timeout, or retry a store call (a
request is cheap to retry; the client decides).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

from connectors.exceptions import StoreError
from serving.exceptions import StoreUnavailableError
from serving.orchestrator import CircuitBreaker

__all__ = ["StoreGuard"]

T = TypeVar("T")


class StoreGuard:
    def __init__(
        self,
        *,
        timeout_s: float,
        concurrency: int,
        breaker: CircuitBreaker,
        on_unavailable: Callable[[str], None] | None = None,
    ) -> None:
        if timeout_s <= 0 or concurrency < 1:
            raise ValueError(
                f"expected timeout_s > 0, concurrency >= 1; got {timeout_s}, {concurrency}"
            )
        self.timeout_s = timeout_s
        self.breaker = breaker
        self._concurrency = concurrency
        self._limiter: anyio.CapacityLimiter | None = None
        self._on_unavailable = on_unavailable

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        # Made on first use: a CapacityLimiter belongs to the event loop that runs the app.
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._concurrency)
        return self._limiter

    async def call(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        probe: bool = False,
        timeout_s: float | None = None,
        **kwargs: Any,
    ) -> T:
        """`fn(*args, **kwargs)` in a store thread; `StoreUnavailableError` when the store is
        away, slow beyond `timeout_s` (default `self.timeout_s`) or the breaker is open."""
        if not probe and not self.breaker.allow():
            raise self._unavailable(
                "circuit_open",
                "the feature store failed repeatedly; not asking it for "
                f"{self.breaker.retry_in():.1f} s",
            )
        bound = self.timeout_s if timeout_s is None else timeout_s
        succeeded = False
        try:
            with anyio.fail_after(bound):
                result = await anyio.to_thread.run_sync(
                    functools.partial(fn, *args, **kwargs),
                    limiter=self.limiter,
                    abandon_on_cancel=True,
                )
            succeeded = True
        except TimeoutError:
            raise self._unavailable(
                "timeout", f"no answer from the feature store within {bound:g} s"
            ) from None
        except StoreError as exc:
            raise self._unavailable("error", str(exc)) from exc
        except Exception:
            succeeded = True  # not the store's failure (e.g. a bad argument): it answered
            raise
        finally:
            # Every outcome is recorded, a cancellation too: a half-open breaker whose trial
            # call never reported back would refuse every call after it.
            if succeeded:
                self.breaker.record_success()
            else:
                self.breaker.record_failure()
        return result

    def _unavailable(self, why: str, detail: str) -> StoreUnavailableError:
        if self._on_unavailable is not None:
            self._on_unavailable(why)
        retry_after = max(1, round(self.breaker.retry_in()) or round(self.breaker.cooldown_s))
        return StoreUnavailableError(detail, why=why, retry_after_s=retry_after)
