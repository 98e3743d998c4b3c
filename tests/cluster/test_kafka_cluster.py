"""The cluster profile's Kafka: three KRaft brokers, SASL_SSL clients, RF 3, min.insync.replicas=2.

Real brokers (`kafka_cluster` fixture), clients configured by hand with the settings of the
profile's `client.properties`. Marked `cluster`: `make test-cluster` runs them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from connectors.exceptions import KafkaSecurityError
from connectors.kafka import engine_topics
from connectors.kafka_config import ClientErrors, client_config, new_client, wait_reachable
from oo_features.services import cluster_admin, kafka_cluster, redis_cluster
from tests.cluster.conftest import RunningCluster

pytestmark = pytest.mark.cluster

TIMEOUT_S = 10.0


def _topics_with(config: dict[str, Any], prefix: str) -> list[str]:
    created = cluster_admin.create_engine_topics(config, prefix=prefix, partitions=3)
    assert sorted(created) == sorted(engine_topics(prefix))
    return created


def test_profile_runs_three_brokers_and_every_topic_has_rf3_and_min_isr_2(
    kafka_cluster_running: RunningCluster, cluster_config: dict[str, Any], cluster_prefix: str
) -> None:
    statuses = kafka_cluster.status(kafka_cluster_running.root)
    assert [s.name for s in statuses] == ["kafka-1", "kafka-2", "kafka-3"]
    assert all(s.running and s.healthy for s in statuses), statuses
    properties = kafka_cluster.read_properties(kafka_cluster_running.cluster.properties_file)
    assert properties["security.protocol"] == "SASL_SSL"
    assert properties["sasl.mechanism"] == "SCRAM-SHA-512"

    admin = AdminClient(cluster_config)
    # The engine's own topics (created by `up`) and a prefixed set created the same way.
    names = [*engine_topics(), *_topics_with(cluster_config, cluster_prefix)]
    metadata = admin.list_topics(timeout=TIMEOUT_S)
    deadline = time.monotonic() + 60
    # A topic just created reaches every broker's metadata cache a moment later.
    while not set(names) <= set(metadata.topics) and time.monotonic() < deadline:
        time.sleep(0.5)
        metadata = admin.list_topics(timeout=TIMEOUT_S)
    assert len(metadata.brokers) == 3
    for name in names:
        for partition in metadata.topics[name].partitions.values():
            assert len(partition.replicas) == 3, (name, partition.id, partition.replicas)
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    for resource, future in admin.describe_configs(resources).items():
        configs = future.result(timeout=TIMEOUT_S)
        assert configs["min.insync.replicas"].value == "2", resource


def test_a_sasl_ssl_client_produces_with_acks_all_and_consumes_back(
    cluster_config: dict[str, Any], cluster_prefix: str
) -> None:
    topic = _topics_with(cluster_config, cluster_prefix)[0]
    producer = Producer(
        {
            **cluster_config,
            "acks": "all",
            "enable.idempotence": True,
            "max.in.flight.requests.per.connection": 1,
        }
    )
    acked: list[bytes] = []

    def on_delivery(err: Any, msg: Any) -> None:
        assert err is None, err
        acked.append(msg.value())

    sent = [f"event-{i}".encode() for i in range(500)]
    for i, value in enumerate(sent):
        producer.produce(topic, key=str(i % 17).encode(), value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert sorted(acked) == sorted(sent)
    assert sorted(_consume_all(cluster_config, topic, len(sent))) == sorted(sent)


def _consume_all(config: dict[str, Any], topic: str, expected: int) -> list[bytes]:
    consumer = Consumer(
        {
            **config,
            "group.id": f"{topic}.check",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + 90
    try:
        while len(got) < expected and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append(msg.value())
        # A little longer: nothing beyond what was acknowledged (idempotence: no duplicates).
        for _ in range(3):
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
    finally:
        consumer.close()
    return got


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        ({"sasl.password": "not-the-password"}, "SASL authentication error"),
        ({"ssl.ca.location": "/etc/ssl/certs/ca-certificates.crt"}, "certificate verify failed"),
    ],
    ids=["wrong-password", "untrusted-ca"],
)
def test_wrong_credentials_or_an_untrusted_ca_fail_fast_naming_broker_and_cause(
    kafka_cluster_running: RunningCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    change: dict[str, str],
    cause: str,
) -> None:
    """Through settings alone (`OO_KAFKA_PROPERTIES_FILE`), as every engine client is built."""
    cluster = kafka_cluster_running.cluster
    wrong = kafka_cluster.read_properties(cluster.properties_file) | change
    properties = tmp_path / "client.properties"
    properties.write_text("".join(f"{k}={v}\n" for k, v in wrong.items()))
    monkeypatch.setenv("OO_KAFKA_BOOTSTRAP", cluster.bootstrap)
    monkeypatch.setenv("OO_KAFKA_PROPERTIES_FILE", str(properties))
    monkeypatch.delenv("OO_KAFKA_PROPERTIES", raising=False)

    errors = ClientErrors(cluster.bootstrap, "admin")
    admin = new_client(AdminClient, client_config(None, "admin", errors=errors))
    started = time.monotonic()
    with pytest.raises(KafkaSecurityError) as caught:
        wait_reachable(admin, errors, TIMEOUT_S)
    assert time.monotonic() - started < TIMEOUT_S
    message = str(caught.value)
    assert cause in message, message
    assert any(f"sasl_ssl://{address}" in message for address in cluster.bootstrap.split(","))
    assert "not-the-password" not in message


def test_a_broker_killed_mid_produce_loses_nothing_acknowledged(
    kafka_cluster_running: RunningCluster, cluster_config: dict[str, Any], cluster_prefix: str
) -> None:
    topic = _topics_with(cluster_config, cluster_prefix)[0]
    producer = Producer(
        {
            **cluster_config,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "max.in.flight.requests.per.connection": 1,
        }
    )
    acked: list[bytes] = []
    failed: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is None:
            acked.append(msg.value())
        else:
            failed.append(str(err))

    root = kafka_cluster_running.root
    victim = next(iter(kafka_cluster.running(root).pids.items()))  # type: ignore[union-attr]
    killed = threading.Event()

    def kill_then_restart() -> None:
        time.sleep(1.0)
        os.kill(int(victim[1]), signal.SIGKILL)
        killed.set()
        time.sleep(3.0)
        kafka_cluster.up(root)  # starts exactly the missing broker again

    chaos = threading.Thread(target=kill_then_restart)
    chaos.start()
    sent = 0
    while chaos.is_alive() or sent < 5_000:
        producer.produce(topic, key=str(sent % 31).encode(), value=f"event-{sent}".encode(),
                         on_delivery=on_delivery)  # fmt: skip
        sent += 1
        producer.poll(0)
        if sent % 200 == 0:
            time.sleep(0.02)
    chaos.join()
    assert killed.is_set()
    assert producer.flush(120) == 0
    assert not failed, failed[:3]
    assert len(acked) == sent
    after = kafka_cluster.running(root)
    assert after is not None and after.pids[victim[0]] != victim[1]
    got = _consume_all(cluster_config, topic, len(acked))
    assert sorted(got) == sorted(acked)


def test_the_cli_exports_everything_a_client_needs(
    kafka_cluster_running: RunningCluster,
) -> None:
    import sys

    root = kafka_cluster_running.root
    before = kafka_cluster.running(root)
    assert before is not None
    argv = [sys.executable, "-m", "oo_features.cli", "services"]
    up = subprocess.run(
        [*argv, "up", "--profile", "cluster", "--state-dir", str(root)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    try:
        assert up.returncode == 0, up.stderr
        line = up.stdout.strip().splitlines()[-1]
        assert line.startswith("export ")
        exported = dict(item.split("=", 1) for item in line.split()[1:])
        assert exported["OO_KAFKA_BOOTSTRAP"] == before.bootstrap
        assert exported["OO_STORE_URL"].startswith("redis+cluster://")
        assert Path(exported["OO_KAFKA_PROPERTIES_FILE"]).exists()
    finally:
        redis_cluster.down(root)
    status = subprocess.run(
        [*argv, "status", "--profile", "cluster", "--state-dir", str(root)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    brokers = [line for line in status.stdout.splitlines() if line.startswith("kafka-")]
    assert len(brokers) == 3 and all(" up " in line for line in brokers), status.stdout
    # The brokers `up` found running are the same processes: nothing was restarted.
    assert kafka_cluster.running(root).pids == before.pids  # type: ignore[union-attr]


def test_down_stops_exactly_the_brokers_up_started_and_up_brings_them_back(
    kafka_cluster_running: RunningCluster, tmp_path: Path
) -> None:
    root = kafka_cluster_running.root
    before = kafka_cluster.running(root)
    assert before is not None
    bystander = subprocess.Popen(["sleep", "120"])  # a process that is not ours
    try:
        kafka_cluster.down(root)
        for pid in before.pids.values():
            assert pid is not None and not _is_kafka(pid), pid
        assert bystander.poll() is None
        assert not any(s.running or s.healthy for s in kafka_cluster.status(root))
    finally:
        bystander.kill()
        bystander.wait()
        again = kafka_cluster.up(root)
    assert again.bootstrap == before.bootstrap  # same ports, same storage, same credentials
    assert kafka_cluster.read_properties(again.properties_file) == kafka_cluster.read_properties(
        before.properties_file
    )


def _is_kafka(pid: int) -> bool:
    try:
        return b"kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
