"""Prometheus metrics of the flow process (`oo-features flow --metrics-port`).

Counted in batches, never per event, so the bookkeeping stays off the hot
path.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from connectors.store.base import UserWrite
from features.inference import INFERENCE_ERRORS

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
LAG = Histogram(
    "oo_flow_feature_lag_seconds",
    "computed_at - ingest_time of each agent write (how long the engine took)",
    ["agent"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


class _InferenceErrors(Collector):
    """`oo_flow_inference_errors_total{agent}` from the features package's plain counter."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "oo_flow_inference_errors",
            "Agent inferences that raised (cold start served)",
            labels=["agent"],
        )
        for agent_id, count in sorted(INFERENCE_ERRORS.items()):
            family.add_metric([agent_id], count)
        yield family


_registered = False


def serve(port: int) -> None:
    """Serve the default registry on 0.0.0.0:`port` (call once per process)."""
    global _registered
    if not _registered:
        REGISTRY.register(_InferenceErrors())
        _registered = True
    start_http_server(port)


def count_topics(counter: Counter, topics: Iterable[str]) -> None:
    for topic, n in Tally(topics).items():
        counter.labels(topic).inc(n)


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


def observe_writes(writes: list[UserWrite]) -> None:
    WRITES.inc(len(writes))
    for write in writes:
        for agent_id, agent in write.agents.items():
            LAG.labels(agent_id).observe(max(0, agent.computed_at_ms - agent.ingest_time_ms) / 1000)
