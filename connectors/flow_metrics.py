"""Prometheus metrics of the flow process (`oo-features flow --metrics-port`).

Counted in batches, never per event, so the bookkeeping stays off the hot
path.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterable
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.registry import Collector

from connectors.store.base import UserWrite

log = logging.getLogger(__name__)

EVENTS_IN = Counter("oo_flow_events_in_total", "Records read by the flow", ["topic"])
EVENTS_OUT = Counter(
    "oo_flow_events_out_total", "Valid events handed to the per-user fold", ["topic"]
)
DEADLETTERED = Counter(
    "oo_flow_events_deadlettered_total",
    "Records sent to the dead-letter topic or rejects file",
    ["topic"],
)
DROPPED = Counter(
    "oo_flow_events_dropped_total",
    "Valid events not folded in: late (beyond the allowed lateness), duplicate, or of a deleted user",
    ["reason"],
)
FOLD_ERRORS = Counter(
    "oo_flow_fold_errors_total",
    "Events whose fold raised (a bug): the user's state was rebuilt as before the event and "
    "the event dead-lettered",
)
DEADLETTER_TRUNCATED = Counter(
    "oo_flow_deadletters_truncated_total",
    "Dead letters whose value (or key) was cut to fit the dead-letter topic (header oo.truncated)",
)
CONSUMER_LAG = Gauge(
    "oo_flow_kafka_consumer_lag",
    "Messages in the partition not yet read by the flow (high watermark - next offset), "
    "updated about once a second while the partition is read",
    ["topic", "partition"],
)
STORE_REFILLS = Counter(
    "oo_flow_store_refills_total",
    "Refills of a store that lost its data (wiped or replaced), by reason (ADR 0008)",
    ["reason"],
)
WRITES = Counter("oo_flow_user_writes_total", "Coalesced per-user writes sent to the store")
HISTORY_REFUSED = Counter(
    "oo_flow_history_refused_total",
    "User writes the store refused because the flow's history of the user starts later than "
    "the stored features' (retention dropped part of it; ADR 0009)",
)
HISTORY_LOG_EVERY_S = 60.0
"""Refused writes are logged at most once per this many seconds (the first one at once)."""
LAG = Histogram(
    "oo_flow_feature_lag_seconds",
    "computed_at - ingest_time of each agent write (how long the engine took)",
    ["agent"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
STORE_UP = Gauge(
    "oo_flow_store_up",
    "1 while the store takes the flow's writes; 0 from a failed write until one succeeds",
)
STORE_RETRIES = Counter(
    "oo_flow_store_write_retries_total",
    "Store writes that failed and are retried (the same batch, after a backoff pause)",
)
STORE_UNAVAILABLE_SECONDS = Counter(
    "oo_flow_store_unavailable_seconds_total",
    "Time the flow waited for an unavailable store, counted when it is back",
)


_registered: set[type[Collector]] = set()


def serve(port: int, host: str = "127.0.0.1", *, collectors: Iterable[Collector] = ()) -> None:
    """Serve the default registry on `host`:`port`, with `collectors` added once per process
    (the flow's wiring adds those that read other packages, `flows.metrics`); call once per
    process.

    Loopback by default: the endpoint has no auth, so exposing it is an explicit choice
    (`OO_FLOW_METRICS_HOST`).
    """
    for collector in collectors:
        if type(collector) not in _registered:
            REGISTRY.register(collector)
            _registered.add(type(collector))
    start_http_server(port, addr=host)


def count_read(topic: str, records: int, rejected: int) -> None:
    """One batch read from `topic`: `records` in, of which `rejected` go to the dead letters."""
    EVENTS_IN.labels(topic).inc(records)
    if records > rejected:
        EVENTS_OUT.labels(topic).inc(records - rejected)
    if rejected:
        DEADLETTERED.labels(topic).inc(rejected)


def count_drops(reasons: Tally[str]) -> None:
    for reason, n in reasons.items():
        DROPPED.labels(reason).inc(n)


_written_users: set[str] = set()
"""Users this process wrote (the run summary's `users`)."""


def _total(counter: Counter) -> int:
    return int(
        sum(
            sample.value
            for family in counter.collect()
            for sample in family.samples
            if sample.name.endswith("_total")
        )
    )


def run_summary() -> dict[str, int]:
    """What this process did so far: events read, accepted, rejected (dead-lettered), users
    written and per-user writes (`oo-features flow` prints it when it ends)."""
    read, rejected = _total(EVENTS_IN), _total(DEADLETTERED)
    return {
        "events": read,
        "accepted": read - rejected,
        "rejected": rejected,
        "users": len(_written_users),
        "writes": _total(WRITES),
    }


_lag_of: dict[str, Any] = {}
"""`LAG`'s child per agent id: `labels()` costs more than the `observe()` it precedes."""


def observe_writes(writes: list[UserWrite]) -> None:
    WRITES.inc(len(writes))
    _written_users.update(write.user_id for write in writes)
    lags: dict[str, list[int]] = {}
    for write in writes:
        for agent_id, agent in write.agents.items():
            lag = agent.computed_at_ms - agent.ingest_time_ms
            values = lags.get(agent_id)
            if values is None:
                lags[agent_id] = [lag]
            else:
                values.append(lag)
    lag_of = _lag_of
    for agent_id, values in lags.items():
        child = lag_of.get(agent_id)
        if child is None:
            child = lag_of[agent_id] = LAG.labels(agent_id)
        _observe_all(child, [max(0, lag) / 1000 for lag in values])


def _observe_all(child: Any, amounts: list[float]) -> None:
    """`child.observe(a)` for every amount, as one update per bucket: a write's agents cost
    a list append each, not a locked histogram update each (ADR 0039). The buckets are the
    ones `observe` picks (the first upper bound >= the amount); the sum is added once per
    batch (the same to float rounding)."""
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if bounds is None or buckets is None or total is None:  # another prometheus_client
        for amount in amounts:
            child.observe(amount)
        return
    counts = [0] * len(bounds)
    for amount in amounts:
        counts[bisect_left(bounds, amount)] += 1
    total.inc(sum(amounts))
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)


class _RefusalLog:
    """What the history guard refused since the last log line (rate-limited reporting)."""

    def __init__(self) -> None:
        self.users: set[str] = set()
        self.writes = 0
        self.total = 0
        self.logged_at = float("-inf")


_refusals = _RefusalLog()


def count_history_refused(user_ids: list[str]) -> None:
    """The store refused these users' writes (history guard): count them, log now and then."""
    HISTORY_REFUSED.inc(len(user_ids))
    _refusals.writes += len(user_ids)
    _refusals.total += len(user_ids)
    if len(_refusals.users) < 100_000:
        _refusals.users.update(user_ids)
    report_history_refused()


def report_history_refused(*, force: bool = False) -> None:
    """Log what was refused since the last line, at most once per `HISTORY_LOG_EVERY_S`
    (`force`: now, e.g. when the flow stops)."""
    r = _refusals
    now = time.monotonic()
    if not r.writes or (not force and now - r.logged_at < HISTORY_LOG_EVERY_S):
        return
    sample = ", ".join(sorted(r.users)[:5])
    log.warning(
        "the store refused %d writes of %d users (%d writes in total; e.g. %s): the topics no "
        "longer hold the whole history their stored features were computed from (retention "
        "dropped its start), so the stored features are kept and these users are not updated. "
        "To bring them up to date, run the flow from its recovery state (--recovery-dir), or "
        "rebuild the store from a full export of the history (docs/adr/0009). "
        "Metric: oo_flow_history_refused_total",
        r.writes,
        len(r.users),
        r.total,
        sample,
    )
    r.users.clear()
    r.writes = 0
    r.logged_at = now
