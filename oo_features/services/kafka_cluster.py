"""The cluster profile's Kafka: three KRaft brokers on loopback, clients over SASL_SSL (ADR 0020).

Contract: `up(root)` starts whichever of the three brokers is not running, waits until a
SASL_SSL client sees all three, creates the engine's topics (replication factor 3,
`min.insync.replicas=2`) and returns a `KafkaCluster`. It is idempotent: a broker killed by
a test (`kill -9`) is started again from its own folder by the next `up`. `down(root)`
stops exactly the brokers it recorded (SIGTERM, then SIGKILL), never another process.

Each node is broker and controller (a three-voter quorum, static `controller.quorum.voters`),
with three listeners on 127.0.0.1:

    CLIENT      SASL_SSL, SCRAM-SHA-512 over TLS: the only listener clients are given
    INTERNAL    PLAINTEXT, broker to broker (loopback only; acceptable for local runs)
    CONTROLLER  PLAINTEXT, the KRaft quorum (loopback only)

What it owns, under `root` (`.oo/services-cluster` by default)::

    kafka-cluster.json       ports, pids, cluster id, the SCRAM user and its password
    client.properties        what a client needs besides the bootstrap (mode 0600)
    tls/                     the run's CA and the brokers' PEM keystore (`tls.py`)
    kafka/libs/              the broker jars (as the single node, `kafka_node._kafka_libs`)
    kafka-<n>/               server.properties, log4j2.properties, data/, logs, kafka.pid

Failures raise `ServicesError` naming the broker and the tail of its log. The SCRAM
credentials are created when the storage is formatted (`kafka-storage format --add-scram`);
a reformat (ports changed) makes new credentials and an empty cluster.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oo_features.services import cluster_admin
from oo_features.services.kafka_node import _java, _kafka_libs, _new_cluster_id, _write_log4j
from oo_features.services.processes import (
    Marker,
    _any_free_port,
    _is_ours,
    _port_free,
    _spawn,
    _tail,
    _terminate,
)
from oo_features.services.state import (
    HOST,
    STOP_TIMEOUT_S,
    ServicesError,
    ServiceStatus,
    _locked,
    _ports_locked,
)
from oo_features.services.tls import make_certificates

log = logging.getLogger(__name__)

NODES = (1, 2, 3)
HEAP = ("-Xmx384m", "-Xms128m")
USERNAME = "oo-features"
MECHANISM = "SCRAM-SHA-512"
_PORT_KINDS = ("client_port", "internal_port", "controller_port")


@dataclass(frozen=True)
class KafkaCluster:
    """Where the cluster answers and how a client authenticates."""

    bootstrap: str  # h:p,h:p,h:p (the SASL_SSL listeners)
    properties_file: Path  # client.properties: security.protocol, sasl.*, ssl.ca.location
    pids: dict[int, int | None]  # node id -> pid

    def client_config(self) -> dict[str, str]:
        """librdkafka settings of a client of this cluster (bootstrap and security)."""
        return {"bootstrap.servers": self.bootstrap, **read_properties(self.properties_file)}


def read_properties(path: Path) -> dict[str, str]:
    """A `key=value` file as a dict (blank lines and `#` comments skipped)."""
    result: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            if not sep:
                raise ServicesError(f"{path}: expected key=value; got {line!r}")
            result[key.strip()] = value.strip()
    return result


# ---------------------------------------------------------------------------- state


def _state_path(root: Path) -> Path:
    return root / "kafka-cluster.json"


def _load(root: Path) -> dict[str, Any] | None:
    path = _state_path(root)
    if not path.exists():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        for node in NODES:
            for kind in _PORT_KINDS:
                int(data["brokers"][str(node)][kind])
    except (ValueError, KeyError, TypeError) as exc:
        raise ServicesError(f"{path} is not a Kafka cluster state file ({exc}); remove it") from exc
    return data


def _save(root: Path, data: dict[str, Any]) -> None:
    path = _state_path(root)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)


def _home(root: Path, node: int) -> Path:
    return root / f"kafka-{node}"


def _marker(root: Path, node: int) -> Marker:
    return (("kafka.Kafka",), (str(_home(root, node) / "server.properties"),))


def _bootstrap(data: dict[str, Any]) -> str:
    return ",".join(f"{HOST}:{data['brokers'][str(n)]['client_port']}" for n in NODES)


def _cluster(root: Path, data: dict[str, Any]) -> KafkaCluster:
    pids = {n: data["brokers"][str(n)].get("pid") for n in NODES}
    return KafkaCluster(_bootstrap(data), root / "client.properties", pids)


def _ports(data: dict[str, Any]) -> list[int]:
    return [int(data["brokers"][str(n)][k]) for n in NODES for k in _PORT_KINDS]


def _fresh_state(previous: dict[str, Any] | None) -> dict[str, Any]:
    """Keep the recorded ports when all are free (stable addresses); otherwise pick new ones."""
    if previous is not None and all(_port_free(p) for p in _ports(previous)):
        return previous
    taken: set[int] = set()
    brokers: dict[str, dict[str, Any]] = {}
    for node in NODES:
        brokers[str(node)] = {}
        for kind in _PORT_KINDS:
            port = _any_free_port(taken)
            taken.add(port)
            brokers[str(node)][kind] = port
    return {"brokers": brokers, "cluster_id": "", "formatted_ports": [], "password": ""}


# ---------------------------------------------------------------------------- config


def _server_properties(root: Path, data: dict[str, Any], node: int, keystore: Path) -> str:
    me = data["brokers"][str(node)]
    voters = ",".join(f"{n}@{HOST}:{data['brokers'][str(n)]['controller_port']}" for n in NODES)
    client, internal = (
        f"CLIENT://{HOST}:{me['client_port']}",
        f"INTERNAL://{HOST}:{me['internal_port']}",
    )
    lines = [
        "# Written by `oo-features services up --profile cluster`; edits are overwritten.",
        "process.roles=broker,controller",
        f"node.id={node}",
        f"controller.quorum.voters={voters}",
        f"listeners={client},{internal},CONTROLLER://{HOST}:{me['controller_port']}",
        f"advertised.listeners={client},{internal}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=INTERNAL",
        "listener.security.protocol.map=CLIENT:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"sasl.enabled.mechanisms={MECHANISM}",
        f"listener.name.client.sasl.enabled.mechanisms={MECHANISM}",
        "listener.name.client.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "listener.name.client.ssl.keystore.type=PEM",
        f"listener.name.client.ssl.keystore.location={keystore}",
        f"log.dirs={_home(root, node) / 'data'}",
        "num.partitions=1",
        "auto.create.topics.enable=false",
        # Every topic, the engine's and Kafka's own, is replicated three times and refuses
        # a write that fewer than two replicas acknowledged (acks=all).
        "default.replication.factor=3",
        "min.insync.replicas=2",
        "unclean.leader.election.enable=false",
        "offsets.topic.replication.factor=3",
        "offsets.topic.num.partitions=8",
        "transaction.state.log.replication.factor=3",
        "transaction.state.log.min.isr=2",
        "share.coordinator.state.topic.replication.factor=3",
        "share.coordinator.state.topic.min.isr=2",
        "group.initial.rebalance.delay.ms=0",
        "log.retention.hours=24",
        "log.segment.bytes=16777216",
        "",
    ]
    return "\n".join(lines)


def _write_client_properties(root: Path, data: dict[str, Any], ca: Path) -> None:
    path = root / "client.properties"
    path.write_text(
        "# Written by `oo-features services up --profile cluster`: a client of the cluster.\n"
        "security.protocol=SASL_SSL\n"
        f"sasl.mechanism={MECHANISM}\n"
        f"sasl.username={USERNAME}\n"
        f"sasl.password={data['password']}\n"
        f"ssl.ca.location={ca}\n"
    )
    path.chmod(0o600)


def _format(root: Path, data: dict[str, Any], libs: Path) -> None:
    """Format the three log dirs with one cluster id and the SCRAM user, when ports changed."""
    ports = _ports(data)
    formatted = all((_home(root, n) / "data" / "meta.properties").exists() for n in NODES)
    if formatted and data.get("formatted_ports") == ports and data.get("password"):
        return
    data["cluster_id"] = _new_cluster_id()
    data["password"] = secrets.token_hex(16)
    scram = f"{MECHANISM}=[name={USERNAME},password={data['password']}]"
    for node in NODES:
        home = _home(root, node)
        if (home / "data").exists():
            shutil.rmtree(home / "data")
        config = str(home / "server.properties")
        argv = _java(root, libs, "kafka.tools.StorageTool", "format", home=home)
        argv += ["-t", data["cluster_id"], "-c", config, "--add-scram", scram]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServicesError(
                f"formatting kafka-{node}'s storage in {home / 'data'} failed "
                f"(exit {result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
    data["formatted_ports"] = ports


# ---------------------------------------------------------------------------- public API


def up(
    root: Path, *, timeout_s: float = 180.0, echo: Callable[[str], None] = log.info
) -> KafkaCluster:
    """Start the brokers not running, wait for all three, create the engine's topics."""
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root), _ports_locked():
        data = _load(root)
        alive = {
            n: data is not None and _is_ours(data["brokers"][str(n)].get("pid"), _marker(root, n))
            for n in NODES
        }
        if data is None or not any(alive.values()):
            data = _fresh_state(data)
        certs = make_certificates(root / "tls")
        libs = _kafka_libs(root, echo)
        for node in NODES:
            home = _home(root, node)
            home.mkdir(parents=True, exist_ok=True)
            (home / "server.properties").write_text(
                _server_properties(root, data, node, certs.keystore)
            )
            _write_log4j(home)
        if not any(alive.values()):
            _format(root, data, libs)
        _write_client_properties(root, data, certs.ca)
        _save(root, data)
        for node in NODES:
            entry = data["brokers"][str(node)]
            if alive[node]:
                echo(f"kafka-{node} already running (pid {entry['pid']})")
                continue
            home = _home(root, node)
            argv = _java(root, libs, "kafka.Kafka", str(home / "server.properties"), heap=HEAP, home=home)  # fmt: skip
            entry["pid"] = _spawn(
                argv,
                cwd=home,
                stdout=home / "stdout.log",
                stderr=home / "stderr.log",
                pid_file=home / "kafka.pid",
            )
            _save(root, data)
            echo(f"kafka-{node} starting (pid {entry['pid']}) on {HOST}:{entry['client_port']}")
        cluster = _cluster(root, data)
        _wait(root, cluster, time.monotonic() + timeout_s)
        created = cluster_admin.create_engine_topics(cluster.client_config())
        if created:
            echo(
                f"created topics {', '.join(created)} (replication factor 3, min.insync.replicas=2)"
            )
        echo(f"kafka cluster ready on {cluster.bootstrap} (SASL_SSL, {MECHANISM})")
        return cluster


