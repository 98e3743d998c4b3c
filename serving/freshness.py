"""Freshness SLA monitoring: the background check and what it remembers.

Definitions (`serving/README.md`, "Freshness"): per user and agent, *lag* is how long the
engine took (`computed_at - ingest_time`), *age* how old what we serve is
(`now - computed_at`), *staleness* how long the user's newest events have waited for the flow
(0 when it is up to date). An agent's *compliance* is the share of active users whose
staleness is below the agent's `freshness_sla_seconds`; it *breaches* below the objective.

`FreshnessMonitor.check` asks the store for a summary (on Redis one short script call and a few
bounded reads, ADR 0040), records a history point, sets the Prometheus gauges and the
breaching set that `/ready` and `GET /v1/freshness` report. It reads only; it never changes what is served.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from connectors.clock import now_ms
from connectors.store.base import FeatureStore, FreshnessSummary
from features.model import Manifest
from serving.metrics import Metrics

log = logging.getLogger(__name__)

StoreCall = Callable[[Callable[[], Any]], Awaitable[Any]]
"""Runs a blocking store call off the event loop (`serving.store_guard.StoreGuard.call`)."""

HISTORY_POINTS = 360
"""History points kept (an hour at the default 10 s interval)."""
WORST_DEFAULT = 10


def sla_ms_by_agent(manifests: Mapping[str, Manifest]) -> dict[str, int]:
    return {agent_id: m.freshness_sla_seconds * 1000 for agent_id, m in manifests.items()}


def compliance(summary: FreshnessSummary, agent_id: str) -> float:
    """Share of active users within the agent's SLA; 1.0 without active users.

    >>> from connectors.store.base import FreshnessSummary
    >>> s = FreshnessSummary(0, 1, active_users=200, pending_users=5, stale_users={"a": 3},
    ...                      worst=[], lag={})
    >>> compliance(s, "a"), compliance(s, "b")
    (0.985, 1.0)
    """
    active = summary.active_users
    if active <= 0:
        return 1.0
    stale = min(summary.stale_users.get(agent_id, 0), active)
    return (active - stale) / active


@dataclass(frozen=True, slots=True)
class AgentPoint:
    lag_p50_ms: int | None
    lag_p99_ms: int | None
    compliance: float
    breaching: bool


@dataclass(frozen=True, slots=True)
class CheckPoint:
    t_ms: int
    agents: dict[str, AgentPoint]


@dataclass
class FreshnessMonitor:
    """What the background check concluded; shared by the routes through `app.state`."""

    objective: float
    window_s: int
    check_interval_s: float
    metrics: Metrics | None = None
    history: deque[CheckPoint] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    breaching: frozenset[str] = frozenset()
    checked_at_ms: int | None = None
    last_error: str | None = None

    @property
    def window_ms(self) -> int:
        return self.window_s * 1000

    def summarize(
        self,
        store: FeatureStore,
        manifests: Mapping[str, Manifest],
        *,
        at_ms: int,
        worst_n: int = WORST_DEFAULT,
    ) -> FreshnessSummary:
        return store.freshness_summary(
            now_ms=at_ms,
            window_ms=self.window_ms,
            sla_ms_by_agent=sla_ms_by_agent(manifests),
            worst_n=worst_n,
        )

    def record(self, summary: FreshnessSummary, manifests: Mapping[str, Manifest]) -> CheckPoint:
        """Judge every agent on `summary`; remember the point, the verdicts and the gauges."""
        agents: dict[str, AgentPoint] = {}
        for agent_id in sorted(manifests):
            share = compliance(summary, agent_id)
            lag = summary.lag.get(agent_id)
            agents[agent_id] = AgentPoint(
                lag_p50_ms=lag.p50_ms if lag else None,
                lag_p99_ms=lag.p99_ms if lag else None,
                compliance=share,
                breaching=share < self.objective,
            )
            if self.metrics is not None:
                self.metrics.observe_freshness(
                    agent_id,
                    compliance=share,
                    breaching=share < self.objective,
                    lag_p99_ms=agents[agent_id].lag_p99_ms,
                )
        point = CheckPoint(summary.now_ms, agents)
        self.history.append(point)
        newly = {a for a, p in agents.items() if p.breaching} - self.breaching
        cleared = self.breaching - {a for a, p in agents.items() if p.breaching}
        for agent_id in sorted(newly):
            log.warning(
                "freshness SLA breached by %s: %.2f%% of %d active users within SLA (objective "
                "%.2f%%)",
                agent_id,
                100 * agents[agent_id].compliance,
                summary.active_users,
                100 * self.objective,
            )
        for agent_id in sorted(cleared):
            log.info("freshness SLA of %s back within objective", agent_id)
        self.breaching = frozenset(a for a, p in agents.items() if p.breaching)
        self.checked_at_ms = summary.now_ms
        self.last_error = None
        return point

    async def check(
        self,
        store: FeatureStore,
        manifests: Mapping[str, Manifest],
        *,
        at_ms: int | None = None,
        call: StoreCall | None = None,
    ) -> CheckPoint:
        """One check; `call` runs the store call (the app's `StoreGuard.call`: bounded, its own
        threads), by default a plain worker thread."""
        at = now_ms() if at_ms is None else at_ms
        run = call if call is not None else anyio.to_thread.run_sync
        summary: FreshnessSummary = await run(
            lambda: self.summarize(store, manifests, at_ms=at, worst_n=0)
        )
        return self.record(summary, manifests)

    async def run(
        self,
        store: Callable[[], FeatureStore],
        manifests: Callable[[], Mapping[str, Manifest]],
        *,
        call: StoreCall | None = None,
    ) -> None:
        """Check now, then every `check_interval_s`, until cancelled; failures are logged."""
        while True:
            try:
                await self.check(store(), manifests(), call=call)
            except Exception as exc:  # a failing check must not end the loop
                if str(exc) != self.last_error:
                    log.error("freshness check failed: %s", exc)
                self.last_error = str(exc)
            await asyncio.sleep(self.check_interval_s)
