"""The feature store interface: what the flow writes and the API reads.

Two implementations share it: `RedisStore` (production) and `SQLiteStore`
(the embedded default for one machine). Only `connectors` knows key layouts.
Every timestamp is integer epoch milliseconds (UTC).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any, Protocol

from connectors.store.ledger import TipLedger

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_C_ENCODER = (
    None
    if c_make_encoder is None
    else c_make_encoder(
        None, _ENCODER.default, encode_basestring, None, ":", ",", False, False, True
    )
)
"""`_ENCODER`'s C encoder, made once: `JSONEncoder.encode` makes a new one at every call, half
of what encoding an agent's parameters costs (ADR 0029). The same text; without the circular
reference check (a circular value is a RecursionError instead of a ValueError)."""


def dumps_compact(value: Any) -> str:
    """The JSON both stores write: compact, UTF-8 kept (one encoder: `json.dumps` with
    options would build a new one per call).

    >>> dumps_compact({"value": [1.5, None, "é"], "source": "user"})
    '{"value":[1.5,null,"é"],"source":"user"}'
    """
    if _C_ENCODER is None or value.__class__ is str:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODER(value, 0))


LAG_SAMPLES_PER_WRITE = 256
"""At most this many lag samples per agent per written batch (evenly spaced when more)."""
LAG_SAMPLES_KEPT = 2000
"""Lag sample batches kept per agent (Redis stream entries; SQLite rows are capped at 10x this)."""
LAG_SAMPLES_READ = 5000
"""A freshness summary reads at most this many of an agent's most recent lag samples."""
PRUNE_PER_SUMMARY = 1000
"""A freshness summary forgets at most this many idle pending users (see `freshness_summary`)."""


@dataclass(slots=True)
class AgentWrite:
    """One agent's new view of one user."""

    agent_id: str
    version: str
    params: dict[str, dict[str, Any]]
    """name -> {"value", "source"[, "inferred_value"]} (`Param.as_dict()`)."""
    extras: dict[str, Any]
    snippet: str | None
    ttl_seconds: int
    event_time_ms: int
    """Occurred-at of the newest event folded in: the write guard (older never replaces newer)."""
    ingest_time_ms: int
    """Kafka timestamp (or read time for files) of the newest event folded in."""
    computed_at_ms: int
    params_json: str | None = None
    """`dumps_compact(params)` when the writer already encoded it (`flows.folding.build_write`
    does, for its write dedupe), so the store does not encode it again; None: the store does.
    When set it must be exactly that text: the store writes it as the parameters."""
    extras_json: str | None = None
    """`dumps_compact(extras)`, the same way."""

    def params_text(self) -> str:
        """The parameters as the store writes them (`dumps_compact`, encoded once)."""
        text = self.params_json
        return dumps_compact(self.params) if text is None else text

    def extras_text(self) -> str:
        """The extras as the store writes them (`dumps_compact`, encoded once)."""
        text = self.extras_json
        return dumps_compact(self.extras) if text is None else text


@dataclass(slots=True)
class UserWrite:
    """Everything that changed for one user within one batch, coalesced."""

    user_id: str
    agents: dict[str, AgentWrite] = field(default_factory=dict)
    removed_agents: set[str] = field(default_factory=set)
    """Agents whose consent was revoked: their parameters and snippet are deleted."""
    feedback: dict[str, Any] | None = None
    consents: dict[str, bool] | None = None
    deleted_at_ms: int | None = None
    """Set when the user was deleted: every key goes, a tombstone stays."""
    newest_event_ms: int | None = None
    """Occurred-at of the newest event seen for the user (freshness bookkeeping)."""
    newest_ingest_ms: int | None = None
    """Ingest time of the newest event folded in: what the flow has *reflected* for the user."""
    history: dict[str, int] | None = None
    """Where the writer's history of the user starts (ADR 0009): source (`"topic:partition"`)
    -> Kafka offset of the first message of the user the writer folded there. The store refuses
    the write when it does not cover the stored one's (`history_covers`); None (files, or a
    writer that does not track it) skips the check and leaves the stored marker alone."""


def encode_history(history: Mapping[str, int]) -> str:
    """The stored form of a history marker: `source=offset` pairs, space-separated, sorted.

    >>> encode_history({"oo.signals.v1:3": 17, "oo.feedback.v1:3": 2})
    'oo.feedback.v1:3=2 oo.signals.v1:3=17'
    """
    return " ".join(f"{source}={offset}" for source, offset in sorted(history.items()))


