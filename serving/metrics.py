"""Prometheus metrics of one app, in its own `CollectorRegistry` (tests build many apps).

Series (labels in braces):

- `oo_api_request_duration_seconds{method, route, status}`: histogram by route
  *template* (`/v1/users/{user_id}/features`), never the raw path; `method` is one of the
  nine standard methods or `other`;
- `oo_orchestrator_request_duration_seconds{outcome}`: histogram of whole calls;
- `oo_orchestrator_calls_total{outcome}`: `ok`, `timeout`, `unreachable`,
  `http_5xx`, `http_4xx`, `garbage`, `breaker_open`, `error`;
- `oo_tip_fallbacks_total{reason}`: tips served from the fallback, by reason;
- `oo_tips_served_total{source}`: `orchestrator`, `fallback`, `none`;
- `oo_orchestrator_breaker_state`: 0 closed, 1 half-open, 2 open (read at scrape time);
- `oo_store_breaker_state`: the feature store's breaker, 0 closed, 1 half-open, 2 open;
- `oo_store_unavailable_total{why}`: store calls answered 503: `timeout`, `error`,
  `circuit_open` (refused without asking the store);
- `oo_events_failed_total{kind}`: feedback or deletion events the sink could not deliver;
- `oo_ledger_failed_total{what}`: tips or reactions (`tip`, `reaction`) not recorded in the
  tip ledger (store away);
- `oo_ledger_worker_batch_cpu_seconds` (histogram, one sample per batch) and
  `oo_ledger_worker_tips_total`: CPU time of the tip ledger's worker thread (building and
  recording entries, off the request path, but holding the GIL meanwhile) and the tips it
  handled, so the ledger's own cost per tip and per batch can be read off a running API;
- `oo_freshness_compliance{agent}`: share of active users within the agent's freshness SLA,
  `oo_freshness_breaching{agent}` (1 while below `OO_FRESHNESS_OBJECTIVE`) and
  `oo_freshness_lag_p99_ms{agent}`, set by the background freshness check;
- `oo_stamper_skipped_keys_total{reason}`: ingested messages the freshness stamper did not
  stamp: `no_key`, `not_utf8`, `invalid_user_id` (never a user, never in `/v1/freshness`);
- `oo_store_lost_data`: 1 while the store's identity marker is gone (wiped or replaced),
  `oo_store_refilling`: 1 while the store is marked `filling` (set by each `/ready` probe).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED_ROUTE = "<unmatched>"
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
OTHER_METHOD = "other"
"""The `method` label of any method outside `KNOWN_METHODS` (h11 accepts any token)."""


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "oo_api_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.orchestrator_seconds = Histogram(
            "oo_orchestrator_request_duration_seconds",
            "Orchestrator call latency (retries included) by outcome.",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.orchestrator_calls = Counter(
            "oo_orchestrator_calls",
            "Orchestrator calls by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "oo_tip_fallbacks",
            "Tips served from the fallback, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.ledger_failed = Counter(
            "oo_ledger_failed",
            "Tips or reactions not recorded in the tip ledger, by what.",
            ["what"],
            registry=self.registry,
        )
        self.ledger_worker_cpu = Histogram(
            "oo_ledger_worker_batch_cpu_seconds",
            "CPU time of the tip ledger's worker thread per batch it records.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.05),
            registry=self.registry,
        )
        self.ledger_worker_tips = Counter(
            "oo_ledger_worker_tips",
            "Tips handled by the tip ledger's worker thread (recorded or failed).",
            registry=self.registry,
        )
        self.tips = Counter(
            "oo_tips_served",
            "Recommendations answered, by tip source.",
            ["source"],
            registry=self.registry,
        )
        self.breaker_state = Gauge(
            "oo_orchestrator_breaker_state",
            "Orchestrator circuit breaker: 0 closed, 1 half-open, 2 open.",
            registry=self.registry,
        )
        self.store_breaker_state = Gauge(
            "oo_store_breaker_state",
            "Feature store circuit breaker: 0 closed, 1 half-open, 2 open.",
            registry=self.registry,
        )
        self.store_unavailable = Counter(
            "oo_store_unavailable",
            "Store calls answered 503, by why: timeout, error, circuit_open.",
            ["why"],
            registry=self.registry,
        )
        self.events_failed = Counter(
            "oo_events_failed",
            "Events the sink could not deliver, by kind.",
            ["kind"],
            registry=self.registry,
        )

        self.freshness_compliance = Gauge(
            "oo_freshness_compliance",
            "Share of active users within the agent's freshness SLA (last check).",
            ["agent"],
            registry=self.registry,
        )
        self.freshness_breaching = Gauge(
            "oo_freshness_breaching",
            "1 while the agent's freshness compliance is below the objective (last check).",
            ["agent"],
            registry=self.registry,
        )
        self.freshness_lag_p99 = Gauge(
            "oo_freshness_lag_p99_ms",
            "p99 of computed_at - ingest_time over the agent's recent writes (last check).",
            ["agent"],
            registry=self.registry,
        )

        self.stamper_skipped = Counter(
            "oo_stamper_skipped_keys",
            "Ingested messages the stamper did not stamp, by reason: no_key, not_utf8, "
            "invalid_user_id.",
            ["reason"],
            registry=self.registry,
        )

        self.store_lost = Gauge(
            "oo_store_lost_data",
            "1 while the store's identity marker is gone: it lost its data (last /ready probe).",
            registry=self.registry,
        )
        self.store_refilling = Gauge(
            "oo_store_refilling",
            "1 while the store is marked filling: a refill is under way (last /ready probe).",
            registry=self.registry,
        )

    def observe_freshness(
        self, agent_id: str, *, compliance: float, breaching: bool, lag_p99_ms: int | None
    ) -> None:
        self.freshness_compliance.labels(agent_id).set(compliance)
        self.freshness_breaching.labels(agent_id).set(1 if breaching else 0)
        self.freshness_lag_p99.labels(agent_id).set(
            float("nan") if lag_p99_ms is None else lag_p99_ms
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        label = method if method in KNOWN_METHODS else OTHER_METHOD
        self.request_seconds.labels(label, route, str(status)).observe(seconds)

    def observe_orchestrator(self, outcome: str, seconds: float) -> None:
        self.orchestrator_calls.labels(outcome).inc()
        if outcome != "breaker_open":
            self.orchestrator_seconds.labels(outcome).observe(seconds)

    def count_stamper_skipped(self, reason: str, count: int) -> None:
        self.stamper_skipped.labels(reason).inc(count)

    def count_failed_event(self, kind: str) -> None:
        self.events_failed.labels(kind).inc()

    def track_breaker(self, state_value: Callable[[], float]) -> None:
        self.breaker_state.set_function(state_value)

    def track_store_breaker(self, state_value: Callable[[], float]) -> None:
        self.store_breaker_state.set_function(state_value)

    def count_store_unavailable(self, why: str) -> None:
        self.store_unavailable.labels(why).inc()


def route_template(scope: Any) -> str:
    """The matched route's template (`/v1/users/{user_id}/features`), never the raw path.

    The router leaves the matched route in the scope. Its `path` may lack the
    prefixes of the routers it was included through (FastAPI composes included
    routers lazily), so the template is the request path's leading segments (the
    static prefixes) followed by the route's own path, segment for segment.

    >>> class R: path = "/users/{user_id}/features"
    >>> route_template({"route": R(), "path": "/v1/users/users/features"})
    '/v1/users/{user_id}/features'
    >>> route_template({"path": "/nowhere"})
    '<unmatched>'
    """
    route_path = getattr(scope.get("route"), "path", None)
    if not route_path:
        return UNMATCHED_ROUTE
    own = route_path.count("/")
    segments = scope["path"].split("/")
    return "/".join(segments[: max(len(segments) - own, 1)]) + route_path


class RequestMetricsMiddleware:
    """Pure ASGI middleware timing every HTTP request by its matched route template."""

    def __init__(self, app: Any, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.observe_request(
                scope["method"], route_template(scope), status, time.perf_counter() - started
            )
