"""The flow's Prometheus metrics count what happens to events, per topic and reason."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Message
from prometheus_client import REGISTRY, Histogram

from connectors import flow_metrics
from connectors.codec import from_json
from connectors.kafka_source import decode_messages
from connectors.records import Accepted
from features.state import UserState
from flows.folding import Pending, build_write

GOOD = from_json(
    '{"eventId":"m1","userId":"mu1","occurredAt":"2026-05-01T06:30:00Z","utcOffsetMinutes":120,'
    '"taskCompleted":{"taskId":"t1","projectId":"p1","dueAt":"2026-04-30T00:00:00Z"}}'
)


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def message(value_bytes: bytes, topic: str, key: bytes = b"mu1", offset: int = 1) -> Message:
    return Message(
        topic=topic,
        partition=0,
        offset=offset,
        key=key,
        value=value_bytes,
        timestamp=(1, 1_777_000_000_000),
    )


def test_events_in_out_and_deadlettered_per_topic() -> None:
    topic = "metrics-test.oo.signals.v1"
    before = {
        n: value(f"oo_flow_events_{n}_total", topic=topic) for n in ("in", "out", "deadlettered")
    }
    decoded = decode_messages(
        [message(GOOD.SerializeToString(), topic), message(b"\xff garbage", topic, offset=2)],
        time.time(),
    )
    assert [type(r).__name__ for _, r in decoded.records] == ["Accepted", "Rejected"]
    flow_metrics.count_read(topic, len(decoded.records), decoded.rejected)
    assert value("oo_flow_events_in_total", topic=topic) - before["in"] == 2
    assert value("oo_flow_events_out_total", topic=topic) - before["out"] == 1
    assert value("oo_flow_events_deadlettered_total", topic=topic) - before["deadlettered"] == 1


def test_drops_by_reason_and_lag_by_agent() -> None:
    dup_before = value("oo_flow_events_dropped_total", reason="duplicate")
    lag_before = value("oo_flow_feature_lag_seconds_count", agent="momentum")
    state, pending = UserState("mu1"), Pending()
    pending.fold(
        state, [Accepted.of(GOOD, 1_777_000_000_000), Accepted.of(GOOD, 1_777_000_000_001)]
    )
    assert value("oo_flow_events_dropped_total", reason="duplicate") - dup_before == 1
    write = build_write(state, pending)
    assert write is not None and "momentum" in write.agents
    flow_metrics.observe_writes([write])
    assert value("oo_flow_feature_lag_seconds_count", agent="momentum") - lag_before == 1


def test_lags_of_a_batch_land_in_the_buckets_observe_picks() -> None:
    """ADR 0039: a batch's lags update each bucket once; counts and sum as one `observe` each."""
    bounds = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
    lags = [0.0, 0.005, 0.0051, 0.01, 0.3, 1.0, 2.5, 299.999, 300.0, 301.0, 1e6, 0.005]
    bulk = Histogram("bulk_lag_test", "t", ["agent"], buckets=bounds, registry=None)
    one_by_one = Histogram("one_by_one_lag_test", "t", ["agent"], buckets=bounds, registry=None)
    flow_metrics._observe_all(bulk.labels("a"), lags)
    for lag in lags:
        one_by_one.labels("a").observe(lag)

    def samples(h: Histogram) -> dict[tuple[str, str], float]:
        return {
            (s.name.rsplit("_", 1)[-1], s.labels.get("le", "")): s.value
            for metric in h.collect()
            for s in metric.samples
            if not s.name.endswith("_created")
        }

    got, want = samples(bulk), samples(one_by_one)
    assert got.keys() == want.keys()
    for key, expected in want.items():
        assert got[key] == pytest.approx(expected), key


def _listening(port: int) -> set[str]:
    """Addresses a socket of this machine listens on at `port` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_the_flow_metrics_bind_loopback_by_default() -> None:
    import socket
    import urllib.request

    from connectors.settings import ConnectorSettings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    flow_metrics.serve(port, ConnectorSettings().flow_metrics_host)

    assert _listening(port) == {"127.0.0.1"}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        assert b"oo_flow_events_in_total" in answer.read()


def test_compose_publishes_the_flow_metrics_on_loopback_only() -> None:
    from pathlib import Path

    import yaml

    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    assert compose["services"]["flow"]["ports"] == ["127.0.0.1:9108:9108"]
