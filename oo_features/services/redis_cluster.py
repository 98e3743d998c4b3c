"""A local Redis Cluster: six Debian `redis-server` processes on loopback (3 masters, 3 replicas).

`up(root)` starts what is not running, creates the cluster once (`redis-cli --cluster create
... --cluster-replicas 1 --cluster-yes`), waits until every node reports `cluster_state:ok`
and returns the store URL `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/0`.
`down(root)` stops exactly the processes it started; `status(root)` lists the nodes.

What it owns, under `root/redis-cluster/`::

    cluster.json        ports (client and cluster bus), pids, whether the cluster was created
    node-<port>/        one node: redis.pid, redis.log, nodes.conf, appendonlydir/ (AOF,
                        `appendfsync always` like the single Redis, ADR 0010)

Idempotent like the single-node services: nodes already running are left alone; a node that
died (a test's `kill -9`) is started again from its own directory and rejoins the cluster as a
replica of whoever took its slots. A directory whose cluster cannot be brought back to
`cluster_state:ok` is an error naming the node and its log; `down` then removing the folder
starts over.

What it must never do: kill a process it did not start (a pid is signalled only while its
command line is still the `redis-server` on the recorded port), or listen beyond 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oo_features.services.processes import (
    _any_free_port,
    _is_ours,
    _port_free,
    _require_tool,
    _spawn,
    _tail,
    _terminate,
)
from oo_features.services.redis_node import _redis_binary, _redis_marker, redis_argv
from oo_features.services.state import HOST, STOP_TIMEOUT_S, ServicesError, _locked, _ports_locked

__all__ = ["NODES", "ClusterNode", "down", "master_of", "status", "store_url", "up"]

NODES = 6
"""Three masters and one replica each."""
NODE_TIMEOUT_MS = 2000
"""`cluster-node-timeout`: how long a silent master has before its replica takes over."""
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ClusterNode:
    """One node as `status` sees it."""

    port: int
    pid: int | None
    running: bool  # the recorded pid is alive and is the redis-server we launched
    role: str  # "master", "slave" or "" (not answering)
    detail: str = ""

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


def _dir(root: Path) -> Path:
    return Path(root) / "redis-cluster"


def _load(root: Path) -> dict[str, Any]:
    path = _dir(root) / "cluster.json"
    if not path.exists():
        return {}
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ServicesError(f"{path}: unreadable cluster state ({exc})") from exc
    return data


def _save(root: Path, state: dict[str, Any]) -> None:
    path = _dir(root) / "cluster.json"
    path.write_text(json.dumps(state, indent=2) + "\n")


def store_url(ports: list[int]) -> str:
    """The `redis+cluster://` URL naming the first three nodes as startup nodes."""
    return "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in ports[:3]) + "/0"


def _node_dir(root: Path, port: int) -> Path:
    return _dir(root) / f"node-{port}"


def _argv(binary: str, port: int, bus_port: int, directory: Path) -> list[str]:
    return [
        *redis_argv(binary, port, directory),
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        str(directory / "nodes.conf"),
        "--cluster-node-timeout",
        str(NODE_TIMEOUT_MS),
        "--cluster-port",
        str(bus_port),
    ]


def _cli(port: int, *args: str, timeout_s: float = 5.0) -> tuple[bool, str]:
    """`redis-cli -p port args...`: (answered, stdout or the error)."""
    cli = _require_tool("redis-cli", "install the Debian package redis-tools (or redis-server)")
    try:
        result = subprocess.run(
            [cli, "-h", HOST, "-p", str(port), *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"redis-cli {' '.join(args)} on {HOST}:{port} timed out"
    out = result.stdout.strip()
    if result.returncode != 0 or out.startswith(("Could not connect", "ERR", "LOADING")):
        return False, (out or result.stderr.strip())
    return True, out


def _info(port: int) -> dict[str, str]:
    ok, out = _cli(port, "cluster", "info")
    if not ok:
        return {}
    return dict(line.split(":", 1) for line in out.splitlines() if ":" in line)


def _role(port: int) -> tuple[str, str]:
    ok, out = _cli(port, "role")
    if not ok:
        return "", out
    return (out.splitlines()[0].strip() if out else ""), ""


def _start_node(root: Path, binary: str, port: int, bus_port: int, echo: Any) -> int:
    directory = _node_dir(root, port)
    directory.mkdir(parents=True, exist_ok=True)
    pid = _spawn(
        _argv(binary, port, bus_port, directory),
        cwd=directory,
        stdout=directory / "stdout.log",
        stderr=directory / "stderr.log",
        pid_file=directory / "redis.pid",
    )
    echo(f"redis cluster node starting (pid {pid}) on {HOST}:{port}; logs in {directory}")
    return pid


def _wait(what: str, check: Callable[[], tuple[bool, str]], deadline: float) -> None:
    detail = "not asked yet"
    while time.monotonic() < deadline:
        ok, detail = check()
        if ok:
            return
        time.sleep(0.1)
    raise ServicesError(f"redis cluster: {what} not reached in time: {detail}")


def _choose_ports(base_port: int | None) -> tuple[list[int], list[int]]:
    if base_port is not None:
        ports = [base_port + i for i in range(NODES)]
        bus = [p + 10000 for p in ports]
        busy = [p for p in ports + bus if not _port_free(p)]
        if busy:
            raise ServicesError(
                f"redis cluster: expected free ports {ports} (and bus ports {bus}); "
                f"got busy: {busy}"
            )
        return ports, bus
    taken: set[int] = set()
    for _ in range(2 * NODES):
        taken.add(_any_free_port(taken))
    chosen = sorted(taken)
    return chosen[:NODES], chosen[NODES:]


def _all_ok(ports: list[int]) -> tuple[bool, str]:
    for port in ports:
        info = _info(port)
        if info.get("cluster_state") != "ok" or info.get("cluster_known_nodes") != str(NODES):
            return False, f"{HOST}:{port}: {info or 'no answer'}"
    return True, ""


def up(root: Path, *, base_port: int | None = None, echo: Callable[[str], None] = print) -> str:
    """Start the six nodes that are not running, create the cluster once, wait for it.

    Returns the store URL. `base_port`: nodes on `base_port .. base_port+5` (bus ports 10000
    higher), refused when busy; default: free ports, kept in `cluster.json` for later `up`s.
    Raises `ServicesError` naming the node and the tail of its log on any failure.
    """
    root = Path(root).resolve()
    _dir(root).mkdir(parents=True, exist_ok=True)
    with _locked(root), _ports_locked():
        state = _load(root)
        if not state or (base_port is not None and state["ports"][0] != base_port):
            if state and any(_is_ours(p, _redis_marker(port)) for port, p in _pids(state)):
                raise ServicesError(
                    f"redis cluster already running on {state['ports']} under {_dir(root)}; "
                    "run down first to move it"
                )
            ports, bus = _choose_ports(base_port)
            state = {"ports": ports, "bus_ports": bus, "pids": {}, "created": False}
            _save(root, state)
        ports, bus = state["ports"], state["bus_ports"]
        binary = _redis_binary(echo)
        for port, bus_port in zip(ports, bus, strict=True):
            pid = state["pids"].get(str(port))
            if _is_ours(pid, _redis_marker(port)):
                continue
            state["pids"][str(port)] = _start_node(root, binary, port, bus_port, echo)
            _save(root, state)
        deadline = time.monotonic() + READY_TIMEOUT_S
        for port in ports:
            _wait_ping(root, state, port, deadline)
        if not state["created"]:
            _create(ports, echo)
            state["created"] = True
            _save(root, state)
        try:
            _wait("cluster_state:ok on every node", lambda: _all_ok(ports), deadline)
        except ServicesError as exc:
            logs = "".join(_tail(_node_dir(root, p) / "redis.log", 5) for p in ports)
            raise ServicesError(f"{exc}{logs}") from None
        url = store_url(ports)
        echo(f"redis cluster ready: {url}")
        return url


def _pids(state: dict[str, Any]) -> list[tuple[int, int | None]]:
    return [(int(port), pid) for port, pid in state.get("pids", {}).items()]


def _wait_ping(root: Path, state: dict[str, Any], port: int, deadline: float) -> None:
    def check() -> tuple[bool, str]:
        pid = state["pids"].get(str(port))
        if not _is_ours(pid, _redis_marker(port)):
            log = _node_dir(root, port) / "redis.log"
            raise ServicesError(
                f"redis cluster node {HOST}:{port} (pid {pid}) exited while starting" + _tail(log)
            )
        return _cli(port, "ping")

    _wait(f"PONG from {HOST}:{port}", check, deadline)


def _create(ports: list[int], echo: Callable[[str], None]) -> None:
    cli = _require_tool("redis-cli", "install the Debian package redis-tools (or redis-server)")
    argv = [cli, "--cluster", "create", *(f"{HOST}:{p}" for p in ports)]
    argv += ["--cluster-replicas", "1", "--cluster-yes"]
    echo("creating the redis cluster: " + " ".join(argv[1:]))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0 or "[OK] All 16384 slots covered" not in result.stdout:
        raise ServicesError(
            f"redis-cli --cluster create failed (exit {result.returncode}):\n"
            f"{(result.stdout + result.stderr)[-3000:]}"
        )


def down(root: Path) -> None:
    """Stop every node this folder started (and nothing else); data stays for the next `up`."""
    root = Path(root).resolve()
    if not _dir(root).exists():
        return
    with _locked(root):
        state = _load(root)
        for port, pid in _pids(state):
            if pid is not None and _is_ours(pid, _redis_marker(port)):
                _terminate(pid, STOP_TIMEOUT_S)
        if state:
            state["pids"] = {}
            _save(root, state)


def status(root: Path) -> list[ClusterNode]:
    """Every recorded node: its pid, whether it runs, and its role as it reports it."""
    state = _load(Path(root).resolve())
    nodes = []
    for port in state.get("ports", []):
        pid = state["pids"].get(str(port))
        running = _is_ours(pid, _redis_marker(port))
        role, detail = _role(port) if running else ("", "not running")
        nodes.append(ClusterNode(port=port, pid=pid, running=running, role=role, detail=detail))
    return nodes


def master_of(root: Path, key: str) -> ClusterNode:
    """The running master that serves `key`'s slot now (tests kill it to force a failover)."""
    nodes = [n for n in status(root) if n.running and n.role == "master"]
    if not nodes:
        raise ServicesError(f"redis cluster under {_dir(Path(root))}: no running master")
    ok, slot = _cli(nodes[0].port, "cluster", "keyslot", key)
    if not ok:
        raise ServicesError(f"redis cluster: CLUSTER KEYSLOT failed: {slot}")
    ok, out = _cli(nodes[0].port, "cluster", "nodes")
    for line in out.splitlines():
        fields = line.split()
        if "master" not in fields[2] or "fail" in fields[2]:
            continue
        port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
        for span in fields[8:]:
            lo, _, hi = span.partition("-")
            if lo.isdigit() and int(lo) <= int(slot) <= int(hi or lo):
                return next(n for n in nodes if n.port == port)
    raise ServicesError(f"redis cluster: no running master serves slot {slot} of {key!r}")
