"""Liveness and readiness (no auth: probes carry no token)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse

from connectors.exceptions import ConnectorError
from serving.api.deps import FreshnessDep, SettingsDep, SinkDep, StoreDep, StoreGuardDep
from serving.api.models import FreshnessReadyOut, HealthOut, ReadyOut, iso_ms
from serving.exceptions import StoreUnavailableError
from serving.store_identity import LOST, REFILLING

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut, summary="The process is alive")
async def health() -> HealthOut:
    return HealthOut()


async def _probe(check: Callable[[], str | None], seconds: float) -> str:
    """`ok` (or what the check says), or why it failed; never longer than `seconds`."""
    try:
        with anyio.fail_after(seconds):
            said = await anyio.to_thread.run_sync(check, abandon_on_cancel=True)
    except TimeoutError:
        return f"unreachable: no answer within {seconds}s"
    except ConnectorError as exc:  # EventSinkError included
        return f"unreachable: {exc}"
    return said or "ok"


def _stamper_state(request: Request) -> str:
    stamper = getattr(request.app.state, "stamper", None)
    if stamper is None:
        return "disabled"
    st = stamper.status
    if not st.running:
        return f"failing: {st.last_error}" if st.last_error else "stopped"
    if st.last_error:
        return f"failing: {st.last_error}"
    return "running" if st.assigned else "starting"


@router.get(
    "/ready",
    response_model=ReadyOut,
    summary="The store answers and holds its data (ADR 0008), and the event log (Kafka, or "
    "the file when disabled) is usable; the freshness check's verdict is reported, never a "
    "reason to be unready",
    responses={503: {"model": ReadyOut, "description": "Not ready; `reason` says why."}},
)
async def ready(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    guard: StoreGuardDep,
    sink: SinkDep,
    monitor: FreshnessDep,
) -> ReadyOut | JSONResponse:
    # The probes get 95 % of the bound: the rest is for building and sending the answer, so
    # /ready as a whole answers within OO_READY_TIMEOUT_S.
    bound = settings.ready_timeout_s * 0.95
    watch = request.app.state.identity

    async def store_probe() -> str:
        # Through the store guard (its own threads; a success closes its breaker), always
        # asking the store even while the breaker is open: /ready tells the truth. The probe
        # reads the store's identity marker (ADR 0008): reachable but wiped is not ready.
        try:
            return await guard.call(watch.check, store, probe=True, timeout_s=bound)
        except StoreUnavailableError as exc:
            return f"unreachable: {exc}"

    # Both probes at once: /ready answers within its bound, not the sum of two.
    store_state, producer_state = await asyncio.gather(
        store_probe(), _probe(lambda: sink.check(timeout_s=bound), bound)
    )
    freshness = FreshnessReadyOut(
        breaching=sorted(monitor.breaching),
        checked_at=None if monitor.checked_at_ms is None else iso_ms(monitor.checked_at_ms),
        checked_at_ms=monitor.checked_at_ms,
        stamper=_stamper_state(request),
    )
    reasons = [
        f"{name} {state}"
        for name, state in (("store", store_state), ("producer", producer_state))
        if state.startswith(("unreachable", LOST, REFILLING))
    ]
    if reasons:
        body = ReadyOut(
            status="not_ready",
            store=store_state,
            producer=producer_state,
            reason="; ".join(reasons),
            freshness=freshness,
        )
        return JSONResponse(body.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return ReadyOut(status="ready", store=store_state, producer=producer_state, freshness=freshness)
