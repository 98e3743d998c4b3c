"""One Kafka broker (KRaft, broker+controller) assembled from Maven Central: jars, config, start.

Contract: `_kafka_libs` copies the jars once per pom digest; `_start_kafka` writes the config,
formats the storage (once per listener ports) and spawns the broker; `_wait_kafka` asks the
broker for metadata until the deadline. Failures raise `ServicesError` with the log's tail.
The cluster profile (`kafka_cluster`) reuses the jars, `_java` and `_new_cluster_id`.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oo_features.services.processes import (
    Marker,
    _is_ours,
    _require_tool,
    _spawn,
    _tail,
)
from oo_features.services.state import HOST, ServicesError, ServicesState

KAFKA_POM = Path(__file__).resolve().parent / "kafka-pom.xml"
KAFKA_HEAP = ("-Xmx512m", "-Xms256m")


def _kafka_marker(root: Path) -> Marker:
    return (("kafka.Kafka",), (str(root / "kafka" / "server.properties"),))


def _kafka_libs(root: Path, echo: Callable[[str], None]) -> Path:
    """Copy the broker's jars from Maven Central once; redo it when the pom changes."""
    libs = root / "kafka" / "libs"
    marker = libs / ".complete"
    pom_digest = hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()
    if marker.exists() and marker.read_text().strip() == pom_digest:
        return libs
    mvn = _require_tool("mvn", "install Maven (Debian: apt-get install -y maven)")
    if libs.exists():
        shutil.rmtree(libs)
    echo(f"assembling Kafka from Maven Central into {libs} (once)")
    result = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(KAFKA_POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        raise ServicesError(
            f"mvn could not assemble Kafka from {KAFKA_POM} (exit {result.returncode}):\n"
            f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    marker.write_text(pom_digest + "\n")
    return libs


def _new_cluster_id() -> str:
    # Kafka's Uuid.toString: url-safe base64 of 16 random bytes, no padding, never a leading
    # '-' (it would read as an option on a command line).
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _write_kafka_config(root: Path, state: ServicesState) -> None:
    kafka = root / "kafka"
    (kafka / "server.properties").write_text(
        "\n".join(
            [
                "# Written by `oo-features services up`; edits are overwritten.",
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{HOST}:{state.controller_port}",
                f"listeners=PLAINTEXT://{HOST}:{state.kafka_port},"
                f"CONTROLLER://{HOST}:{state.controller_port}",
                f"advertised.listeners=PLAINTEXT://{HOST}:{state.kafka_port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={kafka / 'data'}",
                "num.partitions=1",
                # The engine creates its topics itself, with the partitions it wants; a typo
                # in a topic name must fail loudly rather than create a stray topic.
                "auto.create.topics.enable=false",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "log.retention.hours=24",
                "log.segment.bytes=16777216",
                "",
            ]
        )
    )
    _write_log4j(kafka)


def _write_log4j(kafka: Path) -> None:
    """WARN and above of the broker in `kafka`, to `kafka/server.log`."""
    (kafka / "log4j2.properties").write_text(
        "\n".join(
            [
                "status = warn",
                "appender.file.type = File",
                "appender.file.name = file",
                f"appender.file.fileName = {kafka / 'server.log'}",
                "appender.file.layout.type = PatternLayout",
                "appender.file.layout.pattern = [%d] %p %m (%c)%n",
                "rootLogger.level = warn",
                "rootLogger.appenderRef.file.ref = file",
                "",
            ]
        )
    )


def _java(
    root: Path,
    libs: Path,
    main: str,
    *args: str,
    heap: bool | tuple[str, ...] = False,
    home: Path | None = None,
) -> list[str]:
    """The `java` command line of a Kafka main class; logs configured from `home`.

    `home` is the broker's folder (default `root/kafka`, the single node); `heap` True is
    the single node's heap, a tuple is a caller's own JVM heap options.
    """
    java = _require_tool("java", "install a JDK 17+ (Debian: apt-get install -y openjdk-17-jre)")
    home = home if home is not None else root / "kafka"
    argv = [java]
    if heap is True:
        argv += list(KAFKA_HEAP)
    elif heap:
        argv += list(heap)
    argv += [
        f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={home}",
        "-Djava.awt.headless=true",
        "-cp",
        f"{libs}/*",
        main,
        *args,
    ]
    return argv


def _format_kafka_storage(root: Path, state: ServicesState, libs: Path) -> None:
    """Format the log dirs once; again only if the listener ports changed."""
    data = root / "kafka" / "data"
    ports = [state.kafka_port, state.controller_port]
    if (data / "meta.properties").exists() and state.kafka_formatted_ports == ports:
        return
    if data.exists():
        shutil.rmtree(data)
    state.cluster_id = _new_cluster_id()
    config = str(root / "kafka" / "server.properties")
    argv = _java(root, libs, "kafka.tools.StorageTool", "format", "-t", state.cluster_id)
    argv += ["-c", config]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServicesError(
            f"formatting Kafka storage in {data} failed (exit {result.returncode}):\n"
            f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    state.kafka_formatted_ports = ports


def _start_kafka(root: Path, state: ServicesState, echo: Callable[[str], None]) -> int:
    kafka = root / "kafka"
    kafka.mkdir(parents=True, exist_ok=True)
    libs = _kafka_libs(root, echo)
    _write_kafka_config(root, state)
    _format_kafka_storage(root, state, libs)
    argv = _java(root, libs, "kafka.Kafka", str(kafka / "server.properties"), heap=True)
    pid = _spawn(
        argv,
        cwd=kafka,
        stdout=kafka / "stdout.log",
        stderr=kafka / "stderr.log",
        pid_file=kafka / "kafka.pid",
    )
    echo(f"kafka starting (pid {pid}) on {state.kafka_bootstrap}; logs in {kafka}")
    return pid


def _kafka_answers(bootstrap: str, timeout_s: float) -> tuple[bool, str]:
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            pass
    except OSError as exc:
        return False, f"{bootstrap} refuses connections ({exc.strerror or exc})"
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from connectors.kafka_config import client_config
    from connectors.settings import ConnectorSettings

    # Our own single-node broker is plaintext: properties exported for another cluster
    # (OO_KAFKA_PROPERTIES[_FILE]) do not apply to it.
    local = ConnectorSettings(kafka_properties={}, kafka_properties_file=None)
    overrides: dict[str, Any] = {
        "socket.timeout.ms": max(1000, int(timeout_s * 1000)),
        # librdkafka's connection chatter goes to logging, not straight to stderr.
        "logger": logging.getLogger("oo_features.services.librdkafka"),
    }
    admin = AdminClient(client_config(local, "admin", overrides, bootstrap=bootstrap))
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        return False, f"{bootstrap} accepts connections but no metadata yet ({exc})"
    if not metadata.brokers:
        return False, f"{bootstrap} answered without brokers"
    return True, f"{len(metadata.brokers)} broker(s)"


def _wait_kafka(root: Path, state: ServicesState, deadline: float) -> None:
    kafka = root / "kafka"
    detail = "not asked yet"
    while time.monotonic() < deadline:
        if state.kafka_pid is None or not _is_ours(state.kafka_pid, _kafka_marker(root)):
            raise ServicesError(
                f"kafka (pid {state.kafka_pid}) exited while starting"
                + _tail(kafka / "stderr.log")
                + _tail(kafka / "server.log")
            )
        ok, detail = _kafka_answers(state.kafka_bootstrap, 2.0)
        if ok:
            return
        time.sleep(0.25)
    raise ServicesError(
        f"kafka did not answer on {state.kafka_bootstrap} in time: {detail}"
        + _tail(kafka / "server.log")
    )
