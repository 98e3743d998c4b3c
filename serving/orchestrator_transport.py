"""The orchestrator call's HTTP transport: httpx's interface over aiohttp's client (ADR 0034).

`OrchestratorClient` sends its requests straight to an `httpx.AsyncBaseTransport`. httpx's
own transport (httpcore's pool, h11's state machine in Python, anyio's streams) cost about
a third of the recommend route's CPU; aiohttp's client parses HTTP in C. The adapter is the
`httpx-aiohttp` package's `AiohttpTransport` (the one the OpenAI Python SDK offers for the
same reason), so the client, its timeouts and its tests keep httpx's types.

One correction on top: that adapter maps every aiohttp connection error, a refused
connection or a peer that hung up included, to `httpx.ConnectTimeout`. The client tells
the two apart (fallback reason `timeout` vs `unreachable`), so a `TimeoutException` whose
cause is not a timeout is raised as `httpx.ConnectError` here, for the request and for the
reading of the answer alike.

`OrchestratorClient` sends its one fixed request through `exchange` (status and whole body,
straight over aiohttp's session) rather than as an `httpx.Request` answered by an
`httpx.Response`: building and reading those two objects was about a sixth of a recommend's
CPU (ADR 0053). The adapter's exception map and the correction above apply to it alike;
`handle_async_request` stays for anything that speaks httpx to this transport.

Failure behaviour: httpx's exceptions only (`TimeoutException` for timeouts, another
`TransportError` for the rest), as with httpx's own transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions
from yarl import URL

__all__ = ["OrchestratorTransport"]


def _corrected(exc: httpx.TimeoutException) -> httpx.TransportError:
    """`exc` as the adapter raised it, or a `ConnectError` when it was no timeout."""
    cause = exc.__cause__
    if cause is None or isinstance(cause, TimeoutError):
        return exc
    return httpx.ConnectError(f"{type(cause).__name__}: {cause}")


class _Body(httpx.AsyncByteStream):
    """An answer's body, its read errors corrected like the request's."""

    def __init__(self, stream: httpx.AsyncByteStream) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except httpx.TimeoutException as exc:
            raise _corrected(exc) from exc.__cause__

    async def aclose(self) -> None:
        await self._stream.aclose()


class OrchestratorTransport(AiohttpTransport):
    """`AiohttpTransport` whose failures are classified as httpx's own transport does."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except httpx.TimeoutException as exc:
            raise _corrected(exc) from exc.__cause__
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        response.stream = _Body(stream)
        return response

    async def exchange(
        self, url: URL, headers: Mapping[str, str], content: bytes, *, timeout_s: float
    ) -> tuple[int, bytes]:
        """`POST url` with `content`: (status, the whole answer, decoded as sent). Each phase
        (connect, the wait for the pool, each read) is bounded by `timeout_s`, as the client's
        `httpx.Request` asks of `handle_async_request`; httpx's exceptions, as there."""
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        timeout = aiohttp.ClientTimeout(
            sock_connect=timeout_s, sock_read=timeout_s, connect=timeout_s
        )
        try:
            with map_aiohttp_exceptions():
                async with self.client.post(
                    url,
                    headers=headers,
                    data=content,
                    allow_redirects=False,
                    timeout=timeout,
                ) as response:
                    return response.status, await response.read()
        except httpx.TimeoutException as exc:
            raise _corrected(exc) from exc.__cause__
