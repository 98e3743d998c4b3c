"""The local real services: one Kafka broker (KRaft) and one Redis, started on this machine.

`oo-features services up|down|status` and the integration-test fixtures both call this
module, so a developer's shell and the test session run exactly the same services.

What it owns: one state folder (default `.oo/services` under the current directory,
override with `OO_SERVICES_DIR`) holding everything the services need and produce::

    services.json            what runs where: ports, pids, bootstrap, redis url, cluster id
    lock                     flock held while `up` or `down` runs
    kafka/libs/              jars copied from Maven Central by `mvn dependency:copy-dependencies`
    kafka/server.properties  single node, broker+controller, listeners on 127.0.0.1
    kafka/log4j2.properties  WARN and above, to kafka/server.log
    kafka/data/              the log dirs (formatted once per cluster id)
    kafka/kafka.pid, kafka/stdout.log, kafka/stderr.log, kafka/server.log
    redis/redis.pid, redis/redis.log
    redis/appendonlydir/     Redis' append-only file (`appendfsync always`, ADR 0010)

What it must never do: kill a process it did not start. `down` signals a recorded pid only
after checking that the pid's command line is still the service it launched.

Readiness is asked of the services themselves (Kafka metadata through the admin client,
Redis PING), never assumed after a sleep.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE_DIR_ENV = "OO_SERVICES_DIR"
DEFAULT_STATE_DIR = Path(".oo") / "services"
HOST = "127.0.0.1"
DEFAULT_KAFKA_PORT = 19092
DEFAULT_CONTROLLER_PORT = 19093
DEFAULT_REDIS_PORT = 16379
KAFKA_POM = Path(__file__).resolve().parent / "services" / "kafka-pom.xml"
KAFKA_HEAP = ("-Xmx512m", "-Xms256m")
STOP_TIMEOUT_S = 30.0


class ServicesError(RuntimeError):
    """A local service could not be prepared, started, reached or stopped."""


@dataclass
class ServicesState:
    """What `services.json` records. Pids are `None` when the service is not started."""

    kafka_port: int
    controller_port: int
    redis_port: int
    cluster_id: str = ""
    kafka_pid: int | None = None
    redis_pid: int | None = None
    kafka_formatted_ports: list[int] = field(default_factory=list)

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self.redis_port}/0"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kafka_bootstrap"] = self.kafka_bootstrap
        data["redis_url"] = self.redis_url
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServicesState:
        return cls(
            kafka_port=int(data["kafka_port"]),
            controller_port=int(data["controller_port"]),
            redis_port=int(data["redis_port"]),
            cluster_id=str(data.get("cluster_id", "")),
            kafka_pid=data.get("kafka_pid"),
            redis_pid=data.get("redis_pid"),
            kafka_formatted_ports=list(data.get("kafka_formatted_ports", [])),
        )


@dataclass(frozen=True)
class ServiceStatus:
    """One service as `status` sees it: where it should answer, and whether it does."""

    name: str
    address: str
    pid: int | None
    running: bool  # the recorded pid is alive and is the process we launched
    healthy: bool  # it answered (Kafka metadata, Redis PING)
    detail: str = ""


@dataclass(frozen=True)
class Endpoints:
    """Where the running services answer; what `up` returns and the fixtures yield."""

    kafka_bootstrap: str
    redis_url: str
    state_dir: Path
    kafka_pid: int | None
    redis_pid: int | None

    def env(self) -> dict[str, str]:
        """The `OO_*` variables that point the engine at these services."""
        return {"OO_KAFKA_BOOTSTRAP": self.kafka_bootstrap, "OO_STORE_URL": self.redis_url}

    def export_line(self) -> str:
        return "export " + " ".join(f"{k}={v}" for k, v in self.env().items())


# Popen objects of the services started by this process, kept so they are reaped on `down`
# and never garbage-collected while running (which would warn "subprocess is still running").
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def state_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The state folder: `explicit`, else `$OO_SERVICES_DIR`, else `./.oo/services`."""
    chosen = explicit or os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR
    return Path(chosen).expanduser().resolve()


# ---------------------------------------------------------------------------- public API


