"""The batch read of named agents on one Redis as plain commands in one `MULTI`/`EXEC`
(`RedisStore.read_users_bytes(..., agents=...)`, `POST /v1/features/batch`; ADR 0041).

The `read` script (`lua/read.lua`) answers the same users, but Redis copies every value it
reads into a Lua string and every one of them again into the script's reply: for 100 users of
6 agents (~400 kB) that cost Redis ~6.9 ms a call against ~2.9 ms for the same commands in a
transaction (one scratch run on the bench's data, `INFO commandstats`), and Redis is single
threaded: every other client waits meanwhile. Here each user is `EXISTS meta`, `HMGET meta`
and one `HMGET` per named agent, and one `MGET` of every feedback and snippet key at the end;
`MULTI`/`EXEC` keeps the read atomic, as the script's was, so a user is never half old and
half new. The commands are written as RESP directly (key names vary, the rest is constant per
call) and the ~800 `QUEUED` replies are checked as bytes, in one comparison, without redis-py's
per-reply layer, which alone would cost more than Redis saves.

The answer is exactly the script's: for each user `None` when its meta key does not exist,
else a `StoredUserBytes` with the consents and stamps of meta, the feedback, and a row
`(agent_id, version, params, extras, event_time, ingest_time, computed_at, snippet)` per named
agent whose hash holds a version, in the order named (`tests/integration/test_store.py`
compares the two). A cluster, a client without hiredis and the reads of every stored agent
keep the script.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis._parsers.socket import SERVER_CLOSED_CONNECTION_ERROR
from redis.exceptions import ResponseError

from connectors.store.base import StoredUserBytes

try:
    from redis._parsers.hiredis import NOT_ENOUGH_DATA
except ImportError:  # another redis-py layout: the script reads (`read_users_in_transaction`)
    NOT_ENOUGH_DATA = None

__all__ = ["read_users_in_transaction"]

_AGENT_FIELDS = (b"version", b"params", b"extras", b"event_time", b"ingest_time", b"computed_at")
_META_FIELDS = (b"consents", b"newest_event_ms", b"newest_ingest_ms")
_MULTI = b"*1\r\n$5\r\nMULTI\r\n"
_EXEC = b"*1\r\n$4\r\nEXEC\r\n"


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _reader(conn: Any) -> Any:
    """The hiredis reader of a redis-py connection, or None (pure-Python parser)."""
    return getattr(getattr(conn, "_parser", None), "_reader", None)


def _pieces(tokens: Sequence[bytes | tuple[bytes]], base_len: int) -> list[bytes]:
    """RESP of `tokens` (bytes as they are; `(suffix,)` a bulk key `<base><suffix>`) split where
    the base goes, for bases of `base_len` bytes: `base.join(pieces)` is the RESP of one user."""
    pieces, current = [], b""
    for token in tokens:
        if isinstance(token, tuple):
            pieces.append(current + b"$%d\r\n" % (base_len + len(token[0])))
            current = token[0] + b"\r\n"
        else:
            current += token
    pieces.append(current)
    return pieces


_PIECES_KEPT = 64
"""(agents, base length) pairs whose request pieces `_request` keeps across calls."""
_pieces_kept: dict[tuple[tuple[bytes, ...], int], tuple[list[bytes], list[bytes]]] = {}


def _user_pieces(agents: tuple[bytes, ...], base_len: int) -> tuple[list[bytes], list[bytes]]:
    """The pieces of one user's commands and of its `MGET` keys for bases of `base_len` bytes,
    made once per process for each (agents, length): a batch of 100 users then costs its
    requests 100 `bytes.join`s, not a rebuild of every command."""
    made = _pieces_kept.get((agents, base_len))
    if made is not None:
        return made
    commands: list[bytes | tuple[bytes]] = [b"*2\r\n$6\r\nEXISTS\r\n", (b"meta",)]
    commands += [b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(_META_FIELDS)), (b"meta",)]
    commands += [_bulk(f) for f in _META_FIELDS]
    agent_tail = b"".join(_bulk(f) for f in _AGENT_FIELDS)
    for a in agents:
        commands += [b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(_AGENT_FIELDS)), (b"agent:" + a,)]
        commands.append(agent_tail)
    strings: list[bytes | tuple[bytes]] = [(b"feedback",), *((b"snippet:" + a,) for a in agents)]
    if len(_pieces_kept) >= _PIECES_KEPT:  # never more than a few in practice: bounded anyway
        _pieces_kept.clear()
    made = _pieces_kept[(agents, base_len)] = (
        _pieces(commands, base_len),
        _pieces(strings, base_len),
    )
    return made


def _request(bases: Sequence[bytes], agents: Sequence[bytes]) -> tuple[bytes, int]:
    """The RESP of the transaction for users of key prefixes `bases`, and the number of
    commands queued in it (`QUEUED` replies). Each user's commands are one `bytes.join` of
    pieces kept across calls (`_user_pieces`)."""
    named = tuple(agents)
    parts: list[bytes] = [_MULTI]
    keys: list[bytes] = []
    add_part, add_key = parts.append, keys.append
    made: tuple[list[bytes], list[bytes]] | None = None
    made_len = -1
    for base in bases:
        if len(base) != made_len:
            made_len = len(base)
            made = _user_pieces(named, made_len)
        assert made is not None
        add_part(base.join(made[0]))
        add_key(base.join(made[1]))
    parts.append(b"*%d\r\n$4\r\nMGET\r\n" % (len(bases) * (1 + len(agents)) + 1))
    parts += keys
    parts.append(_EXEC)
    return b"".join(parts), len(bases) * (2 + len(agents)) + 1


_acks_kept: dict[int, bytes] = {}


def _acks(queued: int) -> bytes:
    """What Redis answers `MULTI` and `queued` commands it queues, before `EXEC`'s reply."""
    acks = _acks_kept.get(queued)
    if acks is None:
        if len(_acks_kept) >= _PIECES_KEPT:
            _acks_kept.clear()
        acks = _acks_kept[queued] = b"+OK\r\n" + b"+QUEUED\r\n" * queued
    return acks


