"""Processes the services start: spawn, recognise, stop; ports; log tails; required tools.

Contract: a pid is ours only while its command line still matches the service's `Marker`;
`_terminate` sends SIGTERM, then SIGKILL after the timeout, and is only ever called on a pid
that `_is_ours` accepted. Never kills by name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from oo_features.services.state import HOST, ServicesError

log = logging.getLogger(__name__)

# Popen objects of the services started by this process, kept so they are reaped on `down`
# and never garbage-collected while running (which would warn "subprocess is still running").
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


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