def up(
    directory: str | os.PathLike[str] | None = None,
    *,
    timeout_s: float = 90.0,
    echo: Callable[[str], None] = log.info,
) -> Endpoints:
    """Start whatever is not running yet and wait until both services answer.

    Idempotent: services already running and healthy are left alone and reported.
    Raises `ServicesError` with the reason (and the tail of the service's log) on failure.
    """
    root = state_dir(directory)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        state = _load_state(root) or _initial_state()
        kafka_alive = _is_ours(state.kafka_pid, _kafka_marker(root))
        redis_alive = _is_ours(state.redis_pid, _redis_marker(state.redis_port))
        if not kafka_alive:
            state.kafka_pid = None
        if not redis_alive:
            state.redis_pid = None
        _choose_free_ports(state, kafka_alive=kafka_alive, redis_alive=redis_alive)
        _save_state(root, state)

        if kafka_alive:
            echo(f"kafka already running (pid {state.kafka_pid}) on {state.kafka_bootstrap}")
        else:
            state.kafka_pid = _start_kafka(root, state, echo)
            _save_state(root, state)
        if redis_alive:
            echo(f"redis already running (pid {state.redis_pid}) on {state.redis_url}")
        else:
            state.redis_pid = _start_redis(root, state, echo)
            _save_state(root, state)

        deadline = time.monotonic() + timeout_s
        _wait_redis(root, state, deadline)
        _wait_kafka(root, state, deadline)
        echo(f"kafka ready on {state.kafka_bootstrap}; redis ready on {state.redis_url}")
        return _endpoints(root, state)


def down(
    directory: str | os.PathLike[str] | None = None,
    *,
    timeout_s: float = STOP_TIMEOUT_S,
    echo: Callable[[str], None] = log.info,
) -> None:
    """Stop the services this state folder started (SIGTERM, then SIGKILL after `timeout_s`).

    A recorded pid whose command line is no longer our service is forgotten, never killed.
    """
    root = state_dir(directory)
    if not root.exists():
        echo(f"nothing to stop: {root} does not exist")
        return
    with _locked(root):
        state = _load_state(root)
        if state is None:
            echo(f"nothing to stop: no {root / 'services.json'}")
            return
        services = (
            ("redis", state.redis_pid, _redis_marker(state.redis_port)),
            ("kafka", state.kafka_pid, _kafka_marker(root)),
        )
        for name, pid, marker in services:
            if pid is None:
                echo(f"{name}: not started")
            elif _is_ours(pid, marker):
                echo(f"{name}: stopping pid {pid}")
                _terminate(pid, timeout_s)
            else:
                echo(f"{name}: pid {pid} is gone or is no longer {name}; not touching it")
        state.kafka_pid = None
        state.redis_pid = None
        _save_state(root, state)


def status(directory: str | os.PathLike[str] | None = None) -> list[ServiceStatus]:
    """Where each service should answer, whether its process runs and whether it answers."""
    root = state_dir(directory)
    state = _load_state(root) if root.exists() else None
    if state is None:
        return [
            ServiceStatus("kafka", "-", None, False, False, f"no {root / 'services.json'}"),
            ServiceStatus("redis", "-", None, False, False, f"no {root / 'services.json'}"),
        ]
    kafka_running = _is_ours(state.kafka_pid, _kafka_marker(root))
    redis_running = _is_ours(state.redis_pid, _redis_marker(state.redis_port))
    kafka_ok, kafka_detail = _kafka_answers(state.kafka_bootstrap, 5.0)
    redis_ok, redis_detail = _redis_answers(state.redis_url)
    return [
        ServiceStatus(
            "kafka",
            state.kafka_bootstrap,
            state.kafka_pid,
            kafka_running,
            kafka_ok,
            f"controller {HOST}:{state.controller_port}" if kafka_ok else kafka_detail,
        ),
        ServiceStatus(
            "redis", state.redis_url, state.redis_pid, redis_running, redis_ok, redis_detail
        ),
    ]


def running_endpoints(directory: str | os.PathLike[str] | None = None) -> Endpoints | None:
    """The endpoints if both services run (started from this folder) and answer, else None."""
    root = state_dir(directory)
    statuses = status(root)
    if not all(s.running and s.healthy for s in statuses):
        return None
    state = _load_state(root)
    assert state is not None  # status() found it
    return _endpoints(root, state)


# ---------------------------------------------------------------------------- state file