def _recv(parser: Any) -> int:
    """Read the next bytes on the parser's socket into its buffer (`parser._buffer`), not fed
    to its reader, and answer how many; errors as redis-py's parser raises them (so the
    connection's retry policy sees the same exceptions)."""
    sock, buffer = parser._sock, parser._buffer
    if sock is None:  # disconnected meanwhile by another thread
        raise redis_errors.ConnectionError(SERVER_CLOSED_CONNECTION_ERROR)
    try:
        got: int = sock.recv_into(buffer)
    except TimeoutError as exc:  # the socket's timeout (`socket.timeout`)
        raise redis_errors.TimeoutError("Timeout reading from socket") from exc
    except OSError as exc:
        raise redis_errors.ConnectionError(f"Error while reading from socket: {exc.args}") from exc
    if got == 0:
        raise redis_errors.ConnectionError(SERVER_CLOSED_CONNECTION_ERROR)
    return got


def _exec_reply(conn: Any, queued: int) -> Any:
    """Read the replies of `MULTI`, `queued` commands and `EXEC` from `conn` and answer
    `EXEC`'s. The acknowledgements (`+OK`, then `+QUEUED` each) are checked as bytes, in one
    comparison instead of a reply object each (~800 a batch of 100 users); when they are not
    all acknowledgements (a command Redis refused to queue: `EXECABORT` then) every reply is
    parsed and the first error raised once all are read. Only the acknowledgements are copied
    out of the socket buffer: whatever a read brings of `EXEC`'s reply (with the store's large
    reads, often most of it) goes to the reader straight from the buffer (ADR 0059)."""
    parser = conn._parser
    reader = _reader(conn)
    fill: Callable[[], Any] = parser.read_from_socket
    acks = _acks(queued)
    expected = memoryview(acks)
    head = bytearray()
    while len(head) < len(acks):
        got = _recv(parser)
        buffer = parser._buffer
        take = min(got, len(acks) - len(head))
        head += memoryview(buffer)[:take]
        if head != expected[: len(head)]:
            reader.feed(head)
            if got > take:
                reader.feed(buffer, take, got - take)
            return _first_error(reader, fill, queued)
        if got > take:
            reader.feed(buffer, take, got - take)
    reply = reader.gets(False)
    while reply is NOT_ENOUGH_DATA:
        fill()
        reply = reader.gets(False)
    return reply


