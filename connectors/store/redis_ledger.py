"""The tip ledger on Redis (`RedisStore` mixes it in); contract in `connectors.store.ledger`.

Keys (same hash tag as the user's features, so deletion stays one atomic script):

    p:{u}:ledger     hash  h:<tip> header JSON, a:<tip>:<agent> agent values JSON,
                           r:<tip>:<reaction id> reaction JSON
    p:{u}:ledger_at  zset  tip id -> shown_at_ms (for --since and retention)

Both keys are listed in `p:{u}:keys`, so the user's deletion (write script) removes them at
once. Both expire one retention after the user's last tip; older tips are trimmed when a new
one is recorded. Consent revocation: the `ledger_forget` script, run in the flow's write
pipeline for every write with removed agents, deletes those agents' `a:` fields. The scripts
are `connectors/store/lua/ledger_*.lua`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from connectors.exceptions import StoreError
from connectors.store.base import dumps_compact
from connectors.store.ledger import LedgerEntry, cutoff_ms, render

T = TypeVar("T")

EXPORT_CHUNK = 200
"""Users read per pipelined round trip by `ledger_export`."""


class RedisLedgerMixin:
    """`TipLedger` for `RedisStore` (uses its client, key helpers, guard and scripts)."""

    _r: Any
    _conn: Any
    _ledger_only: bool
    _users_key: str
    _base: Callable[[str], str]
    _tomb_key: Callable[[str], str]
    _guard: Callable[..., Any]
    _eval: Callable[[str, list[str], list[Any]], Any]
    _evalsha_all: Callable[..., list[Any]]

    def _ledger_keys(self, user_id: str) -> tuple[str, str]:
        base = self._base(user_id)
        return f"{base}ledger", f"{base}ledger_at"

    def ledger_forget_call(
        self, user_id: str, agent_ids: set[str]
    ) -> tuple[str, list[str], list[Any]]:
        """The `ledger_forget` script call for a write that removed `agent_ids`."""
        return "ledger_forget", [self._ledger_keys(user_id)[0]], sorted(agent_ids)

    def _tip_keys_and_args(
        self, entry: LedgerEntry, *, retention_ms: int, now_ms: int
    ) -> tuple[list[str], list[Any]] | None:
        """The `ledger_record` script's keys and arguments of `entry` (one tip's group); None
        when it is already past retention."""
        if entry.shown_at_ms < cutoff_ms(now_ms, retention_ms):
            return None
        ledger, at = self._ledger_keys(entry.user_id)
        base = self._base(entry.user_id)
        keys = [ledger, at, f"{base}keys", self._tomb_key(entry.user_id), f"{base}meta"]
        header, values = entry.encoded()
        args: list[Any] = [
            entry.tip_id,
            entry.shown_at_ms,
            header,
            cutoff_ms(now_ms, retention_ms),
            max(retention_ms - (now_ms - entry.shown_at_ms), 1),
            "0" if self._ledger_only else "1",
        ]
        for agent_id, data in values:
            args += (agent_id, data)
        return keys, args

    @staticmethod
    def _record_call(
        tips: Sequence[tuple[list[str], list[Any]]],
    ) -> tuple[str, list[str], list[Any]]:
        """One `ledger_record` script call recording `tips` (their keys and arguments)."""
        keys: list[str] = []
        args: list[Any] = []
        for tip_keys, tip_args in tips:
            keys += tip_keys
            args.append(len(tip_args))
            args += tip_args
        return "ledger_record", keys, args

    def record_tip(self, entry: LedgerEntry, *, retention_ms: int, now_ms: int) -> bool:
        tip = self._tip_keys_and_args(entry, retention_ms=retention_ms, now_ms=now_ms)
        if tip is None:
            return False
        call = self._record_call([tip])

        def run() -> Any:
            [reply] = self._eval(*call)
            if isinstance(reply, Exception):
                raise reply
            return reply

        return bool(self._guard("record_tip", run))

    def record_tips(
        self, entries: Sequence[tuple[LedgerEntry, int]], *, retention_ms: int
    ) -> list[bool | StoreError]:
        """`record_tip` of each (entry, now_ms), in one round trip: on one server one
        `ledger_record` call for them all (each tip in its own pcall, so each stays atomic on
        its own and fails alone: ADR 0046), on a cluster one call a tip (a call's keys must
        share a slot), pipelined. Per entry its result, or the `StoreError` of its own
        failure. A failure of the round trip itself raises `StoreError`."""
        tips = [self._tip_keys_and_args(e, retention_ms=retention_ms, now_ms=n) for e, n in entries]
        sent = [t for t in tips if t is not None]
        replies: list[Any] = []
        if sent:
            if self._conn.cluster:
                calls = [self._record_call([t]) for t in sent]
            else:
                calls = [self._record_call(sent)]

            def run() -> list[Any]:
                out: list[Any] = []
                for reply in self._evalsha_all(calls, write=False):
                    if isinstance(reply, Exception):  # the call failed: each of its tips
                        reply = [reply] * (len(sent) if len(calls) == 1 else 1)
                    out += reply
                return out

            replies = self._guard("record_tips", run)
        got = iter(replies)
        out: list[bool | StoreError] = []
        for tip in tips:
            if tip is None:
                out.append(False)
                continue
            reply = next(got)
            if isinstance(reply, Exception):
                out.append(StoreError(f"Redis failed (record_tip): {reply}"))
            else:
                out.append(bool(reply))
        return out

    def record_reaction(
        self, user_id: str, tip_id: str, *, reaction: str, reaction_id: str, at_ms: int
    ) -> bool:
        ledger, at = self._ledger_keys(user_id)
        body = dumps_compact({"reaction": reaction, "reaction_id": reaction_id, "at_ms": at_ms})
        args = [tip_id, reaction_id, body]
        done = self._guard(
            "record_reaction", lambda: self._eval("ledger_react", [ledger, at], args)
        )
        return bool(done)

    def ledger_export(
        self, *, since_ms: int | None, now_ms: int, retention_ms: int
    ) -> Iterator[dict[str, Any]]:
        oldest = cutoff_ms(now_ms, retention_ms)
        if since_ms is not None:
            oldest = max(oldest, since_ms)
        users: list[str] = self._guard("ledger_export", self._ledger_users)
        for i in range(0, len(users), EXPORT_CHUNK):
            chunk = users[i : i + EXPORT_CHUNK]

            def read(chunk: list[str] = chunk) -> list[Any]:
                commands = [("HGETALL", self._ledger_keys(u)[0]) for u in chunk]
                replies = self._conn.pipeline(commands, write=False)
                for r in replies:
                    if isinstance(r, Exception):
                        raise r
                return [r if isinstance(r, dict) else _pairs(r) for r in replies]

            for fields in self._guard("ledger_export", read):
                yield from _lines(fields, oldest)

    def _ledger_users(self) -> list[str]:
        """The users whose ledger `ledger_export` reads: the users index, or, in a store that
        holds only the ledger (ADR 0052, no index there), the users of its `ledger_at` keys,
        scanned on every server (an export is an offline job)."""
        if not self._ledger_only:
            return list(self._r.zrange(self._users_key, 0, -1))
        head, tail = self._ledger_keys("~")[1].split("{~}")
        client = self._r
        servers = client.get_primaries() if self._conn.cluster else [None]
        users: set[str] = set()
        for node in servers:
            server = client if node is None else client.get_redis_connection(node)
            for key in server.scan_iter(match=f"{_glob(head)}{{*}}{_glob(tail)}", count=1000):
                name = key.decode() if isinstance(key, bytes) else key
                users.add(name[len(head) + 1 : -len(tail) - 1])
        return sorted(users)


def _glob(text: str) -> str:
    """`text` matched literally in a SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _lines(fields: dict[str, str], oldest_ms: int) -> Iterator[dict[str, Any]]:
    headers: dict[str, dict[str, Any]] = {}
    values: dict[str, dict[str, Any]] = {}
    reactions: dict[str, list[dict[str, Any]]] = {}
    for name, raw in fields.items():
        kind, _, rest = name.partition(":")
        if kind == "h":
            headers[rest] = json.loads(raw)
        elif kind == "a":
            tip, _, agent_id = rest.partition(":")
            values.setdefault(tip, {})[agent_id] = json.loads(raw)
        elif kind == "r":
            tip = rest.partition(":")[0]
            reactions.setdefault(tip, []).append(json.loads(raw))
    ordered = sorted(headers.items(), key=lambda kv: (kv[1]["shown_at_ms"], kv[0]))
    for tip, header in ordered:
        if header["shown_at_ms"] >= oldest_ms:
            yield render(header, values.get(tip, {}), reactions.get(tip, []))