def _wait(root: Path, cluster: KafkaCluster, deadline: float) -> None:
    detail = "not asked yet"
    while time.monotonic() < deadline:
        for node, pid in cluster.pids.items():
            if not _is_ours(pid, _marker(root, node)):
                home = _home(root, node)
                raise ServicesError(
                    f"kafka-{node} (pid {pid}) exited while starting"
                    + _tail(home / "stderr.log")
                    + _tail(home / "server.log")
                )
        # Each broker on its own listener: the cluster's metadata still lists a broker
        # killed a few seconds ago (until its session times out), so one answer is not all.
        security = read_properties(cluster.properties_file)
        answered = [
            cluster_admin.answers({"bootstrap.servers": address, **security}, 3, 5.0)
            for address in cluster.bootstrap.split(",")
        ]
        failing = [detail for ok, detail in answered if not ok]
        if not failing:
            return
        detail = "; ".join(failing)
        time.sleep(0.5)
    raise ServicesError(
        f"the Kafka cluster did not answer on {cluster.bootstrap} in time: {detail}"
        + "".join(_tail(_home(root, n) / "server.log", 5) for n in NODES)
    )


def down(
    root: Path, *, timeout_s: float = STOP_TIMEOUT_S, echo: Callable[[str], None] = log.info
) -> None:
    """Stop the brokers recorded in `root`; a pid no longer ours is forgotten, never killed."""
    if not _state_path(root).exists():
        echo(f"kafka cluster: nothing to stop in {root}")
        return
    with _locked(root):
        data = _load(root)
        assert data is not None
        ours: list[int] = []
        for node in NODES:
            entry = data["brokers"][str(node)]
            pid = entry.get("pid")
            if pid is None:
                echo(f"kafka-{node}: not started")
            elif _is_ours(pid, _marker(root, node)):
                echo(f"kafka-{node}: stopping pid {pid}")
                ours.append(pid)
            else:
                echo(
                    f"kafka-{node}: pid {pid} is gone or is no longer kafka-{node}; not touching it"
                )
            entry["pid"] = None
        # All at once: stopped one by one, the last broker's controlled shutdown waits for a
        # controller quorum that is already gone (until SIGKILL).
        for pid in ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for pid in ours:
            _terminate(pid, max(0.1, deadline - time.monotonic()))
        _save(root, data)


def status(root: Path) -> list[ServiceStatus]:
    """Each broker: its client listener, whether its process runs, whether it answers."""
    data = _load(root)
    if data is None:
        return [
            ServiceStatus(f"kafka-{n}", "-", None, False, False, f"no {_state_path(root)}")
            for n in NODES
        ]
    security = read_properties(root / "client.properties")
    result = []
    for node in NODES:
        entry = data["brokers"][str(node)]
        address = f"{HOST}:{entry['client_port']}"
        running = _is_ours(entry.get("pid"), _marker(root, node))
        ok, detail = cluster_admin.answers({"bootstrap.servers": address, **security}, 1, 5.0)
        result.append(
            ServiceStatus(f"kafka-{node}", address, entry.get("pid"), running, ok, detail)
        )
    return result


def running(root: Path) -> KafkaCluster | None:
    """The cluster if its three brokers run (started from `root`) and answer, else None."""
    data = _load(root)
    if data is None or not all(s.running and s.healthy for s in status(root)):
        return None
    return _cluster(root, data)
