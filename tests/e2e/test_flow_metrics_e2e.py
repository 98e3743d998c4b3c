"""The running flow serves its Prometheus metrics: events per topic, lag per agent, consumer lag."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any

import httpx

from connectors.codec import from_json
from connectors.kafka import EventProducer
from tests.fixtures_services import service_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_flow_serves_metrics_while_running(
    services: Any, topic_prefix: str, key_prefix: str
) -> None:
    port = free_port()
    env = {**os.environ, **service_env(services, topic_prefix, key_prefix)}
    producer = EventProducer(bootstrap=services.kafka_bootstrap, topic_prefix=topic_prefix)
    flow = subprocess.Popen(
        [sys.executable, "-m", "oo_features.cli", "flow", "--metrics-port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for i in range(50):
            producer.publish(
                from_json(
                    f'{{"eventId":"mx{i}","userId":"mx{i % 5}","occurredAt":"2026-05-01T06:{i:02d}:00Z",'
                    '"utcOffsetMinutes":60,"taskCompleted":{"taskId":"t","projectId":"p"}}'
                )
            )
        producer.publish(
            from_json(
                '{"eventId":"mx0","userId":"mx0","occurredAt":"2026-05-01T06:00:00Z",'
                '"utcOffsetMinutes":60,"taskCompleted":{"taskId":"t","projectId":"p"}}'
            )
        )
        assert producer.flush(30).published == 51
        signals = topic_prefix + "oo.signals.v1"
        deadline = time.monotonic() + 120
        text = ""
        while time.monotonic() < deadline:
            assert flow.poll() is None, f"the flow exited with {flow.returncode}"
            try:
                text = httpx.get(
                    f"http://127.0.0.1:{port}/metrics", timeout=2, trust_env=False
                ).text
            except httpx.HTTPError:
                time.sleep(0.5)
                continue
            if (
                sample(text, "oo_flow_events_in_total", topic=signals) >= 51
                and sample(text, "oo_flow_feature_lag_seconds_count", agent="momentum") > 0
                and sample(text, "oo_flow_events_dropped_total", reason="duplicate") >= 1
                and any(
                    line.startswith("oo_flow_kafka_consumer_lag{") and signals in line
                    for line in text.splitlines()
                )
            ):
                break
            time.sleep(0.5)
        assert sample(text, "oo_flow_events_in_total", topic=signals) >= 51, text[-3000:]
        assert sample(text, "oo_flow_events_out_total", topic=signals) >= 51
        assert sample(text, "oo_flow_feature_lag_seconds_count", agent="momentum") > 0
        assert sample(text, "oo_flow_events_dropped_total", reason="duplicate") >= 1
        assert "oo_flow_inference_errors" in text
        # Consumer lag per partition, from the source.
        assert any(
            line.startswith("oo_flow_kafka_consumer_lag{") and signals in line
            for line in text.splitlines()
        ), "no consumer lag per partition"
    finally:
        flow.terminate()
        flow.wait(30)
        producer.close()