def decode_history(text: str | None) -> dict[str, int]:
    """`encode_history` read back (empty for None or '')."""
    out: dict[str, int] = {}
    for pair in (text or "").split():
        source, _, offset = pair.rpartition("=")
        out[source] = int(offset)
    return out


def history_covers(writer: Mapping[str, int], stored: Mapping[str, int]) -> bool:
    """True when a writer whose history starts at `writer` misses no message the stored
    features were computed from: every source of `stored` is in `writer`, starting at or
    before the stored start. A source only the writer has is more history, never a problem.

    Offsets are comparable only within one topic-partition, so a stored source that the
    writer lacks counts as missed (retention dropped all of the user's messages there, or the
    writer reads other topics).

    >>> history_covers({"s:0": 5, "f:0": 9}, {"s:0": 5})
    True
    >>> history_covers({"s:0": 8}, {"s:0": 5})
    False
    >>> history_covers({"f:0": 9}, {"s:0": 5, "f:0": 9})
    False
    """
    for source, start in stored.items():
        mine = writer.get(source)
        if mine is None or mine > start:
            return False
    return True


@dataclass(slots=True)
class StoredAgent:
    agent_id: str
    version: str
    params: dict[str, dict[str, Any]]
    extras: dict[str, Any]
    event_time_ms: int
    ingest_time_ms: int
    computed_at_ms: int
    snippet: str | None
    """Only while unexpired; None otherwise."""
    snippet_expires_at_ms: int | None
    params_json: str | None = field(default=None, compare=False, repr=False)
    """`params` as the store holds it (`dumps_compact` of them) when the reader had the text:
    the tip ledger splices it instead of encoding `params` again (ADR 0046). Not compared."""


@dataclass(slots=True)
class StoredUser:
    user_id: str
    agents: dict[str, StoredAgent]
    feedback: dict[str, Any]
    consents: dict[str, bool]
    newest_event_ms: int | None
    newest_ingest_ms: int | None


@dataclass(slots=True)
class StoredAgentJSON:
    """A `StoredAgent` as the store holds it: `params` and `extras` are the JSON text the
    store's write path wrote (`dumps_compact` of `AgentWrite.params` / `.extras`), not parsed.

    For answers that only pass them on (`POST /v1/features/batch`): parsing and re-encoding
    them is most of a read's cost. `parsed()` is the `StoredAgent` every other reader gets.
    """

    agent_id: str
    version: str
    params_json: str
    extras_json: str
    event_time_ms: int
    ingest_time_ms: int
    computed_at_ms: int
    snippet: str | None
    """Only while unexpired; None otherwise."""
    snippet_expires_at_ms: int | None

    def parsed(self) -> StoredAgent:
        return StoredAgent(
            agent_id=self.agent_id,
            version=self.version,
            params=json.loads(self.params_json),
            extras=json.loads(self.extras_json),
            event_time_ms=self.event_time_ms,
            ingest_time_ms=self.ingest_time_ms,
            computed_at_ms=self.computed_at_ms,
            snippet=self.snippet,
            snippet_expires_at_ms=self.snippet_expires_at_ms,
            params_json=self.params_json,
        )


@dataclass(slots=True)
class StoredUserJSON:
    """A `StoredUser` with its agents as `StoredAgentJSON` and its feedback as the stored JSON
    text (`"{}"` when none); consents are parsed (eligibility needs them)."""

    user_id: str
    agents: dict[str, StoredAgentJSON]
    feedback_json: str
    consents: dict[str, bool]
    newest_event_ms: int | None
    newest_ingest_ms: int | None

    def as_bytes(self) -> StoredUserBytes:
        """The `StoredUserBytes` a store that keeps this user's JSON as text answers (each
        snippet as `dumps_compact({"text", "expires_at_ms"})`, as Redis stores it)."""
        agents: list[Sequence[Any]] = [
            [
                a.agent_id.encode(),
                a.version.encode(),
                a.params_json.encode(),
                a.extras_json.encode(),
                b"%d" % a.event_time_ms,
                b"%d" % a.ingest_time_ms,
                b"%d" % a.computed_at_ms,
                None
                if a.snippet is None
                else dumps_compact(
                    {"text": a.snippet, "expires_at_ms": a.snippet_expires_at_ms}
                ).encode(),
            ]
            for a in self.agents.values()
        ]
        return StoredUserBytes(
            dumps_compact(self.consents).encode() if self.consents else None,
            self.feedback_json.encode(),
            None if self.newest_event_ms is None else b"%d" % self.newest_event_ms,
            None if self.newest_ingest_ms is None else b"%d" % self.newest_ingest_ms,
            agents,
        )

    def parsed(self) -> StoredUser:
        return StoredUser(
            user_id=self.user_id,
            agents={aid: agent.parsed() for aid, agent in self.agents.items()},
            feedback=json.loads(self.feedback_json),
            consents=self.consents,
            newest_event_ms=self.newest_event_ms,
            newest_ingest_ms=self.newest_ingest_ms,
        )


