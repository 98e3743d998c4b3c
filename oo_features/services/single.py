"""The single-node profile: one Kafka broker (KRaft) and one Redis, started on this machine.

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

import logging
import os
import time
from collections.abc import Callable

from oo_features.services.kafka_node import (
    _kafka_answers,
    _kafka_marker,
    _start_kafka,
    _wait_kafka,
)
from oo_features.services.processes import _any_free_port, _is_ours, _port_free, _terminate
from oo_features.services.redis_node import (
    _redis_answers,
    _redis_marker,
    _start_redis,
    _wait_redis,
)
from oo_features.services.state import (
    HOST,
    STOP_TIMEOUT_S,
    Endpoints,
    ServicesState,
    ServiceStatus,
    _endpoints,
    _initial_state,
    _load_state,
    _locked,
    _ports_locked,
    _save_state,
    state_dir,
)

log = logging.getLogger(__name__)


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
    with _locked(root), _ports_locked():
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