def _first_error(reader: Any, fill: Callable[[], Any], queued: int) -> Any:
    """Parse the replies of `MULTI`, `queued` commands and `EXEC`, reading more as needed;
    raise the first error reply once all are read (the connection stays usable), else answer
    `EXEC`'s."""
    refused: Any = None
    reply = None
    for _ in range(queued + 2):
        reply = reader.gets(False)
        while reply is NOT_ENOUGH_DATA:
            fill()
            reply = reader.gets(False)
        if isinstance(reply, ResponseError) and refused is None:
            refused = reply
    if refused is not None:
        raise refused
    return reply


def read_users_in_transaction(
    pool: Any, bases: Sequence[str], agents: Sequence[str]
) -> list[StoredUserBytes | None] | None:
    """Each user (by key prefix `bases`, e.g. `p:{u}:`) as `lua/read.lua` answers it with
    `agents` named, in one round trip on a connection of `pool` (a redis-py connection pool);
    None, with nothing sent, when its connections do not parse with hiredis. Connection errors
    and timeouts are redis-py's, retried by the connection's policy as a pipeline is; an error
    reply is raised."""
    conn = pool.get_connection()
    reader = _reader(conn)
    # An idle connection's reader has nothing buffered: it answers the sentinel it was made
    # with, which must be the one this module waits on (else the script reads).
    if NOT_ENOUGH_DATA is None or reader is None or reader.gets(False) is not NOT_ENOUGH_DATA:
        pool.release(conn)
        return None
    names = [a.encode() for a in agents]
    request, queued = _request([b.encode() for b in bases], names)

    def send_and_read() -> Any:
        conn.send_packed_command([request])
        return _exec_reply(conn, queued)

    try:
        reply = conn.retry.call_with_retry(send_and_read, lambda _error: conn.disconnect())
    except BaseException:
        conn.disconnect()  # replies may still be on their way: never reuse it
        raise
    finally:
        pool.release(conn)
    if not isinstance(reply, list):
        raise ResponseError(f"expected the EXEC reply of the batch read; got {reply!r}")
    # Every part is an integer (EXISTS) or an array (HMGET, MGET): checked in one pass in C;
    # anything else is looked at part by part, and an error reply raised.
    if not _PART_TYPES.issuperset(map(type, reply)):
        for part in reply:
            if isinstance(part, ResponseError):
                raise part
    return _users(reply, names)


_PART_TYPES = frozenset((int, list))


def _users(reply: list[Any], names: list[bytes]) -> list[StoredUserBytes | None]:
    n = len(names)
    per_user = 2 + n
    strings = reply[-1]
    users: list[StoredUserBytes | None] = []
    add = users.append
    s = 0  # the user's feedback in `strings`; its snippets follow, one per named agent
    for k in range(0, len(reply) - 1, per_user):
        if reply[k]:
            consents, newest_event, newest_ingest = reply[k + 1]
            agents, snippets = reply[k + 2 : k + 2 + n], strings[s + 1 : s + 1 + n]
            # Times as stored (`et`, `it`, `ca`: event, ingest, computed at); unpacked, not
            # indexed, and one comprehension a user: this runs for every agent of a batch.
            rows: list[Sequence[Any]] = [
                (name, version, params, extras, et, it, ca, snippet)
                for name, (version, params, extras, et, it, ca), snippet in zip(
                    names, agents, snippets, strict=True
                )
                if version is not None
            ]
            add(StoredUserBytes(consents, strings[s], newest_event, newest_ingest, rows))
        else:
            add(None)
        s += 1 + n
    return users