_EXPIRES = b',"expires_at_ms":'


def split_snippet(stored: bytes) -> tuple[bytes, int] | None:
    """(`{"text":"..."`, expires_at_ms) of a stored snippet of the shape the store's writer
    gives it, `dumps_compact({"text", "expires_at_ms"})`; None for any other shape.

    The expiry is the last member and the separator cannot occur in the text (a quote inside
    it is escaped); a text holding a quote (escaped) is left to the parser (None).

    >>> split_snippet(b'{"text":"Go.","expires_at_ms":12}')
    (b'{"text":"Go."', 12)
    >>> split_snippet(b'{"expires_at_ms":12,"text":"Go."}') is None
    True
    >>> split_snippet(b'{"text":"a","more":"b","expires_at_ms":12}') is None
    True
    """
    head, sep, tail = stored.rpartition(_EXPIRES)
    if (
        sep
        and len(head) > 9
        and head.startswith(b'{"text":"')
        and head.find(b'"', 9) == len(head) - 1  # one string, nothing after it
        and tail[-1:] == b"}"
        and tail[:-1].isdigit()
    ):
        return head, int(tail[:-1])
    return None


def snippet_of(stored: bytes | str) -> tuple[str, int]:
    """(text, expires_at_ms) of a stored snippet: read by its known shape (`split_snippet`;
    text without a backslash is taken as is), else parsed.

    >>> snippet_of(b'{"text":"Go.","expires_at_ms":12}')
    ('Go.', 12)
    """
    raw = stored.encode() if isinstance(stored, str) else stored
    parts = split_snippet(raw)
    if parts is not None:
        body = parts[0][8:]
        text = body[1:-1].decode() if b"\\" not in body else json.loads(body)
        return text, parts[1]
    parsed = json.loads(raw)
    return parsed["text"], int(parsed["expires_at_ms"])


@dataclass(slots=True)
class StoredUserBytes:
    """A user exactly as the store holds it, every part the stored bytes, not decoded at all:
    for answers that splice them into their own JSON (`POST /v1/features/batch`, ADR 0027).

    `consents_json`, `feedback_json`: the stored JSON; `newest_event_ms`, `newest_ingest_ms`:
    decimal digits (each None when absent). `agents`: one row per stored agent, in no
    particular order: `[agent_id, version, params JSON, extras JSON, event_time_ms,
    ingest_time_ms, computed_at_ms, snippet]`, the times as decimal digits and `snippet` the
    stored `dumps_compact({"text", "expires_at_ms"})` or None. A snippet may have expired a
    moment ago (Redis evicts it at its TTL): `decoded` drops it then; a reader of the bytes
    compares `expires_at_ms` with its own now (`split_snippet`).
    """

    consents_json: bytes | None
    feedback_json: bytes | None
    newest_event_ms: bytes | None
    newest_ingest_ms: bytes | None
    agents: list[Sequence[Any]]

    def decoded(self, user_id: str, now_ms: int) -> StoredUserJSON:
        """The `StoredUserJSON` of these bytes (snippets expired at `now_ms` dropped)."""
        agents: dict[str, StoredAgentJSON] = {}
        for aid, version, params, extras, et, it, ca, snip in self.agents:
            text: str | None = None
            expires: int | None = None
            if snip:
                text, expires = snippet_of(snip)
                if expires <= now_ms:
                    text, expires = None, None
            agent_id = aid.decode()
            agents[agent_id] = StoredAgentJSON(
                agent_id,
                version.decode(),
                params.decode(),
                extras.decode(),
                int(et),
                int(it),
                int(ca),
                text,
                expires,
            )
        newest_event, newest_ingest = self.newest_event_ms, self.newest_ingest_ms
        return StoredUserJSON(
            user_id=user_id,
            agents=agents,
            feedback_json=self.feedback_json.decode() if self.feedback_json else "{}",
            consents=json.loads(self.consents_json) if self.consents_json else {},
            newest_event_ms=int(newest_event) if newest_event is not None else None,
            newest_ingest_ms=int(newest_ingest) if newest_ingest is not None else None,
        )


