"""Debian's headless Chromium for the tests, driven through `tests/browser/driver.cjs`.

The driver is a small Node script over `playwright-core` (installed by `make tools`
into `.oo/tools`); this module starts it, speaks its JSON line protocol and
makes a missing piece (Node, playwright-core, `/usr/bin/chromium`) a test failure
that says how to get it, never a skip.

    with HeadlessChromium() as browser:
        browser.open(url)
        browser.wait("document.body.dataset.state === 'ready'")
        value = browser.evaluate("document.title")
        browser.screenshot(tmp_path / "page.png")
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from collections import deque
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).resolve().parent / "driver.cjs"
NODE_MODULES = ROOT / ".oo" / "tools" / "node_modules"
CHROMIUM = Path(os.environ.get("OO_CHROMIUM", "/usr/bin/chromium"))
INSTALL_HINT = "run `make tools` (installs Debian's chromium and playwright-core into .oo/tools)"


class BrowserError(RuntimeError):
    """The driver answered with an error (a timeout, a script error) or died."""


def _require_tools() -> str:
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node (Node.js 18 or later)")
    if not (NODE_MODULES / "playwright-core" / "package.json").is_file():
        missing.append(f"playwright-core in {NODE_MODULES}")
    if not CHROMIUM.is_file():
        missing.append(f"Chromium at {CHROMIUM}")
    if missing:
        pytest.fail(f"the browser test needs {', '.join(missing)}: {INSTALL_HINT}", pytrace=False)
    assert node is not None
    return node


class HeadlessChromium:
    """One headless Chromium page; each method is one driver command, answered in order."""

    def __init__(self, *, startup_timeout_s: float = 60.0) -> None:
        self._startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen[str] | None = None
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=50)
        self._readers: list[threading.Thread] = []
        self.version = ""

    def __enter__(self) -> HeadlessChromium:
        node = _require_tools()
        env = {**os.environ, "NODE_PATH": str(NODE_MODULES), "OO_CHROMIUM": str(CHROMIUM)}
        self._process = subprocess.Popen(
            [node, str(DRIVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._readers = [
            threading.Thread(target=self._read_answers, name="chromium-driver", daemon=True),
            threading.Thread(target=self._read_stderr, name="chromium-stderr", daemon=True),
        ]
        for thread in self._readers:
            thread.start()
        try:
            self.version = self._next_answer(self._startup_timeout_s)["browser"]
        except BrowserError as exc:
            self.__exit__()
            pytest.fail(f"headless Chromium did not start: {exc}", pytrace=False)
        return self

    def __exit__(self, *exc_info: object) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        if process.poll() is None:
            try:
                assert process.stdin is not None
                process.stdin.write(json.dumps({"op": "close"}) + "\n")
                process.stdin.close()
                process.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait(timeout=5)
        for thread in self._readers:
            thread.join(timeout=5)
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()

    # -- the commands --

    def open(self, url: str, *, timeout_s: float = 30.0) -> int | None:
        return self._call({"op": "open", "url": url, "timeout_ms": int(timeout_s * 1000)})["status"]

    def wait(self, expression: str, *, timeout_s: float = 30.0) -> None:
        """Until the JS `expression` is truthy in the page; `BrowserError` on timeout."""
        self._call(
            {"op": "wait", "expression": expression, "timeout_ms": int(timeout_s * 1000)},
            timeout_s=timeout_s + 10,
        )

    def evaluate(self, expression: str) -> Any:
        return self._call({"op": "evaluate", "expression": expression})

    def screenshot(self, path: Path) -> Path:
        self._call({"op": "screenshot", "path": str(path)})
        return path

    def viewport(self, width: int, height: int) -> None:
        """Resize the page to `width` x `height` CSS pixels (it starts at 1280 x 900)."""
        self._call({"op": "viewport", "width": width, "height": height})

    def problems(self) -> list[str]:
        """Console errors, uncaught page errors and failed requests seen so far."""
        return list(self._call({"op": "problems"}))

    # -- the protocol --

    def _call(self, command: dict[str, Any], *, timeout_s: float = 60.0) -> Any:
        process = self._process
        if process is None or process.stdin is None:
            raise BrowserError("the browser is not running")
        process.stdin.write(json.dumps(command) + "\n")
        process.stdin.flush()
        return self._next_answer(timeout_s, about=command["op"])

    def _next_answer(self, timeout_s: float, *, about: str = "start") -> Any:
        try:
            line = self._answers.get(timeout=timeout_s)
        except queue.Empty:
            raise BrowserError(f"no answer to {about!r} within {timeout_s}s") from None
        if line is None:
            raise BrowserError(f"the driver exited during {about!r}: {self._stderr_tail()}")
        message = json.loads(line)
        if not message["ok"]:
            raise BrowserError(f"{about}: {message['error']}")
        return message["value"]

    def _read_answers(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        for line in process.stdout:
            self._answers.put(line)
        self._answers.put(None)

    def _read_stderr(self) -> None:
        process = self._process
        assert process is not None and process.stderr is not None
        for line in process.stderr:  # drained so a chatty driver never blocks on a full pipe
            self._stderr.append(line)

    def _stderr_tail(self) -> str:
        return "".join(self._stderr)[-2000:] or "(nothing on stderr)"
