"""A lean HTTP/1.1 transport for the orchestrator call over plain `http://` (ADR 0033).

The recommend route's orchestrator request went through httpx's `AsyncHTTPTransport`:
httpcore's connection pool, h11's state machine and anyio's streams cost about 45 % of the
route's Python CPU at 200 requests/s (py-spy, GIL samples; BENCHMARKS.md, "Batch read and
recommend CPU"). This transport speaks the one exchange the client needs, a request with a
body and a whole answer, straight over asyncio streams, and keeps the connections alive.
It is an `httpx.AsyncBaseTransport`, so `OrchestratorClient` and its tests see no difference;
`https://` (TLS) stays on httpx's transport (`serving.app` chooses).

What it does: one request per connection at a time; idle connections are reused (at most
`max_keepalive`), at most `max_connections` in use at once (a request waits for one within
the `pool` timeout). The answer is read by `Content-Length`, by chunks
(`Transfer-Encoding: chunked`, trailers skipped) or up to the peer's close; a connection the
peer asked to close (`Connection: close`, HTTP/1.0) is not reused. A reused connection that
the peer closed while it was idle (no byte of an answer read) is replaced once by a new one.
Failures are httpx's exceptions, so the client classifies them as before: `ConnectTimeout`,
`WriteTimeout`, `ReadTimeout`, `PoolTimeout` (timeouts), `ConnectError`, `WriteError`,
`ReadError`, `RemoteProtocolError` (transport errors). An exchange that fails or is
cancelled closes its connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx

__all__ = ["PlainHTTPTransport"]

MAX_HEAD_BYTES = 64 * 1024
"""Status line and headers of an answer, at most."""
MAX_BODY_BYTES = 16 * 1024 * 1024
"""An answer's body, at most (the client refuses anything above 64 KiB anyway)."""
_NO_BODY = frozenset({204, 304})


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class _Stale(Exception):
    """A reused connection was closed by the peer before any byte of the answer."""


class PlainHTTPTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 to one `http://` peer (see the module docstring)."""

    def __init__(self, *, max_connections: int = 100, max_keepalive: int = 20) -> None:
        if max_connections < 1 or max_keepalive < 0:
            raise ValueError(
                f"expected max_connections >= 1, max_keepalive >= 0; got {max_connections}, "
                f"{max_keepalive}"
            )
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._max_keepalive = max_keepalive
        self._slots = asyncio.Semaphore(max_connections)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"only http:// here; got {url.scheme}://")
        head = b"%s %s HTTP/1.1\r\n%s\r\n" % (
            request.method.encode(),
            url.raw_path,
            b"".join(b"%s: %s\r\n" % pair for pair in request.headers.raw),
        )
        status, headers, content = await self.exchange(
            (url.host, url.port or 80),
            head,
            request.content,
            request.extensions.get("timeout", {}),
        )
        return httpx.Response(status, headers=headers, content=content)

    async def exchange(
        self,
        where: tuple[str, int],
        head: bytes,
        body: bytes,
        timeout: Mapping[str, float | None],
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """One exchange without httpx's request and response objects: `head` (request line
        and headers, `Content-Length` of `body` among them, ending with the blank line) and
        `body` to `where` (host, port); (status, headers, body) of the answer. `timeout` as
        httpx's extension (`connect`, `read`, `write`, `pool` seconds, None: unbounded)."""
        if self._slots.locked():
            try:
                async with asyncio.timeout(timeout.get("pool")):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection in time") from None
        else:
            await self._slots.acquire()
        try:
            idle = self._idle.get(where)
            while idle:
                conn = idle.pop()
                if not conn.usable():
                    conn.close()
                    continue
                try:
                    return await self._exchange(conn, where, head, body, timeout, reused=True)
                except _Stale:
                    break
            conn = await self._connect(where, timeout.get("connect"))
            return await self._exchange(conn, where, head, body, timeout, reused=False)
        finally:
            self._slots.release()

    async def _connect(self, where: tuple[str, int], timeout_s: float | None) -> _Conn:
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(
                    where[0], where[1], limit=MAX_HEAD_BYTES
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection to {where[0]}:{where[1]} in time") from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        return _Conn(reader, writer)

    async def _exchange(
        self,
        conn: _Conn,
        where: tuple[str, int],
        head: bytes,
        body: bytes,
        timeout: Mapping[str, Any],
        *,
        reused: bool,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        keep = False
        got_bytes = False
        try:
            try:
                conn.writer.write(head + body)
                async with asyncio.timeout(timeout.get("write")):
                    await conn.writer.drain()
            except TimeoutError:
                raise httpx.WriteTimeout("request not sent in time") from None
            except OSError as exc:
                if reused:
                    raise _Stale from exc
                raise httpx.WriteError(str(exc)) from exc
            try:
                async with asyncio.timeout(timeout.get("read")):
                    try:
                        raw_head = await conn.reader.readuntil(b"\r\n\r\n")
                    except asyncio.IncompleteReadError as exc:
                        if reused and not exc.partial:
                            raise _Stale from exc
                        raise httpx.RemoteProtocolError("the peer closed before answering") from exc
                    except OSError as exc:
                        if reused:
                            raise _Stale from exc
                        raise
                    got_bytes = True
                    status, headers, length, chunked, keep = _parse_head(raw_head)
                    if status in _NO_BODY:
                        content = b""
                    elif chunked:
                        content = await _read_chunked(conn.reader)
                    elif length is not None:
                        if length > MAX_BODY_BYTES:
                            raise httpx.RemoteProtocolError(f"answer of {length} bytes")
                        content = await conn.reader.readexactly(length)
                    else:
                        content = await conn.reader.read(MAX_BODY_BYTES + 1)
                        while content and len(content) <= MAX_BODY_BYTES:
                            more = await conn.reader.read(MAX_BODY_BYTES + 1 - len(content))
                            if not more:
                                break
                            content += more
                        keep = False
            except TimeoutError:
                raise httpx.ReadTimeout("no answer in time") from None
            except asyncio.IncompleteReadError as exc:
                raise httpx.RemoteProtocolError(
                    "the peer closed in the middle of its answer"
                ) from exc
            except asyncio.LimitOverrunError as exc:
                raise httpx.RemoteProtocolError("the answer's head is too large") from exc
            except OSError as exc:
                raise httpx.ReadError(str(exc)) from exc
        except BaseException:
            conn.close()
            keep = False
            raise
        finally:
            if keep:
                idle = self._idle.setdefault(where, [])
                if len(idle) < self._max_keepalive:
                    idle.append(conn)
                else:
                    conn.close()
            elif got_bytes:
                conn.close()
        return status, headers, content

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


def _parse_head(raw: bytes) -> tuple[int, list[tuple[bytes, bytes]], int | None, bool, bool]:
    """(status, headers, Content-Length or None, chunked, keep-alive) of an answer's head.

    >>> _parse_head(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\n")
    (200, [(b'Content-Length', b'2')], 2, False, True)
    >>> _parse_head(b"HTTP/1.0 500 Oops\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n")[1:]
    ([(b'Transfer-Encoding', b'chunked')], None, True, False)
    """
    lines = raw[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if version[:5] != b"HTTP/" or len(code) != 3 or not code.isdigit():
        raise httpx.RemoteProtocolError(f"not an HTTP answer: {lines[0][:80]!r}")
    headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    chunked = False
    keep = version == b"HTTP/1.1"
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise httpx.RemoteProtocolError(f"a header without a colon: {line[:80]!r}")
        value = value.strip()
        headers.append((name, value))
        lower = name.strip().lower()
        if lower == b"content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                raise httpx.RemoteProtocolError(f"Content-Length {value[:40]!r}")
            length = int(value)
        elif lower == b"transfer-encoding":
            chunked = value.lower().endswith(b"chunked")
        elif lower == b"connection":
            tokens = {t.strip() for t in value.lower().split(b",")}
            if b"close" in tokens:
                keep = False
            elif b"keep-alive" in tokens:
                keep = True
    if chunked:
        length = None
    return int(code), headers, length, chunked, keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    size_so_far = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise httpx.RemoteProtocolError(f"a chunk size of {size_text[:20]!r}") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        size_so_far += size
        if size_so_far > MAX_BODY_BYTES:
            raise httpx.RemoteProtocolError(f"a chunked answer above {MAX_BODY_BYTES} bytes")
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise httpx.RemoteProtocolError("a chunk not ended by CRLF")
