"""The services' state folder and what `services.json` records; the shared error and endpoints.

Contract: `state_dir` resolves the folder (explicit, else `$OO_SERVICES_DIR`, else
`./.oo/services`); `_load_state` / `_save_state` read and atomically replace `services.json`;
`_locked` holds an flock on `lock` so two `up`s never both start a service; `_ports_locked`
holds one for the whole machine, from choosing free ports until the services started on them
have bound them, so that `up`s in two state folders never pick the same ones. A state file that
cannot be read raises `ServicesError` naming the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_DIR_ENV = "OO_SERVICES_DIR"
DEFAULT_STATE_DIR = Path(".oo") / "services"
HOST = "127.0.0.1"
DEFAULT_KAFKA_PORT = 19092
DEFAULT_CONTROLLER_PORT = 19093
DEFAULT_REDIS_PORT = 16379
STOP_TIMEOUT_S = 30.0
PORTS_LOCK = Path(tempfile.gettempdir()) / "oo-services-ports.lock"
"""The machine-wide lock of `_ports_locked` (every state folder's `up` takes it)."""


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


def state_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The state folder: `explicit`, else `$OO_SERVICES_DIR`, else `./.oo/services`."""
    chosen = explicit or os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR
    return Path(chosen).expanduser().resolve()


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


@contextlib.contextmanager
def _ports_locked() -> Iterator[None]:
    """Held from choosing free ports until the services on them are up. A port is free only
    until someone binds it: two `up`s in two state folders at once (`make test` beside `make
    chaos`, two worktrees) both found the same ports free before either broker had bound them,
    and the second broker died on "Address already in use"."""
    with open(PORTS_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
