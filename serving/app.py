"""The app factory: `create_app(settings=None, *, store=None, sink=None)`.

The factory wires settings, metrics, the breaker and the routers; the lifespan
opens what the app owns (the store from `OO_STORE_URL`, the event sink: Kafka
when `OO_KAFKA_BOOTSTRAP` is set, else the `OO_FEEDBACK_LOG` file; the one
shared httpx transport (the orchestrator's connection pool), the ingestion stamper when
Kafka is configured and `OO_FRESHNESS_STAMPER` is on, the background freshness check, the
after-answer workers of `serving.after`) and closes it on shutdown. A store or sink passed in belongs to the caller
and is not closed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator

import anyio
import httpx
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from connectors.exceptions import EventSinkError, StoreError
from connectors.kafka import EventProducer
from connectors.sinks import EventSink, FileEventSink, KafkaEventSink
from connectors.store.base import FeatureStore
from serving.after import AfterResponse
from serving.api.main import BODY_LIMITS, include_routes
from serving.exceptions import StoreUnavailableError
from serving.freshness import FreshnessMonitor
from serving.ledger_process import LedgerProcess, LedgerStoreConfig, open_api_store
from serving.limits import BodySizeLimit, V1Gate, bounded_validation_error
from serving.metrics import Metrics, RequestMetricsMiddleware
from serving.orchestrator import CircuitBreaker, OrchestratorClient
from serving.orchestrator_transport import OrchestratorTransport
from serving.settings import Settings
from serving.store_guard import StoreGuard
from serving.store_identity import StoreIdentityWatch

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"
POLL_INTERVAL_S = 0.2
GC_YOUNG_THRESHOLD = 20_000
"""The cyclic collector's generation-0 threshold while an app runs (Python's default: 700).
A collection of the youngest generation starts when allocations of tracked objects outnumber
deallocations by this much. A batch read of 100 users holds ~1,400 young containers at once
(hiredis's ~800 reply arrays, ~600 rows), so at 700 nearly every call paid a young collection
(~0.15-0.25 ms) and one in ~10 a generation-1 collection (~0.2-1.3 ms) on its path; what a
request allocates it frees when it answers, so at 20,000 (above a batch of 1,000 users, the
route's most) those collections stop. Cyclic garbage waits longer for its collection: at most
20,000 more objects (a few MB). ADR 0059."""


def _build_sink(settings: Settings, metrics: Metrics) -> EventSink:
    on_failure = metrics.count_failed_event
    bootstrap = settings.kafka_bootstrap
    if bootstrap is None:
        return FileEventSink(settings.feedback_log, on_failure=on_failure)

    def make_producer() -> EventProducer:
        return EventProducer(
            bootstrap=bootstrap,
            topic_prefix=settings.topic_prefix,
            timeout_s=settings.kafka_timeout_s,
            partitions=settings.partitions,
            settings=settings,
        )

    return KafkaEventSink(factory=make_producer, on_failure=on_failure)


def _ledger_process(settings: Settings, metrics: Metrics) -> LedgerProcess | None:
    """The tip ledger's own process (ADR 0053) for a Redis store the app opens itself, the
    ledger on and `OO_LEDGER_PROCESS` on; None: the ledger worker records in process."""
    from connectors.store import check_store_url

    if (
        not settings.ledger_process
        or settings.ledger_retention_ms <= 0
        or check_store_url(settings.store_url) == "sqlite"
    ):
        return None

    def on_batch(cpu_s: float, tips: int) -> None:
        metrics.ledger_worker_cpu.observe(cpu_s)
        metrics.ledger_worker_tips.inc(tips)

    return LedgerProcess(
        LedgerStoreConfig(
            store_url=settings.store_url,
            key_prefix=settings.key_prefix,
            timeout_s=settings.store_timeout_s,
            ledger_url=settings.ledger_store_url,
            retention_ms=settings.ledger_retention_ms,
        ),
        on_failed=lambda what: metrics.ledger_failed.labels(what).inc(),
        on_batch=on_batch,
    )


async def _poll_forever(sink: EventSink) -> None:
    """Serve delivery reports so failures are logged and counted while the app runs."""
    while True:
        await asyncio.sleep(POLL_INTERVAL_S)
        try:
            sink.poll()
        except Exception:  # a failing poll must not end the loop; it is logged
            log.exception("polling the event sink failed")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = app.state
    settings: Settings = state.settings
    owned_store = state.store is None
    owned_sink = state.sink is None
    if owned_store:
        state.store = open_api_store(
            settings.store_url,
            key_prefix=settings.key_prefix,
            timeout_s=settings.store_timeout_s,
            ledger_url=settings.ledger_store_url,
        )
    if owned_sink:
        state.sink = _build_sink(settings, state.metrics)
    bootstrap = settings.kafka_bootstrap
    owned_tombstones = state.tombstones is None and bootstrap is not None
    if owned_tombstones and bootstrap is not None:
        from connectors.tombstones import TombstoneLog

        state.tombstones = TombstoneLog(
            bootstrap,
            topic_prefix=settings.topic_prefix,
            partitions=settings.partitions,
            timeout_s=settings.kafka_timeout_s,
            settings=settings,
        )
    # The store's identity as first seen (ADR 0008); unreachable or slow now: the first
    # /ready probe does it.
    with contextlib.suppress(StoreError, TimeoutError), anyio.fail_after(settings.ready_timeout_s):
        await anyio.to_thread.run_sync(
            lambda: state.identity.check(state.store), abandon_on_cancel=True
        )
    # aiohttp's HTTP client behind httpx's interface (ADR 0034): a third of a recommend's CPU
    # less than httpx's own transport.
    http = OrchestratorTransport(
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20)
    )
    state.orchestrator = None
    if settings.orchestrator_url is not None:
        state.orchestrator = OrchestratorClient(
            http,
            base_url=settings.orchestrator_url,
            model=settings.orchestrator_model,
            breaker=state.breaker,
            timeout_s=settings.orchestrator_timeout_s,
            budget_s=settings.orchestrator_budget_s,
            retries=settings.orchestrator_retries,
            api_key=(
                settings.orchestrator_api_key.get_secret_value()
                if settings.orchestrator_api_key
                else None
            ),
            observe=state.metrics.observe_orchestrator,
        )
    if owned_sink and state.sink.kind == "kafka":
        # Connect (and create the topics) now rather than on the first request; a Kafka
        # that is down is not fatal: /ready says so and the sink retries on use.
        try:
            await anyio.to_thread.run_sync(
                lambda: state.sink.check(timeout_s=settings.kafka_timeout_s)
            )
        except EventSinkError as exc:
            log.warning("starting without Kafka: %s", exc)
    state.after = AfterResponse(
        sink=state.sink,
        store=state.store,
        metrics=state.metrics,
        ledger_retention_ms=settings.ledger_retention_ms,
        ledger_process=_ledger_process(settings, state.metrics) if owned_store else None,
    )
    poller = asyncio.create_task(_poll_forever(state.sink), name="event-sink-poll")
    state.stamper = None
    if settings.kafka_bootstrap is not None and settings.freshness_stamper:
        from connectors.freshness import IngestStamper

        state.stamper = IngestStamper(
            state.store,
            bootstrap=settings.kafka_bootstrap,
            topic_prefix=settings.topic_prefix,
            on_skipped=state.metrics.count_stamper_skipped,
            settings=settings,
        )
        state.stamper.start()
    from serving.api.deps import get_manifests

    checker = asyncio.create_task(
        state.freshness.run(lambda: state.store, get_manifests, call=state.store_guard.call),
        name="freshness-check",
    )
    # Everything made so far lives as long as the app (the registry, imported on first use, is
    # imported now): out of the cyclic collector's reach, a full collection no longer walks
    # ~100,000 start-up objects (81 ms on this project's machine, one pause in every few hundred
    # batch calls: their p99; ADR 0033). Frozen as they are, without a collection first (that
    # takes ~0.2 s per app, and tests start hundreds); thawed again at shutdown.
    get_manifests()
    gc.freeze()
    # Requests' objects die young, by reference counting: collections of the young
    # generation at every 700 net allocations cost batch calls more than they free.
    thresholds = gc.get_threshold()
    gc.set_threshold(max(GC_YOUNG_THRESHOLD, thresholds[0]), *thresholds[1:])
    log.info(
        "serving: store %s, events to %s, orchestrator %s",
        settings.store_url.split("://", 1)[0],
        state.sink.kind,
        "configured" if state.orchestrator else "not configured (fallback tips only)",
    )
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        for task in (checker, poller):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if state.stamper is not None:
            await anyio.to_thread.run_sync(state.stamper.stop)
            state.stamper = None
        await http.aclose()
        # Queued events and ledger records first, while the sink and the store are open.
        after, state.after = state.after, None
        await anyio.to_thread.run_sync(lambda: after.stop(timeout_s=settings.kafka_timeout_s))
        if owned_sink:
            state.sink.close(timeout_s=settings.kafka_timeout_s)
            state.sink = None
        if owned_tombstones:
            state.tombstones.close()
            state.tombstones = None
        state.store_guard.close()
        if owned_store:
            state.store.close()
            state.store = None


_STORE_LOG_EVERY_S = 10.0
_store_logged = [0.0]


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 with a JSON body saying why and when to retry (no internal address: the details
    go to the log, at most one line every 10 s)."""
    retry_after, why = 1, "error"
    if isinstance(exc, StoreUnavailableError):
        retry_after, why = exc.retry_after_s, exc.why
    now = time.monotonic()
    if now - _store_logged[0] >= _STORE_LOG_EVERY_S:
        _store_logged[0] = now
        log.error("feature store unavailable (on %s): %s", request.url.path, exc)
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        content={
            "detail": f"the feature store is unavailable ({why}); retry in {retry_after} s",
            "reason": "store_unavailable",
            "retry_after_s": retry_after,
        },
        headers={"Retry-After": str(retry_after)},
    )


def create_app(
    settings: Settings | None = None,
    *,
    store: FeatureStore | None = None,
    sink: EventSink | None = None,
) -> FastAPI:
    """A new app; `store` and `sink` (where the API's events go) are optional; given, they
    belong to the caller."""
    settings = settings if settings is not None else Settings()
    metrics = Metrics()
    breaker = CircuitBreaker(
        failure_threshold=settings.breaker_failure_threshold,
        cooldown_s=settings.breaker_cooldown_s,
    )
    metrics.track_breaker(lambda: breaker.state.gauge_value)
    store_breaker = CircuitBreaker(
        failure_threshold=settings.store_breaker_threshold,
        cooldown_s=settings.store_breaker_cooldown_s,
    )
    metrics.track_store_breaker(lambda: store_breaker.state.gauge_value)

    app = FastAPI(
        title="oO feature engine",
        version=API_VERSION,
        description="Per-user features, fresh snippets and tips. Every `/v1` route needs "
        "`Authorization: Bearer <OO_API_TOKEN>` when a token is configured.",
        lifespan=lifespan,
        # No Swagger UI or ReDoc: FastAPI loads them from a CDN into the API's origin. The
        # contract is `/openapi.json`; open it in any OpenAPI viewer.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.breaker = breaker
    app.state.store = store
    app.state.store_guard = StoreGuard(
        timeout_s=settings.store_timeout_s,
        concurrency=settings.store_concurrency,
        breaker=store_breaker,
        on_unavailable=metrics.count_store_unavailable,
    )
    app.state.sink = sink
    app.state.after = None
    app.state.orchestrator = None
    app.state.stamper = None
    app.state.identity = StoreIdentityWatch(metrics)
    app.state.tombstones = None
    app.state.freshness = FreshnessMonitor(
        objective=settings.freshness_objective,
        window_s=settings.freshness_window_s,
        check_interval_s=settings.freshness_check_interval_s,
        metrics=metrics,
    )
    # The last added runs first: metrics see every answer, then the size limit, then the
    # bearer check, all before any body is read (serving/limits.py).
    app.add_middleware(V1Gate, token=settings.api_token)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, routes=BODY_LIMITS)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    app.add_exception_handler(RequestValidationError, bounded_validation_error)
    app.add_exception_handler(StoreError, _store_unavailable)
    app.add_exception_handler(StoreUnavailableError, _store_unavailable)
    include_routes(app)
    return app