def _initial_state() -> ServicesState:
    return ServicesState(
        kafka_port=DEFAULT_KAFKA_PORT,
        controller_port=DEFAULT_CONTROLLER_PORT,
        redis_port=DEFAULT_REDIS_PORT,
    )


def _load_state(root: Path) -> ServicesState | None:
    path = root / "services.json"
    if not path.exists():
        return None
    try:
        return ServicesState.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise ServicesError(f"{path} is not a services state file ({exc}); remove it") from exc


def _save_state(root: Path, state: ServicesState) -> None:
    path = root / "services.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _endpoints(root: Path, state: ServicesState) -> Endpoints:
    return Endpoints(
        kafka_bootstrap=state.kafka_bootstrap,
        redis_url=state.redis_url,
        state_dir=root,
        kafka_pid=state.kafka_pid,
        redis_pid=state.redis_pid,
    )


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    # Two `up`s at once (two terminals, two test sessions) must not both start a broker.
    with open(root / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------- ports


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _any_free_port(taken: set[int]) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port


def _choose_free_ports(state: ServicesState, *, kafka_alive: bool, redis_alive: bool) -> None:
    """Keep the recorded ports when free (stable addresses); otherwise pick free ones."""
    taken: set[int] = set()
    if redis_alive:
        taken.add(state.redis_port)
    if kafka_alive:
        taken |= {state.kafka_port, state.controller_port}
    else:
        for attr in ("kafka_port", "controller_port"):
            port = getattr(state, attr)
            if port in taken or not _port_free(port):
                port = _any_free_port(taken)
                log.info("port %s busy; using %d", attr, port)
            setattr(state, attr, port)
            taken.add(port)
    if not redis_alive and (state.redis_port in taken or not _port_free(state.redis_port)):
        state.redis_port = _any_free_port(taken)


# ---------------------------------------------------------------------------- processes


def _cmdline(pid: int) -> str | None:
    """The command line of a live, non-zombie process, or None."""
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        try:
            stat = (proc / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                return None
            return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            return None
    if sys.platform.startswith("linux"):
        return None
    result = subprocess.run(
        ["ps", "-o", "stat=,command=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    line = result.stdout.strip()
    if result.returncode != 0 or not line or line.startswith("Z"):
        return None
    return line.split(None, 1)[1] if " " in line else ""


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _alive(pid: int) -> bool:
    _reap(pid)
    return _cmdline(pid) is not None


# A marker is what a command line must contain to be our service: every group must match,
# a group matches when any of its alternatives is a substring.
Marker = tuple[tuple[str, ...], ...]


def _is_ours(pid: int | None, marker: Marker) -> bool:
    if pid is None:
        return False
    _reap(pid)
    cmdline = _cmdline(pid)
    if cmdline is None:
        return False
    return all(any(alt in cmdline for alt in group) for group in marker)


def _kafka_marker(root: Path) -> Marker:
    return (("kafka.Kafka",), (str(root / "kafka" / "server.properties"),))


def _redis_marker(port: int) -> Marker:
    # redis-server soon rewrites its process title to "redis-server 127.0.0.1:<port>";
    # until then the command line is still the argv we gave it.
    return (("redis-server",), (f"{HOST}:{port}", f"--port {port}"))


def _terminate(pid: int, timeout_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    log.warning("pid %d did not stop within %.0f s; sending SIGKILL", pid, timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)


def _spawn(argv: list[str], *, cwd: Path, stdout: Path, stderr: Path, pid_file: Path) -> int:
    with open(stdout, "ab") as out, open(stderr, "ab") as err:
        child = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # survives the shell and the test session that started it
        )
    _CHILDREN[child.pid] = child
    pid_file.write_text(f"{child.pid}\n")
    return child.pid


def _tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {path} ---\n" + "\n".join(text) if text else ""


def _require_tool(name: str, hint: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ServicesError(f"`{name}` is not on PATH; {hint}")
    return found


# ---------------------------------------------------------------------------- kafka


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


def _java(root: Path, libs: Path, main: str, *args: str, heap: bool = False) -> list[str]:
    java = _require_tool("java", "install a JDK 17+ (Debian: apt-get install -y openjdk-17-jre)")
    argv = [java]
    if heap:
        argv += list(KAFKA_HEAP)
    argv += [
        f"-Dlog4j2.configurationFile={root / 'kafka' / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={root / 'kafka'}",
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
        "logger": logging.getLogger("oo_features.localservices.librdkafka"),
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


# ---------------------------------------------------------------------------- redis


def _redis_binary(echo: Callable[[str], None]) -> str:
    found = shutil.which("redis-server")
    if found is not None:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise ServicesError("`redis-server` is not on PATH and apt-get is not available")
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            raise ServicesError("`redis-server` is missing; run: apt-get install -y redis-server")
        prefix = [sudo, "-n"]
    echo("redis-server missing; installing it with apt-get (Debian package redis-server)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in ([*prefix, apt, "update"], [*prefix, apt, "install", "-y", "redis-server"]):
        result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise ServicesError(f"{' '.join(argv)} failed:\n{result.stderr[-3000:]}")
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        raise ServicesError("apt-get installed redis-server but it is not on PATH")
    return found


def redis_argv(binary: str, port: int, directory: Path) -> list[str]:
    """The command line of the local Redis: loopback, `directory` for its files and log.

    Persistence (ADR 0010): an append-only file fsynced at every write (`appendfsync always`),
    no RDB snapshots. What Redis acknowledged survives a kill -9 and a restart, so a restarted
    local Redis is not a wiped store.
    """
    return [
        binary,
        "--bind",
        HOST,
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--daemonize",
        "no",
        "--dir",
        str(directory),
        "--logfile",
        str(directory / "redis.log"),
        "--loglevel",
        "warning",
    ]


def _start_redis(root: Path, state: ServicesState, echo: Callable[[str], None]) -> int:
    redis_dir = root / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    argv = redis_argv(_redis_binary(echo), state.redis_port, redis_dir)
    pid = _spawn(
        argv,
        cwd=redis_dir,
        stdout=redis_dir / "stdout.log",
        stderr=redis_dir / "stderr.log",
        pid_file=redis_dir / "redis.pid",
    )
    echo(f"redis starting (pid {pid}) on {state.redis_url}; logs in {redis_dir}")
    return pid


def _redis_answers(url: str) -> tuple[bool, str]:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
    try:
        client.ping()
    except redis.RedisError as exc:
        return False, f"{url} does not answer PING ({exc})"
    finally:
        client.close()
    return True, "PONG"


def _wait_redis(root: Path, state: ServicesState, deadline: float) -> None:
    redis_dir = root / "redis"
    detail = "not asked yet"
    while time.monotonic() < deadline:
        # Liveness only while starting: redis-server rewrites its process title, and a read of
        # /proc/<pid>/cmdline during the rewrite can match neither form of the marker.
        if state.redis_pid is None or not _alive(state.redis_pid):
            raise ServicesError(
                f"redis (pid {state.redis_pid}) exited while starting"
                + _tail(redis_dir / "redis.log")
                + _tail(redis_dir / "stderr.log")
            )
        ok, detail = _redis_answers(state.redis_url)
        if ok:
            return
        time.sleep(0.1)
    raise ServicesError(f"redis did not answer on {state.redis_url} in time: {detail}")


# -- cleanup of per-run prefixes (tests and benchmarks) ----------------------------------------
# Best effort: a run's result must be its own, not its cleanup's.


def delete_topics(bootstrap: str, prefix: str, *, timeout_s: float = 15.0) -> int:
    """Delete every topic whose name starts with `prefix`; how many were asked to go."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from connectors.kafka_config import client_config

    admin = AdminClient(client_config(None, "admin", bootstrap=bootstrap))
    names: list[str] = []
    with contextlib.suppress(KafkaException):
        names = [n for n in admin.list_topics(timeout=10).topics if n.startswith(prefix)]
        if names:
            for future in admin.delete_topics(names, operation_timeout=timeout_s).values():
                with contextlib.suppress(KafkaException):
                    future.result(timeout=timeout_s)
    return len(names)


def delete_keys(redis_url: str, prefix: str) -> int:
    """Unlink every Redis key that starts with `prefix` (pass "p:" to spare "p2:..."); how many."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=10.0)
    deleted = 0
    try:
        with contextlib.suppress(redis.RedisError):
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{prefix}*", count=5_000):
                batch.append(key)
                if len(batch) >= 5_000:
                    deleted += client.unlink(*batch)
                    batch.clear()
            if batch:
                deleted += client.unlink(*batch)
    finally:
        client.close()
    return deleted