@dataclass(slots=True)
class LagStats:
    """Lag (`computed_at - ingest_time`) of an agent's recent writes, nearest-rank percentiles."""

    samples: int
    p50_ms: int | None
    p99_ms: int | None


@dataclass(slots=True)
class FreshnessSummary:
    """Freshness of every agent at `now_ms`, over users active within `window_ms`.

    A user is *active* when its newest event was ingested within the window, *pending* while it
    has an ingested event that the flow has not reflected yet, and its *staleness* is `now_ms`
    minus the ingest time of its oldest unreflected event (0 when not pending).
    """

    now_ms: int
    window_ms: int
    active_users: int
    pending_users: int
    stale_users: dict[str, int]
    """agent id -> active users whose staleness is at least that agent's SLA."""
    worst: list[tuple[str, int]]
    """(user id, staleness ms) of the most stale pending users, most stale first."""
    lag: dict[str, LagStats]


@dataclass(slots=True)
class UserFreshness:
    """One user's freshness stamps (epoch ms); None where nothing was stamped yet."""

    user_id: str
    newest_ingest_ms: int | None
    """Ingest time of the newest event seen for the user (stamped at ingestion or by the flow)."""
    reflected_ingest_ms: int | None
    """Ingest time of the newest event the flow has folded in and written."""
    pending_since_ms: int | None
    """Ingest time of the oldest event not reflected yet (a lower bound); None when up to date."""

    def staleness_ms(self, now_ms: int) -> int:
        """How long the user's newest events have waited for the flow; 0 when up to date."""
        if self.pending_since_ms is None:
            return 0
        return max(now_ms - self.pending_since_ms, 0)


IDENTITY_READY = "ready"
"""The store holds every user the engine knows (a fresh store, or a refill that finished)."""
IDENTITY_FILLING = "filling"
"""The store lost its data (wiped or replaced) and a refill has not finished yet."""


@dataclass(frozen=True, slots=True)
class StoreIdentity:
    """The store's identity marker: created once, gone when the store is wiped.

    A store that answers without its marker lost its data (or was never initialised); a
    marker with another `id` than the one a process remembers is another store.
    """

    id: str
    created_ms: int
    state: str
    """`ready` or `filling` (see `IDENTITY_READY`, `IDENTITY_FILLING`)."""
    state_ms: int
    """When `state` was last set."""


def new_identity_id() -> str:
    return uuid.uuid4().hex


def nearest_rank(ordered: Sequence[int], q: float) -> int | None:
    """The `q` quantile of sorted values by nearest rank (the same rule the Redis script uses).

    >>> nearest_rank([10, 20, 30, 40], 0.5), nearest_rank([10, 20, 30, 40], 0.99)
    (20, 40)
    >>> nearest_rank([], 0.5) is None
    True
    """
    if not ordered:
        return None
    return ordered[max(math.ceil(q * len(ordered)), 1) - 1]


def lag_samples(writes: Sequence[UserWrite]) -> dict[str, list[int]]:
    """Per agent, the lags of a batch's agent writes (at most `LAG_SAMPLES_PER_WRITE`, spread)."""
    lags: dict[str, list[int]] = {}
    for w in writes:
        for agent_id, a in w.agents.items():
            lag = a.computed_at_ms - a.ingest_time_ms
            values = lags.get(agent_id)
            if values is None:
                values = lags[agent_id] = []
            values.append(lag if lag > 0 else 0)
    for agent_id, values in lags.items():
        if len(values) > LAG_SAMPLES_PER_WRITE:
            step = len(values) / LAG_SAMPLES_PER_WRITE
            lags[agent_id] = [values[int(i * step)] for i in range(LAG_SAMPLES_PER_WRITE)]
    return lags


def stamps_of(
    newest: Mapping[str, int], oldest: Mapping[str, int] | None
) -> list[tuple[str, int, int]]:
    """(user, newest, oldest) triples of a `stamp_ingest` call; oldest defaults to newest."""
    out = []
    for user_id, new in newest.items():
        if not user_id:
            raise ValueError("user_id must not be empty")
        old = new if oldest is None else min(oldest.get(user_id, new), new)
        out.append((user_id, int(new), int(old)))
    return out


