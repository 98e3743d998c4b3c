"""The flow's metrics that read `features`: added to the flow's Prometheus endpoint here, so
`connectors.flow_metrics` (the counters of the sources, sinks and fold) imports no feature code.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from connectors import flow_metrics
from features.inference import INFERENCE_ERRORS


class InferenceErrors(Collector):
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


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Serve the flow's metrics on `host`:`port` (`connectors.flow_metrics.serve`), inference
    errors included. Call once per process; a port in use raises `OSError`."""
    flow_metrics.serve(port, host, collectors=[InferenceErrors()])


__all__ = ["InferenceErrors", "serve"]
