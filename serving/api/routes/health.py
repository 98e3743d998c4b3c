"""Liveness and readiness (no auth: probes carry no token)."""

from __future__ import annotations

from collections.abc import Callable

import anyio
from fastapi import APIRouter, status
from fastapi.responses import JSONResponse

from connectors.exceptions import ConnectorError
from serving.api.deps import ProducerDep, SettingsDep, StoreDep
from serving.api.models import HealthOut, ReadyOut
from serving.exceptions import EventSinkError

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
    except (ConnectorError, EventSinkError) as exc:
        return f"unreachable: {exc}"
    return said or "ok"


@router.get(
    "/ready",
    response_model=ReadyOut,
    summary="The store answers and the event log (Kafka, or the file when disabled) is usable",
    responses={503: {"model": ReadyOut, "description": "Not ready; `reason` says why."}},
)
async def ready(
    settings: SettingsDep, store: StoreDep, sink: ProducerDep
) -> ReadyOut | JSONResponse:
    bound = settings.ready_timeout_s
    store_state = await _probe(store.ping, bound)
    producer_state = await _probe(lambda: sink.check(timeout_s=bound), bound + 0.5)
    reasons = [
        f"{name} {state}"
        for name, state in (("store", store_state), ("producer", producer_state))
        if state.startswith("unreachable")
    ]
    if reasons:
        body = ReadyOut(
            status="not_ready",
            store=store_state,
            producer=producer_state,
            reason="; ".join(reasons),
        )
        return JSONResponse(body.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return ReadyOut(status="ready", store=store_state, producer=producer_state)
