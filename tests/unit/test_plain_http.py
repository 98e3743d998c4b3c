"""The lean orchestrator transport (`serving/plain_http.py`, ADR 0033) against raw HTTP peers:
answer framings, connection reuse, a peer that closes an idle connection, errors as httpx's."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from serving.plain_http import PlainHTTPTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[bool]]
"""Answers one request (the n-th on its connection); False closes the connection."""


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


async def _exchange(
    handler: Handler, calls: int, read_s: float = 2.0
) -> tuple[list[tuple[int, bytes]], list[int]]:
    """`calls` requests through one transport; (status, body) each, and the connections the
    peer saw (requests per connection)."""
    per_conn: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        per_conn.append(0)
        me = len(per_conn) - 1
        try:
            while True:
                try:
                    await _read_request(reader)
                except asyncio.IncompleteReadError:
                    return
                per_conn[me] += 1
                if not await handler(reader, writer, per_conn[me]):
                    return
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    out = []
    try:
        await _calls(port, calls, read_s, out)
    finally:
        await asyncio.sleep(0.05)  # the closed connections' ends, before the loop ends
        server.close()
        await server.wait_closed()
    return out, per_conn


async def _calls(port: int, calls: int, read_s: float, out: list[tuple[int, bytes]]) -> None:
    async with PlainHTTPTransport() as transport:
        for _ in range(calls):
            request = httpx.Request(
                "POST",
                f"http://127.0.0.1:{port}/v1/chat/completions",
                content=b'{"a":1}',
                extensions={"timeout": {"connect": 2, "read": read_s, "write": 2, "pool": 2}},
            )
            response = await transport.handle_async_request(request)
            out.append((response.status_code, await response.aread()))
            await asyncio.sleep(0.01)


def _answer(body: bytes, *extra: bytes, status: bytes = b"200 OK") -> bytes:
    head = b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n" % (
        status,
        len(body),
        b"".join(e + b"\r\n" for e in extra),
    )
    return head + body


def test_content_length_answers_reuse_one_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(_answer(b'{"n":%d}' % n))
        await writer.drain()
        return True

    out, conns = asyncio.run(_exchange(handler, 3))
    assert out == [(200, b'{"n":1}'), (200, b'{"n":2}'), (200, b'{"n":3}')]
    assert conns == [3]


def test_a_chunked_answer_is_read_whole() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(
            b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\nTrailer: 1\r\n\r\n"
        )
        await writer.drain()
        return True

    out, conns = asyncio.run(_exchange(handler, 2))
    assert out == [(500, b"abcdefg")] * 2
    assert conns == [2]


def test_connection_close_and_answers_up_to_the_close() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nall of it")
        await writer.drain()
        return False

    out, conns = asyncio.run(_exchange(handler, 2))
    assert out == [(200, b"all of it")] * 2
    assert conns == [1, 1]


def test_a_peer_that_closed_an_idle_connection_gets_a_new_one() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(_answer(b"ok"))  # says nothing of closing, then closes
        await writer.drain()
        return False

    out, conns = asyncio.run(_exchange(handler, 3))
    assert out == [(200, b"ok")] * 3
    assert conns == [1, 1, 1]


def test_failures_are_httpx_exceptions() -> None:
    async def closes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        return False

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        return False

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        await reader.read(1)  # until the client gives up and closes
        return False

    with pytest.raises(httpx.RemoteProtocolError):
        asyncio.run(_exchange(closes, 1))
    with pytest.raises(httpx.RemoteProtocolError):
        asyncio.run(_exchange(garbage, 1))
    with pytest.raises(httpx.ReadTimeout):
        asyncio.run(_exchange(silent, 1, read_s=0.2))

    async def refused() -> None:
        with socket_port() as port:
            pass
        request = httpx.Request("POST", f"http://127.0.0.1:{port}/", content=b"")
        async with PlainHTTPTransport() as transport:
            await transport.handle_async_request(request)

    with pytest.raises(httpx.ConnectError):
        asyncio.run(refused())
    with pytest.raises(httpx.UnsupportedProtocol):
        asyncio.run(PlainHTTPTransport().handle_async_request(httpx.Request("GET", "https://x/")))


def socket_port() -> _Port:
    return _Port()


class _Port:
    """A free port (bound, then released: nothing listens on it)."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        return int(self._sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._sock.close()
