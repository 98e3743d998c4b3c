"""The API's edges, enforced before any route runs: body size, bearer token, headers, 422 size.

Pure ASGI middleware (no `BaseHTTPMiddleware`, which buffers), so nothing here reads a body
it is about to refuse:

- `BodySizeLimit`: a request whose `Content-Length` exceeds its limit is answered 413 before
  one byte of its body is read; a chunked body is counted as it streams and cut off (413) at
  the first chunk past the limit. The limit is `OO_MAX_BODY_BYTES` except for the routes that
  declare a larger one (`BodyLimit`: the batch read, the agent inference), each sized to its
  largest valid body.
- `V1Gate`: every `/v1` request without the configured bearer token is answered 401 before
  its body is read or parsed (FastAPI parses the body before it runs dependencies, so the
  dependency alone would answer 422 to an unauthenticated bad body). Every `/v1` answer
  carries `Cache-Control: no-store`: they are per-user data, or name users.
- `bounded_validation_error`: a 422 lists at most `MAX_422_ERRORS` errors with `loc`, `msg`
  and `type` only (never the input, which FastAPI echoes once per error), each part cut to
  `MAX_422_TEXT` characters. Its size is bounded whatever was sent.

Failure behaviour: each refusal is a small JSON `{"detail": ...}`; nothing is logged per
request (an attacker must not be able to fill the log).
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import SecretStr

MAX_422_ERRORS = 10
MAX_422_TEXT = 200
MAX_LOC_PARTS = 8
NO_STORE = (b"cache-control", b"no-store")
CONTENT_TOO_LARGE = 413  # starlette renamed its constant; the number is the contract
UNPROCESSABLE_CONTENT = 422
PROTECTED_PREFIX = "/v1"


def token_matches(expected: SecretStr, authorization: str | None) -> bool:
    """True when `authorization` is `Bearer <expected>` (constant-time compare)."""
    if not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.get_secret_value().encode())


async def _answer(send: Any, code: int, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _TooLarge(HTTPException):
    """Raised from `receive` at the first chunk past the limit; an `HTTPException`, so the
    route's body reading (which turns other errors into 400) lets it through as a 413."""

    def __init__(self, detail: str) -> None:
        super().__init__(CONTENT_TOO_LARGE, detail)


@dataclass(frozen=True)
class BodyLimit:
    """A route's own body limit: `method` requests whose path matches `path` (a full-match
    regular expression) may send up to `max_bytes`."""

    method: str
    path: str
    max_bytes: int


class BodySizeLimit:
    """413 for a request body above its limit, decided before reading it when possible."""

    def __init__(self, app: Any, *, max_bytes: int, routes: Sequence[BodyLimit] = ()) -> None:
        self.app = app
        self.default_bytes = max_bytes
        self.routes = [(r.method, re.compile(r.path), r.max_bytes) for r in routes]

    def _limit(self, scope: Any) -> int:
        method, path = scope.get("method", ""), scope.get("path", "")
        for route_method, pattern, max_bytes in self.routes:
            if method == route_method and pattern.fullmatch(path):
                return max_bytes
        return self.default_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self._limit(scope)
        detail = f"request body too large: at most {max_bytes} bytes"
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _answer(send, 400, "Content-Length is not a number", [])
                    return
                if declared > max_bytes:
                    await _answer(send, CONTENT_TOO_LARGE, detail, [])
                    return
        received = 0
        started = False

        async def counting_receive() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise _TooLarge(detail)
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _answer(send, CONTENT_TOO_LARGE, detail, [])


class V1Gate:
    """401 for a `/v1` request without the bearer token (before its body); `no-store` on `/v1`.

    `token=None` (loopback only, see `serving.settings.check_bind`) lets every request in.
    """

    def __init__(self, app: Any, *, token: SecretStr | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not (
            path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")
        ):
            await self.app(scope, receive, send)
            return
        if self.token is not None:
            authorization = None
            for name, value in scope.get("headers", ()):
                if name == b"authorization":
                    authorization = value.decode("latin-1")
                    break
            if not token_matches(self.token, authorization):
                await _answer(
                    send,
                    status.HTTP_401_UNAUTHORIZED,
                    "missing or invalid bearer token",
                    [(b"www-authenticate", b"Bearer"), NO_STORE],
                )
                return

        async def no_store_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != b"cache-control"]
                message = {**message, "headers": [*headers, NO_STORE]}
            await send(message)

        await self.app(scope, receive, no_store_send)


def _cut(value: Any) -> str | int:
    if isinstance(value, int):
        return value
    text = str(value)
    return text if len(text) <= MAX_422_TEXT else text[: MAX_422_TEXT - 1] + "…"


async def bounded_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with at most `MAX_422_ERRORS` errors of `loc`, `msg`, `type`; never the input."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [
        {
            "loc": [_cut(part) for part in list(error.get("loc", ()))[:MAX_LOC_PARTS]],
            "msg": _cut(error.get("msg", "")),
            "type": _cut(error.get("type", "")),
        }
        for error in list(errors)[:MAX_422_ERRORS]
    ]
    return JSONResponse(
        status_code=UNPROCESSABLE_CONTENT,
        content={"detail": detail},
    )
