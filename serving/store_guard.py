"""Every store call of the API goes through `StoreGuard.call`: bounded, timed, and cut off when
the store is away.

Why: store calls are blocking (redis-py, sqlite3), so they run in worker threads. Run in the
shared thread pool, a stalled Redis filled it and every route waited, even those that never
touch the store (`GET /v1/agents` took 13.9 s). Here:

- store calls run on threads of their own (`OO_STORE_CONCURRENCY` of them, a
  `ThreadPoolExecutor` handed to the event loop's `run_in_executor`), never on the default
  pool that the rest of the app (sync dependencies, background tasks) uses; an executor hop
  costs about half the CPU of anyio's `to_thread` with a limiter and a cancel scope (ADR 0027);
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

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

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
        self._executor: ThreadPoolExecutor | None = None
        self._on_unavailable = on_unavailable

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The store threads (made on first use, again after `close`)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self._concurrency, thread_name_prefix="oo-store"
            )
        return self._executor

    def close(self) -> None:
        """Let the store threads end once idle (a call still running ends with its client's
        timeout); a later call starts new ones."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

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
        away, slow beyond `timeout_s` (default `self.timeout_s`; the wait for a free store
        thread included) or the breaker is open."""
        if not probe and not self.breaker.allow():
            raise self._unavailable(
                "circuit_open",
                "the feature store failed repeatedly; not asking it for "
                f"{self.breaker.retry_in():.1f} s",
            )
        bound = self.timeout_s if timeout_s is None else timeout_s
        succeeded = False
        try:
            loop = asyncio.get_running_loop()
            # Abandoned at the bound: the thread finishes (or fails) on its own, unawaited.
            future = loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))
            async with asyncio.timeout(bound):
                result = await future
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
