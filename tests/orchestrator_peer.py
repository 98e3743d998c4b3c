"""Real HTTP peers for the serving tests, both on 127.0.0.1 in a thread.

`OrchestratorPeer` is an OpenAI-compatible orchestrator (stdlib `http.server`);
`ApiServer` runs the API app under uvicorn.

`OrchestratorPeer` answers `POST /v1/chat/completions` with a chat completion
whose message content is `answer` (a dict is sent as JSON text), after
`latency_s` (a str is sent as it is: prose, a code fence, a plain sentence). `mode` makes it
misbehave: `ok`, `error` (HTTP 500), `garbage` (a 200 whose content holds no usable tip: JSON
that is not a tip), `hang` (never answers until the peer stops). With
`reject_response_format`, a request asking for structured output gets a 400, as from a
server that does not know `response_format`. Every request is counted and its JSON body kept, so a test
can assert what the API sent and that an open breaker sends nothing.

    with OrchestratorPeer() as peer:
        peer.answer = {"text": "Take a walk.", "kind": "advice"}
        ... OO_ORCHESTRATOR_URL=peer.url ...
        assert peer.requests == 1
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Mode = Literal["ok", "error", "garbage", "hang"]

DEFAULT_ANSWER = {"text": "Finish the overdue report first, then take a break.", "kind": "todo"}


class OrchestratorPeer:
    def __init__(self, *, answer: dict[str, Any] | str = DEFAULT_ANSWER) -> None:
        self.answer: dict[str, Any] | str = answer
        self.mode: Mode = "ok"
        self.latency_s = 0.0
        self.status_on_error = 500
        self.reject_response_format = False
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="orchestrator-peer", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def requests(self) -> int:
        with self._lock:
            return len(self.bodies)

    def reset(self) -> None:
        with self._lock:
            self.bodies.clear()
            self.headers.clear()

    def start(self) -> OrchestratorPeer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases hanging handlers
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OrchestratorPeer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the HTTP side --

    def _completion(self) -> bytes:
        if self.mode == "garbage":
            content = '{"answer": null}'
        elif isinstance(self.answer, str):
            content = self.answer
        else:
            content = json.dumps(self.answer)
        return json.dumps(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "tip-generator",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
            }
        ).encode()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
                return

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                if self.path != "/v1/chat/completions":
                    self._send(404, b'{"error": "not found"}')
                    return
                body = json.loads(raw or b"{}")
                with peer._lock:
                    peer.bodies.append(body)
                    # Names in one case: HTTP header names are case-insensitive, clients differ.
                    peer.headers.append({k.title(): v for k, v in self.headers.items()})
                if peer.mode == "hang":
                    peer._stopping.wait()
                    return
                if peer.latency_s:
                    peer._stopping.wait(peer.latency_s)
                if peer.reject_response_format and "response_format" in body:
                    self._send(400, b'{"error": "response_format is not supported"}')
                    return
                if peer.mode == "error":
                    self._send(peer.status_on_error, b'{"error": "internal"}')
                    return
                self._send(200, peer._completion())

        return Handler


class ApiServer:
    """The API under a real uvicorn in a thread on 127.0.0.1 (port chosen by the OS).

    The peer the orchestrator talks to and the server the tests talk to are both
    real HTTP on loopback, so nothing is monkeypatched between them.

        with ApiServer(create_app(settings)) as api:
            httpx.get(api.url + "/health")
    """

    def __init__(self, app: Any, *, startup_timeout_s: float = 30.0) -> None:
        import socket

        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._startup_timeout_s = startup_timeout_s

    @property
    def url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> ApiServer:
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                self._socket.close()
                raise RuntimeError("the API did not start (lifespan failed; see the log)")
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"the API did not start within {self._startup_timeout_s}s")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._socket.close()