class FeatureStore(TipLedger, Protocol):
    """The online store, with the tip ledger (`connectors.store.ledger`). Implementations
    must be safe to share between processes."""

    def write_batch(self, writes: list[UserWrite], *, now_ms: int | None = None) -> list[str]:
        """Apply every write in one round trip; a write older than the stored one is ignored.

        Returns the users whose write the history guard refused (ADR 0009): their stored
        features came from a history that starts before the writer's, so only the write's
        deletion and removed agents were applied.
        """

    def read_user(self, user_id: str, *, now_ms: int | None = None) -> StoredUser | None:
        """The user's stored features; None for an unknown or deleted user."""

    def read_users(
        self, user_ids: Sequence[str], *, now_ms: int | None = None
    ) -> dict[str, StoredUser | None]:
        """`read_user` of every id (duplicates once), in one round trip (Redis: one pipeline;
        SQLite: one read transaction); None for an unknown or deleted user."""

    def read_users_json(
        self, user_ids: Sequence[str], *, now_ms: int | None = None
    ) -> dict[str, StoredUserJSON | None]:
        """`read_users` with each user's parameters, extras and feedback left as the stored JSON
        text (`StoredUserJSON`; `.parsed()` is what `read_users` answers). Same round trip;
        keys in the order asked, duplicates once."""

    def read_users_bytes(
        self,
        user_ids: Sequence[str],
        *,
        now_ms: int | None = None,
        agents: Collection[str] | None = None,
    ) -> dict[str, StoredUserBytes | None]:
        """`read_users_json` with nothing decoded (`StoredUserBytes`): the same users, the
        same round trip; keys in the order asked, duplicates once, None for an unknown or
        deleted user. `agents`: only those agents' rows (the batch read asks for the
        registered ones; Redis then reads nothing else); None: every stored agent."""

    def delete_user(self, user_id: str, *, deleted_at_ms: int) -> None:
        """Remove every key of the user at once and leave a tombstone."""

    def tombstone(self, user_id: str) -> int | None:
        """The deletion time of a deleted user, else None."""

    def user_ids(self) -> list[str]:
        """Every user with stored features (for freshness reporting)."""

    # -- freshness (definitions in serving/README.md, layout in connectors/README.md) ----------

    def stamp_ingest(
        self, newest: Mapping[str, int], *, oldest: Mapping[str, int] | None = None
    ) -> None:
        """Record ingested events before the flow computes them, one round trip per call.

        `newest[user]` is the ingest time of the user's newest event in the batch (stamps only
        move forward); `oldest[user]` (default: the same) that of its oldest. A user whose newest
        event is not reflected yet becomes pending since the oldest unreflected ingest time
        (an earlier pending time is kept).
        """

    def freshness_summary(
        self, *, now_ms: int, window_ms: int, sla_ms_by_agent: Mapping[str, int], worst_n: int = 10
    ) -> FreshnessSummary:
        """Every agent's freshness at `now_ms`; O(log n) in the number of users.

        Pending users idle for the whole window (their events will never be reflected, e.g.
        duplicates the flow dropped) are forgotten here, at most `PRUNE_PER_SUMMARY` per call.
        """

    def user_freshness(self, user_id: str) -> UserFreshness | None:
        """The user's freshness stamps; None when the user has none."""

    # -- identity and refill (ADR 0008) -----------------------------------------------------

    def identity(self) -> StoreIdentity | None:
        """The store's identity marker; None when it has none (wiped, replaced, or brand new)."""

    def create_identity(self, *, state: str = IDENTITY_READY) -> StoreIdentity:
        """Create the marker with a new random id unless one exists; return the marker now there."""

    def set_identity_state(self, identity_id: str, state: str) -> bool:
        """Set the marker's state if its id is `identity_id`; False when it is not (or gone)."""

    def restore_tombstones(self, tombstones: Mapping[str, int]) -> int:
        """Re-apply durable tombstones (user -> deletion ms) the store lacks; return how many.

        A user whose stored tombstone is missing or older is deleted as by a `UserWrite` with
        `deleted_at_ms` (every key goes, the tombstone is set); the others are left alone.
        """

    def ping(self) -> None:
        """Raise `StoreError` when the store is unreachable."""

    def close(self) -> None: ...
