"""The store's Lua scripts: `connectors/store/lua/<name>.lua`, loaded once per process.

Each file starts with comments saying its KEYS, ARGV and reply. Every script touches keys of
one cluster slot only: one user's keys (hash tag `{user_id}`), or the cross-user freshness
keys (tag `{P~fresh}`), or the identity marker; Redis Cluster refuses anything else with
CROSSSLOT, which `tests/integration/test_store_cluster.py` checks.

`Scripts.sha(name)` is the SHA1 Redis knows a script by (computed here, so it is the same on
every node); `Scripts.load(conn)` sends every script to the server (every master of a cluster)
and is called again after a NOSCRIPT (a restarted or promoted node has an empty script cache).
A missing or unreadable file is an `OSError` naming it at import time, not a failure mid-write.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

from redis.client import NEVER_DECODE
from redis.exceptions import NoScriptError, ResponseError

_pack_command: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _pack_command
except ImportError:  # redis-py without hiredis: the client's own pipeline
    _pack_command = None

__all__ = ["SCRIPT_NAMES", "SOURCES", "STREAM_CHUNK", "RedisScriptsMixin", "Scripts"]

SCRIPT_NAMES = (
    "identity_create",
    "identity_state",
    "write",
    "read",
    "stamp",
    "reflect",
    "summary",
    "ledger_record",
    "ledger_react",
    "ledger_forget",
)


def _read(name: str) -> str:
    return (resources.files("connectors.store") / "lua" / f"{name}.lua").read_text("utf-8")


SOURCES = {name: _read(name) for name in SCRIPT_NAMES}
"""Script name -> Lua source."""


STREAM_CHUNK = 64
"""Commands of a streamed write (`RedisScriptsMixin._stream`) packed and sent at a time, each
chunk in one MULTI/EXEC: Redis applies the first chunks while the client packs the rest, and
with `appendfsync always` (ADR 0010) fsyncs its append-only file once per chunk instead of
once per event-loop pass (about 20 commands, one 16 KB read): ADR 0042. A command that does
the work of several (a `write` call of many users, ADR 0055) counts as that many."""


class Scripts:
    """SHA1s of the scripts and loading them into a server that lost them."""

    def __init__(self) -> None:
        self.shas = {n: hashlib.sha1(s.encode()).hexdigest() for n, s in SOURCES.items()}
        self.loaded = False

    def sha(self, name: str) -> str:
        return self.shas[name]

    def load(self, conn: Any) -> None:
        """Load every script through `conn` (a `RedisConnection`)."""
        for source in SOURCES.values():
            conn.script_load(source)
        self.loaded = True


class RedisScriptsMixin:
    """Running the scripts for `RedisStore`: by SHA1, reloading them after a NOSCRIPT."""

    _conn: Any
    _scripts: Scripts
    _r: Any

    def _load_scripts(self) -> None:
        self._scripts.load(self._conn)

    def _sha(self, name: str) -> str:
        if not self._scripts.loaded:
            self._load_scripts()
        return self._scripts.sha(name)

    def _evalsha_all(
        self,
        calls: Sequence[tuple[str, list[str], list[Any]]],
        *,
        write: bool,
        before: Sequence[Sequence[Any]] = (),
        after: Sequence[Sequence[Any]] = (),
        decode: bool = True,
        weights: Sequence[int] | None = None,
    ) -> list[Any]:
        """Replies of `before` commands, script calls (name, keys, args) and `after` commands,
        in one pipeline (one per server on a cluster); a NOSCRIPT reloads the scripts and
        re-runs only the refused calls. Errors come back as values; `decode=False` leaves
        replies as bytes. On one standalone server decoded replies are streamed (`_stream`),
        each chunk one MULTI/EXEC: the store's writes and the tip ledger's records cost one
        AOF fsync a chunk under `appendfsync always` (ADRs 0041, 0042); `weights` (one per
        call) says how many commands' work each call is, for the chunks. `write` asks a
        cluster to wait for replicas after the calls."""

        def command(name: str, keys: list[str], args: list[Any]) -> tuple[Any, ...]:
            return ("EVALSHA", self._sha(name), len(keys), *keys, *args)

        scripts = [command(*c) for c in calls]
        if decode and _pack_command is not None and not self._conn.cluster:
            weighed = None
            if weights is not None:
                weighed = [*[1] * len(before), *weights, *[1] * len(after)]
            replies = self._stream([*before, *scripts, *after], weighed)
        else:
            replies = self._conn.pipeline([*before, *scripts, *after], write=write, decode=decode)
        first = len(before)
        retry = [i for i in range(len(calls)) if isinstance(replies[first + i], NoScriptError)]
        if retry:
            self._load_scripts()
            again = self._conn.pipeline(
                [command(*calls[i]) for i in retry], write=write, decode=decode
            )
            for i, r in zip(retry, again, strict=True):
                replies[first + i] = r
        return replies

    def _stream(
        self, commands: Sequence[Sequence[Any]], weights: Sequence[int] | None = None
    ) -> list[Any]:
        """Replies of `commands` (errors as values) on one standalone server, in one round trip
        like the client's pipeline, but sent `STREAM_CHUNK` commands at a time (of `weights`,
        one per command, when given: a chunk ends once they reach it) as they are
        packed (hiredis, with no per-argument Python pass), so the server applies the first
        writes of a large batch while the rest are packed. Each chunk is one MULTI/EXEC: one
        append-only-file write and fsync per chunk (ADR 0042); a command refused before it ran
        (EXECABORT: nothing of its chunk ran) comes back as its error, like a script's error.
        The client's retry policy applies to the whole call, as to its pipeline (resent whole
        after a connection error; a chunk the server had not executed is discarded whole)."""
        pool = self._r.connection_pool
        conn = pool.get_connection()
        try:
            return list(
                conn.retry.call_with_retry(
                    lambda: _send_and_read(conn, commands, weights),
                    lambda _error: conn.disconnect(),
                )
            )
        except BaseException:
            conn.disconnect()  # replies may still be on their way: never reuse it
            raise
        finally:
            pool.release(conn)

    def _eval(self, name: str, keys: list[str], args: list[Any], *, decode: bool = True) -> Any:
        """One script call; `decode=False` leaves the reply as bytes."""
        options: dict[str, Any] = {} if decode else {NEVER_DECODE: True}
        command = ("EVALSHA", self._sha(name), len(keys), *keys, *args)
        try:
            return self._r.execute_command(*command, **options)
        except NoScriptError:
            self._load_scripts()
            return self._r.execute_command("EVALSHA", self._sha(name), *command[2:], **options)


def _chunks(
    commands: Sequence[Sequence[Any]], weights: Sequence[int] | None
) -> list[Sequence[Sequence[Any]]]:
    """`commands` cut into chunks of `STREAM_CHUNK` commands, or of that much weight."""
    if weights is None:
        return [commands[i : i + STREAM_CHUNK] for i in range(0, len(commands), STREAM_CHUNK)]
    chunks: list[Sequence[Sequence[Any]]] = []
    start, weight = 0, 0
    for i, w in enumerate(weights):
        weight += w
        if weight >= STREAM_CHUNK:
            chunks.append(commands[start : i + 1])
            start, weight = i + 1, 0
    if start < len(commands):
        chunks.append(commands[start:])
    return chunks


def _send_and_read(
    conn: Any, commands: Sequence[Sequence[Any]], weights: Sequence[int] | None = None
) -> list[Any]:
    assert _pack_command is not None
    pack = _pack_command
    multi, exec_ = pack(("MULTI",)), pack(("EXEC",))
    chunks = _chunks(commands, weights)
    for i, chunk in enumerate(chunks):
        # One buffer, one `sendall`: the client sends each item of a list on its own, and
        # every send gives up the GIL, which a busy flow worker then holds for up to a switch
        # interval (5 ms) before the writer thread gets it back.
        packed = b"".join([multi, *[pack(tuple(c)) for c in chunk], exec_])
        conn.send_packed_command([packed], check_health=i == 0)
    replies: list[Any] = []
    read = conn.read_response
    for chunk in chunks:
        read()  # MULTI's OK
        refused: list[ResponseError | None] = []
        for _ in chunk:
            try:
                read()  # QUEUED
                refused.append(None)
            except ResponseError as exc:  # refused before it ran (arity, OOM, ...)
                refused.append(exc)
        try:
            replies.extend(read())  # an error reply inside is a value, as with a pipeline
        except ResponseError as exc:  # EXECABORT: nothing of the chunk ran
            replies.extend(exc if r is None else r for r in refused)
    return replies
