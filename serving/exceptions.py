"""Errors raised inside `serving` (HTTP errors are made only in `serving/api`).

::

    ServingError
     ├── OrchestratorError        the orchestrator gave no usable tip; `reason` says why
     │    └── BreakerOpenError    the circuit breaker refused the call without trying
     └── StoreUnavailableError    the feature store did not answer in time, failed, or its
                                  breaker is open (`serving.store_guard`); answered as 503

An event the API could not write to its event log is `connectors.exceptions.EventSinkError`
(the sinks are connectors).
"""

from __future__ import annotations


class ServingError(Exception):
    """Base of every error raised by `serving`."""


class OrchestratorError(ServingError):
    """No usable answer from the orchestrator.

    `reason` is a short stable label (used in metrics and the fallback reason):
    `timeout`, `unreachable`, `http_5xx`, `http_4xx`, `garbage`, `breaker_open`.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"orchestrator {reason}" + (f": {detail}" if detail else ""))
        self.reason = reason
        self.detail = detail


class BreakerOpenError(OrchestratorError):
    def __init__(self, retry_in_s: float) -> None:
        super().__init__("breaker_open", f"retry in {retry_in_s:.1f}s")
        self.retry_in_s = retry_in_s


class StoreUnavailableError(ServingError):
    """The feature store cannot be used now; `retry_after_s` is when asking again makes sense."""

    def __init__(self, detail: str, *, why: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.why = why
        """`timeout`, `error` or `circuit_open`: what the client may be told (the detail,
        with addresses, is for the log only)."""
        self.retry_after_s = retry_after_s
