"""One local Redis (Debian's redis-server, installed with apt-get when missing).

Contract: `redis_argv` is the one command line of the local Redis (ADR 0010 persistence);
`_start_redis` spawns it; `_wait_redis` PINGs until the deadline. Failures raise
`ServicesError` with the log's tail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from oo_features.services.processes import Marker, _alive, _spawn, _tail
from oo_features.services.state import HOST, ServicesError, ServicesState


def _redis_marker(port: int) -> Marker:
    # redis-server soon rewrites its process title to "redis-server 127.0.0.1:<port>";
    # until then the command line is still the argv we gave it.
    return (("redis-server",), (f"{HOST}:{port}", f"--port {port}"))


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
