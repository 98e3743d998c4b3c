"""The production feature store: Redis (standalone, or Cluster thanks to per-user hash tags).

Key layout (documented in `connectors/README.md`, "Store layout"); `p` is the key prefix and
`{u}` the user id inside a hash tag, so every key of one user lives in one cluster slot:

    p:{u}:agent:<agent_id>    hash   version, params, extras (JSON), event_time, ingest_time,
                                     computed_at (epoch ms)
    p:{u}:snippet:<agent_id>  string {"text", "expires_at_ms"} JSON, written with SET ... PX ttl
    p:{u}:feedback            string feedback JSON
    p:{u}:meta                hash   consents (JSON), newest_event_ms, newest_ingest_ms, created_ms,
                                     history (the history marker, ADR 0009)
    p:{u}:keys                set    every key above that exists for the user (for deletion)
    p:tomb:{u}                string deletion time (epoch ms) of a deleted user
    p:users                   zset   user id -> newest event time (ms), for freshness reporting
    p:{p~fresh}:newest        zset   user id -> ingest time of the newest event seen (stamped)
    p:{p~fresh}:reflected     zset   user id -> ingest time of the newest event the flow wrote
    p:{p~fresh}:pending       zset   user id -> ingest time of the oldest unreflected event
    p:{p~fresh}:lag:<agent>   stream recent lag samples of the agent (field `l`: "ms,ms,...")
    p:{p~store}:identity      hash   the store's identity marker: id, created_ms, state, state_ms
    p:{u}:ledger, p:{u}:ledger_at    the tip ledger (`connectors/store/redis_ledger.py`)

Every per-user write is one Lua script call (atomic per user, guarded server-side); a batch is
one non-transactional pipeline, hence one round trip. The freshness keys are cross-user: their
own hash tag puts them in one cluster slot, so each freshness script is atomic too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from connectors.clock import now_ms as _now_ms
from connectors.exceptions import StoreError
from connectors.store.base import (
    IDENTITY_READY,
    LAG_SAMPLES_KEPT,
    LAG_SAMPLES_READ,
    PRUNE_PER_SUMMARY,
    FreshnessSummary,
    LagStats,
    StoredAgent,
    StoredUser,
    StoreIdentity,
    UserFreshness,
    UserWrite,
    dumps_compact,
    encode_history,
    lag_samples,
    new_identity_id,
    stamps_of,
)
from connectors.store.redis_ledger import LEDGER_SCRIPTS, RedisLedgerMixin

__all__ = ["RedisStore"]

T = TypeVar("T")

# KEYS: 1 meta, 2 feedback, 3 keys index, 4 tombstone,
#       then (agent hash, snippet) per written agent, then (agent hash, snippet) per removed agent.
# ARGV: 1 now_ms (unused, kept for symmetry), 2 deleted_at_ms or '', 3 n_agents, 4 n_removed,
#       5 feedback JSON or '', 6 consents JSON or '', 7 newest_event_ms or '',
#       8 newest_ingest_ms or '', 9 created_ms,
#       then 8 per written agent: version, params, extras, event_time, ingest_time, computed_at,
#       snippet JSON or '', ttl_ms; then the history marker ('source=offset ...') or ''.
# Returns {tombstone_seen, user_exists, agents_accepted, history_refused}.
# History guard (ADR 0009): a write whose marker does not cover the stored one (a stored source
# it lacks, or starts later in) applies only its deletion and removed agents.
_WRITE_LUA = """
local meta, fb, idx, tomb = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local n_agents, n_removed = tonumber(ARGV[3]), tonumber(ARGV[4])
if ARGV[2] ~= '' then
  local members = redis.call('SMEMBERS', idx)
  for i = 1, #members, 500 do
    redis.call('DEL', unpack(members, i, math.min(i + 499, #members)))
  end
  redis.call('DEL', idx, meta, fb)
  local old = redis.call('GET', tomb)
  if (not old) or tonumber(ARGV[2]) > tonumber(old) then
    redis.call('SET', tomb, ARGV[2])
  end
end
local tomb_ms = redis.call('GET', tomb)
if tomb_ms then tomb_ms = tonumber(tomb_ms) end
local base = 4 + 2 * n_agents
for i = 1, n_removed do
  local h, s = KEYS[base + 2 * i - 1], KEYS[base + 2 * i]
  redis.call('DEL', h, s)
  redis.call('SREM', idx, h, s)
end
local history = ARGV[10 + 8 * n_agents]
if history ~= '' then
  local stored = redis.call('HGET', meta, 'history')
  if stored then
    local mine = {}
    for src, off in string.gmatch(history, '(%S+)=(%d+)') do mine[src] = tonumber(off) end
    for src, off in string.gmatch(stored, '(%S+)=(%d+)') do
      local m = mine[src]
      if (not m) or m > tonumber(off) then
        local seen = 0
        if tomb_ms then seen = 1 end
        return {seen, redis.call('EXISTS', meta), 0, 1}
      end
    end
  end
end
local data_time = nil
if ARGV[7] ~= '' then data_time = tonumber(ARGV[7]) end
local accepted = 0
for i = 1, n_agents do
  local h, s = KEYS[3 + 2 * i], KEYS[4 + 2 * i]
  local a = 9 + 8 * (i - 1)
  local et = tonumber(ARGV[a + 4])
  if (not tomb_ms) or et > tomb_ms then
    if (not data_time) or et > data_time then data_time = et end
    local cur = redis.call('HGET', h, 'event_time')
    if (not cur) or tonumber(cur) <= et then
      redis.call('HSET', h, 'version', ARGV[a + 1], 'params', ARGV[a + 2], 'extras', ARGV[a + 3],
        'event_time', ARGV[a + 4], 'ingest_time', ARGV[a + 5], 'computed_at', ARGV[a + 6])
      if ARGV[a + 7] ~= '' then
        redis.call('SET', s, ARGV[a + 7], 'PX', ARGV[a + 8])
        redis.call('SADD', idx, h, s)
      else
        redis.call('DEL', s)
        redis.call('SREM', idx, s)
        redis.call('SADD', idx, h)
      end
      accepted = accepted + 1
    end
  end
end
if tomb_ms and ((not data_time) or data_time <= tomb_ms) then
  return {1, redis.call('EXISTS', meta), accepted, 0}
end
if ARGV[5] ~= '' then
  redis.call('SET', fb, ARGV[5])
  redis.call('SADD', idx, fb)
end
if ARGV[6] ~= '' then redis.call('HSET', meta, 'consents', ARGV[6]) end
if history ~= '' then redis.call('HSET', meta, 'history', history) end
if ARGV[7] ~= '' then
  local cur = redis.call('HGET', meta, 'newest_event_ms')
  if (not cur) or tonumber(cur) < tonumber(ARGV[7]) then
    redis.call('HSET', meta, 'newest_event_ms', ARGV[7])
  end
end
if ARGV[8] ~= '' then
  local cur = redis.call('HGET', meta, 'newest_ingest_ms')
  if (not cur) or tonumber(cur) < tonumber(ARGV[8]) then
    redis.call('HSET', meta, 'newest_ingest_ms', ARGV[8])
  end
end
redis.call('HSETNX', meta, 'created_ms', ARGV[9])
redis.call('SADD', idx, meta)
local seen = 0
if tomb_ms then seen = 1 end
return {seen, 1, accepted, 0}
"""

# KEYS: 1 meta, 2 feedback, 3 keys index. ARGV: 1 agent key prefix, 2 snippet key prefix.
# Returns false for an unknown user, else {meta (flat hash), feedback or false, agents...} where
# each agent is {agent_id, version, params, extras, event_time, ingest_time, computed_at,
# snippet or false}.
_READ_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local out = {redis.call('HGETALL', KEYS[1]), redis.call('GET', KEYS[2])}
local prefix, sprefix = ARGV[1], ARGV[2]
local plen = #prefix
local members = redis.call('SMEMBERS', KEYS[3])
for i = 1, #members do
  local k = members[i]
  if string.sub(k, 1, plen) == prefix then
    local aid = string.sub(k, plen + 1)
    local v = redis.call('HMGET', k, 'version', 'params', 'extras', 'event_time', 'ingest_time',
      'computed_at')
    if v[1] then
      out[#out + 1] = {aid, v[1], v[2], v[3], v[4], v[5], v[6], redis.call('GET', sprefix .. aid)}
    end
  end
end
return out
"""

# Freshness. KEYS: 1 newest, 2 pending, 3 reflected.
# ARGV: triples (user, newest ingest ms, oldest ingest ms) of a stamped batch.
_STAMP_LUA = """
for i = 1, #ARGV, 3 do
  local u, newest, oldest = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  redis.call('ZADD', KEYS[1], 'GT', newest, u)
  local r = redis.call('ZSCORE', KEYS[3], u)
  if r then r = tonumber(r) end
  if (not r) or newest > r then
    local since = oldest
    if r and since <= r then since = r + 1 end
    redis.call('ZADD', KEYS[2], 'NX', since, u)
  end
end
return #ARGV / 3
"""

# KEYS: 1 newest, 2 pending, 3 reflected. ARGV: triples (user, reflected ingest ms or '',
# forget '1'/'0'); forget (a deletion) first removes the user from every freshness key.
_REFLECT_LUA = """
for i = 1, #ARGV, 3 do
  local u, r = ARGV[i], ARGV[i + 1]
  if ARGV[i + 2] == '1' then
    redis.call('ZREM', KEYS[1], u)
    redis.call('ZREM', KEYS[2], u)
    redis.call('ZREM', KEYS[3], u)
  end
  if r ~= '' then
    -- Fewest calls for the common case (the user is caught up): read both stamps, write one.
    local cur = tonumber(r)
    local old = tonumber(redis.call('ZSCORE', KEYS[3], u))
    if old == nil or cur > old then
      redis.call('ZADD', KEYS[3], cur, u)
    else
      cur = old
    end
    local newest = tonumber(redis.call('ZSCORE', KEYS[1], u))
    if newest == nil or newest <= cur then
      if newest == nil or newest < cur then
        redis.call('ZADD', KEYS[1], cur, u)
      end
      redis.call('ZREM', KEYS[2], u)
    else
      redis.call('ZADD', KEYS[2], 'XX', 'GT', cur + 1, u)
    end
  end
end
return 1
"""

# KEYS: 1 newest, 2 pending, then the lag stream of each agent.
# ARGV: 1 now_ms, 2 window_ms, 3 worst_n, 4 max lag samples, 5 prune limit, then each agent's
# SLA (ms). Returns {active, pending, {stale, samples, p50, p99} per agent, worst (flat
# user, pending-since pairs)}; p50/p99 are -1 without samples.
_SUMMARY_LUA = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local worst_n, max_samples = tonumber(ARGV[3]), tonumber(ARGV[4])
local since = now - window
local idle = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. since, 'LIMIT', 0, ARGV[5])
for i = 1, #idle do
  local n = redis.call('ZSCORE', KEYS[1], idle[i])
  if (not n) or tonumber(n) < since then redis.call('ZREM', KEYS[2], idle[i]) end
end
local out = {redis.call('ZCOUNT', KEYS[1], since, '+inf'), redis.call('ZCARD', KEYS[2])}
for a = 3, #KEYS do
  local stale = redis.call('ZCOUNT', KEYS[2], '-inf', now - tonumber(ARGV[a + 3]))
  local lags = {}
  local entries = redis.call('XREVRANGE', KEYS[a], '+', since, 'COUNT', max_samples)
  for i = 1, #entries do
    for v in string.gmatch(entries[i][2][2], '[^,]+') do
      lags[#lags + 1] = tonumber(v)
    end
    if #lags >= max_samples then break end
  end
  table.sort(lags)
  local n = #lags
  if n > 0 then
    out[#out + 1] = {stale, n, lags[math.max(math.ceil(0.5 * n), 1)],
      lags[math.max(math.ceil(0.99 * n), 1)]}
  else
    out[#out + 1] = {stale, 0, -1, -1}
  end
end
local worst = {}
if tonumber(worst_n) > 0 then
  worst = redis.call('ZRANGE', KEYS[2], 0, worst_n - 1, 'WITHSCORES')
end
out[#out + 1] = worst
return out
"""

# KEYS: 1 identity marker. ARGV: 1 new id, 2 now_ms, 3 state. Created only when absent.
# Returns the marker's flat hash.
_IDENTITY_CREATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'created_ms', ARGV[2], 'state', ARGV[3],
    'state_ms', ARGV[2])
end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: 1 identity marker. ARGV: 1 expected id, 2 state, 3 now_ms. Returns 1 when set.
_IDENTITY_STATE_LUA = """
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'state_ms', ARGV[3])
return 1
"""

_SCRIPTS = {
    "identity_create": _IDENTITY_CREATE_LUA,
    "identity_state": _IDENTITY_STATE_LUA,
    "write": _WRITE_LUA,
    "read": _READ_LUA,
    "stamp": _STAMP_LUA,
    "reflect": _REFLECT_LUA,
    "summary": _SUMMARY_LUA,
    **LEDGER_SCRIPTS,
}


_dumps = dumps_compact


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)


class RedisStore(RedisLedgerMixin):
    """`FeatureStore` (and `TipLedger`) on Redis. Safe to share between threads and processes."""

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "oo",
        socket_timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
        client_retries: int = 2,
        freshness: bool = True,
    ) -> None:
        """`socket_timeout_s` bounds each reply (a stopped Redis accepts connections and never
        answers), `connect_timeout_s` each connection; `client_retries` retries a call inside
        the client after a connection error or timeout (0: the caller retries)."""
        if socket_timeout_s <= 0 or connect_timeout_s <= 0 or client_retries < 0:
            raise ValueError(
                "expected positive timeouts and client_retries >= 0; got "
                f"{socket_timeout_s}, {connect_timeout_s}, {client_retries}"
            )
        parts = urlsplit(url)
        self._freshness = freshness
        """Keep the freshness bookkeeping (reflected users, lag samples) on each write."""
        self._where = f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
        self._prefix = key_prefix
        self._users_key = f"{key_prefix}:users"
        fresh = f"{key_prefix}:{{{key_prefix}~fresh}}:"  # '~' is never in a user id
        self._fresh_keys = [f"{fresh}newest", f"{fresh}pending", f"{fresh}reflected"]
        self._lag_prefix = f"{fresh}lag:"
        self._identity_key = f"{key_prefix}:{{{key_prefix}~store}}:identity"
        try:
            self._r = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=socket_timeout_s,
                socket_connect_timeout=connect_timeout_s,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), client_retries),
            )
        except (redis.RedisError, ValueError) as exc:
            raise StoreError(f"invalid Redis URL {url!r}: {exc}") from exc
        self._shas: dict[str, str] = {}

    # -- keys ---------------------------------------------------------------------------------

    def _base(self, user_id: str) -> str:
        if not user_id:
            raise ValueError("user_id must not be empty")
        return f"{self._prefix}:{{{user_id}}}:"

    def _tomb_key(self, user_id: str) -> str:
        return f"{self._prefix}:tomb:{{{user_id}}}"

    # -- plumbing -------------------------------------------------------------------------------

    def _guard(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except redis.ConnectionError as exc:
            raise StoreError(f"Redis at {self._where} is unreachable ({what}): {exc}") from exc
        except redis.TimeoutError as exc:
            raise StoreError(f"Redis at {self._where} timed out ({what}): {exc}") from exc
        except redis.RedisError as exc:
            raise StoreError(f"Redis at {self._where} failed ({what}): {exc}") from exc

    def _load_scripts(self) -> None:
        for name, src in _SCRIPTS.items():
            self._shas[name] = str(self._r.script_load(src))

    def _sha(self, name: str) -> str:
        if name not in self._shas:
            self._load_scripts()
        return self._shas[name]

    def _write_call(
        self, w: UserWrite, now_ms: int, *, deleted_at_ms: int | None = None
    ) -> tuple[list[str], list[Any]]:
        base = self._base(w.user_id)
        deleted = w.deleted_at_ms if deleted_at_ms is None else deleted_at_ms
        keys = [f"{base}meta", f"{base}feedback", f"{base}keys", self._tomb_key(w.user_id)]
        args: list[Any] = [
            now_ms,
            _opt(deleted),
            len(w.agents),
            len(w.removed_agents),
            "" if w.feedback is None else _dumps(w.feedback),
            "" if w.consents is None else _dumps(w.consents),
            _opt(w.newest_event_ms),
            _opt(w.newest_ingest_ms),
            now_ms,
        ]
        for agent_id, a in w.agents.items():
            keys.append(f"{base}agent:{agent_id}")
            keys.append(f"{base}snippet:{agent_id}")
            ttl_ms = a.ttl_seconds * 1000
            snippet = ""
            if a.snippet is not None and ttl_ms > 0:
                snippet = _dumps({"text": a.snippet, "expires_at_ms": now_ms + ttl_ms})
            args += [
                a.version,
                _dumps(a.params),
                _dumps(a.extras),
                a.event_time_ms,
                a.ingest_time_ms,
                a.computed_at_ms,
                snippet,
                ttl_ms,
            ]
        for agent_id in w.removed_agents:
            keys.append(f"{base}agent:{agent_id}")
            keys.append(f"{base}snippet:{agent_id}")
        args.append(encode_history(w.history) if w.history else "")
        return keys, args

    @staticmethod
    def _score(w: UserWrite) -> int:
        times = [a.event_time_ms for a in w.agents.values()]
        if w.newest_event_ms is not None:
            times.append(w.newest_event_ms)
        return max(times, default=0)

    def _run_scripts(
        self,
        calls: Sequence[tuple[list[str], list[Any]]],
        *,
        before: Sequence[Sequence[Any]] = (),
        after: Sequence[Sequence[Any]] = (),
        extra: Sequence[tuple[str, list[str], list[Any]]] = (),
    ) -> list[Any]:
        """One pipeline: `before` commands, the write script per call, `extra` scripts, `after`.

        `extra` holds (script name, keys, args) of other scripts. Returns the write script
        results in order. A NOSCRIPT (server restarted or flushed its script cache) reloads the
        scripts and re-runs only the script calls that were refused.
        """
        scripted = [("write", keys, args) for keys, args in calls] + list(extra)
        pipe = self._r.pipeline(transaction=False)
        for cmd in before:
            pipe.execute_command(*cmd)
        for name, keys, args in scripted:
            pipe.execute_command("EVALSHA", self._sha(name), len(keys), *keys, *args)
        for cmd in after:
            pipe.execute_command(*cmd)
        replies = pipe.execute(raise_on_error=False)
        first = len(before)
        results = replies[first : first + len(scripted)]
        retry = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if retry:
            self._load_scripts()
            pipe = self._r.pipeline(transaction=False)
            for i in retry:
                name, keys, args = scripted[i]
                pipe.execute_command("EVALSHA", self._shas[name], len(keys), *keys, *args)
            for i, r in zip(retry, pipe.execute(raise_on_error=False), strict=True):
                results[i] = r
        for r in [*replies[:first], *results, *replies[first + len(scripted) :]]:
            if isinstance(r, Exception):
                raise r
        return results[: len(calls)]

    def _eval(self, name: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return self._r.evalsha(self._sha(name), len(keys), *keys, *args)
        except NoScriptError:
            self._load_scripts()
            return self._r.evalsha(self._shas[name], len(keys), *keys, *args)

    def _freshness_writes(self, writes: list[UserWrite]) -> tuple[list[Any], list[list[Any]]]:
        """The reflect script's call and the lag samples' XADDs for a batch."""
        reflect: list[Any] = []
        for w in writes:
            reflect += (
                w.user_id,
                _opt(w.newest_ingest_ms),
                "0" if w.deleted_at_ms is None else "1",
            )
        xadds = [
            [
                "XADD",
                self._lag_prefix + agent_id,
                "MAXLEN",
                "~",
                LAG_SAMPLES_KEPT,
                "*",
                "l",
                ",".join(map(str, lags)),
            ]
            for agent_id, lags in sorted(lag_samples(writes).items())
        ]
        return reflect, xadds

    # -- FeatureStore ---------------------------------------------------------------------------

    def write_batch(self, writes: list[UserWrite], *, now_ms: int | None = None) -> list[str]:
        """Apply every write in one pipelined round trip (a second one only after a deletion).

        Returns the users whose write the history guard refused (ADR 0009)."""
        if not writes:
            return []
        now = _now_ms() if now_ms is None else now_ms
        calls = [self._write_call(w, now) for w in writes]
        users_key = self._users_key
        # The users index is updated before the guarded scripts: if a deletion slips in
        # between, the script sees the tombstone and the correction below fixes the index.
        zadd: list[Any] = ["ZADD", users_key, "GT"]
        for w in writes:
            zadd += (self._score(w), w.user_id)
        # Freshness bookkeeping rides in the same pipeline: the reflect script after the user
        # scripts, then the lag samples.
        if self._freshness:
            reflect, xadds = self._freshness_writes(writes)
            extra = [("reflect", self._fresh_keys, reflect)]
        else:
            xadds, extra = [], []
        # Consent revoked: the removed agents' values leave the user's tip ledger too.
        extra += [
            self.ledger_forget_call(w.user_id, w.removed_agents) for w in writes if w.removed_agents
        ]

        def run() -> list[str]:
            results = self._run_scripts(calls, before=[zadd], extra=extra, after=xadds)
            fix = self._r.pipeline(transaction=False)
            refused = [w.user_id for w, r in zip(writes, results, strict=True) if r[3]]
            for w, (tomb_seen, exists, _accepted, _refused) in zip(writes, results, strict=True):
                if tomb_seen:
                    if exists:
                        fix.zadd(users_key, {w.user_id: self._score(w)}, gt=True)
                    else:
                        fix.zrem(users_key, w.user_id)
                        for key in self._fresh_keys:  # a deleted user leaves no trace
                            fix.zrem(key, w.user_id)
            if len(fix):
                fix.execute()
            return refused

        return self._guard("write_batch", run)

    def read_user(self, user_id: str, *, now_ms: int | None = None) -> StoredUser | None:
        base = self._base(user_id)
        keys = [f"{base}meta", f"{base}feedback", f"{base}keys"]
        argv = [f"{base}agent:", f"{base}snippet:"]

        def run() -> Any:
            try:
                return self._r.evalsha(self._sha("read"), 3, *keys, *argv)
            except NoScriptError:
                self._load_scripts()
                return self._r.evalsha(self._shas["read"], 3, *keys, *argv)

        reply = self._guard("read_user", run)
        return self._user_of(user_id, reply, _now_ms() if now_ms is None else now_ms)

    def read_users(
        self, user_ids: Sequence[str], *, now_ms: int | None = None
    ) -> dict[str, StoredUser | None]:
        """Every user's features (None: unknown or deleted) in one pipelined round trip."""
        wanted = list(dict.fromkeys(user_ids))
        if not wanted:
            return {}
        calls = []
        for user_id in wanted:
            base = self._base(user_id)
            keys = [f"{base}meta", f"{base}feedback", f"{base}keys"]
            calls.append(("read", keys, [f"{base}agent:", f"{base}snippet:"]))

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for name, keys, args in calls:
                pipe.execute_command("EVALSHA", self._sha(name), len(keys), *keys, *args)
            replies = pipe.execute(raise_on_error=False)
            if any(isinstance(r, NoScriptError) for r in replies):
                self._load_scripts()
                pipe = self._r.pipeline(transaction=False)
                for name, keys, args in calls:
                    pipe.execute_command("EVALSHA", self._shas[name], len(keys), *keys, *args)
                replies = pipe.execute(raise_on_error=False)
            for r in replies:
                if isinstance(r, Exception):
                    raise r
            return list(replies)

        replies = self._guard("read_users", run)
        now = _now_ms() if now_ms is None else now_ms
        return {
            user_id: self._user_of(user_id, reply, now)
            for user_id, reply in zip(wanted, replies, strict=True)
        }

    @staticmethod
    def _user_of(user_id: str, reply: Any, now: int) -> StoredUser | None:
        """A read script's reply as a `StoredUser` (None for an unknown or deleted user)."""
        if not reply:
            return None
        flat, feedback = reply[0], reply[1]
        meta = dict(zip(flat[::2], flat[1::2], strict=True))
        agents: dict[str, StoredAgent] = {}
        for aid, version, params, extras, et, it, ca, snip in reply[2:]:
            text: str | None = None
            expires: int | None = None
            if snip:
                s = json.loads(snip)
                if s["expires_at_ms"] > now:
                    text, expires = s["text"], s["expires_at_ms"]
            agents[aid] = StoredAgent(
                agent_id=aid,
                version=version,
                params=json.loads(params),
                extras=json.loads(extras),
                event_time_ms=int(et),
                ingest_time_ms=int(it),
                computed_at_ms=int(ca),
                snippet=text,
                snippet_expires_at_ms=expires,
            )
        newest_event = meta.get("newest_event_ms")
        newest_ingest = meta.get("newest_ingest_ms")
        consents = meta.get("consents")
        return StoredUser(
            user_id=user_id,
            agents=agents,
            feedback=json.loads(feedback) if feedback else {},
            consents=json.loads(consents) if consents else {},
            newest_event_ms=int(newest_event) if newest_event is not None else None,
            newest_ingest_ms=int(newest_ingest) if newest_ingest is not None else None,
        )

    def delete_user(self, user_id: str, *, deleted_at_ms: int) -> None:
        """Delete every key of the user atomically and leave a tombstone; one round trip."""
        only = UserWrite(user_id=user_id)
        calls = [self._write_call(only, _now_ms(), deleted_at_ms=deleted_at_ms)]
        after = [("ZREM", key, user_id) for key in (self._users_key, *self._fresh_keys)]
        self._guard("delete_user", lambda: self._run_scripts(calls, after=after))

    def tombstone(self, user_id: str) -> int | None:
        value = self._guard("tombstone", lambda: self._r.get(self._tomb_key(user_id)))
        return int(value) if value is not None else None

    def user_ids(self) -> list[str]:
        return list(self._guard("user_ids", lambda: self._r.zrange(self._users_key, 0, -1)))

    def stamp_ingest(
        self, newest: Mapping[str, int], *, oldest: Mapping[str, int] | None = None
    ) -> None:
        """One script call for the whole batch (cross-user keys, one slot)."""
        args: list[Any] = []
        for triple in stamps_of(newest, oldest):
            args += triple
        if args:
            self._guard("stamp_ingest", lambda: self._eval("stamp", self._fresh_keys, args))

    def freshness_summary(
        self, *, now_ms: int, window_ms: int, sla_ms_by_agent: Mapping[str, int], worst_n: int = 10
    ) -> FreshnessSummary:
        """One script call: ZCOUNTs, one ZRANGE and a bounded XREVRANGE per agent."""
        agents = sorted(sla_ms_by_agent)
        keys = self._fresh_keys[:2] + [self._lag_prefix + a for a in agents]
        args = [now_ms, window_ms, worst_n, LAG_SAMPLES_READ, PRUNE_PER_SUMMARY]
        args += [int(sla_ms_by_agent[a]) for a in agents]
        reply = self._guard("freshness_summary", lambda: self._eval("summary", keys, args))
        active, pending, *per_agent, flat = reply
        stale: dict[str, int] = {}
        lag: dict[str, LagStats] = {}
        for agent_id, (n_stale, n, p50, p99) in zip(agents, per_agent, strict=True):
            stale[agent_id] = int(n_stale)
            lag[agent_id] = LagStats(int(n), int(p50) if n else None, int(p99) if n else None)
        worst = [
            (user_id, max(now_ms - int(float(since)), 0))
            for user_id, since in zip(flat[::2], flat[1::2], strict=True)
        ]
        return FreshnessSummary(now_ms, window_ms, int(active), int(pending), stale, worst, lag)

    def user_freshness(self, user_id: str) -> UserFreshness | None:
        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for key in self._fresh_keys:
                pipe.zscore(key, user_id)
            return list(pipe.execute())

        newest, pending, reflected = self._guard("user_freshness", run)
        if newest is None and reflected is None:
            return None
        return UserFreshness(
            user_id=user_id,
            newest_ingest_ms=None if newest is None else int(newest),
            reflected_ingest_ms=None if reflected is None else int(reflected),
            pending_since_ms=None if pending is None else int(pending),
        )

    # -- identity and refill ------------------------------------------------------------------

    @staticmethod
    def _identity_of(flat: Any) -> StoreIdentity | None:
        fields = flat if isinstance(flat, dict) else dict(zip(flat[::2], flat[1::2], strict=True))
        if not fields.get("id"):
            return None
        return StoreIdentity(
            id=fields["id"],
            created_ms=int(fields.get("created_ms") or 0),
            state=fields.get("state") or IDENTITY_READY,
            state_ms=int(fields.get("state_ms") or 0),
        )

    def identity(self) -> StoreIdentity | None:
        return self._identity_of(
            self._guard("identity", lambda: self._r.hgetall(self._identity_key))
        )

    def create_identity(self, *, state: str = IDENTITY_READY) -> StoreIdentity:
        args = [new_identity_id(), _now_ms(), state]
        reply = self._guard(
            "create_identity",
            lambda: self._eval("identity_create", [self._identity_key], args),
        )
        created = self._identity_of(reply)
        if created is None:
            raise StoreError(f"Redis at {self._where}: the identity marker could not be created")
        return created

    def set_identity_state(self, identity_id: str, state: str) -> bool:
        args = [identity_id, state, _now_ms()]
        reply = self._guard(
            "set_identity_state",
            lambda: self._eval("identity_state", [self._identity_key], args),
        )
        return bool(reply)

    def restore_tombstones(self, tombstones: Mapping[str, int]) -> int:
        """Two round trips per 1,000 users: read their tombstones, delete the ones missing."""
        users = sorted(tombstones)
        restored = 0
        for i in range(0, len(users), 1000):
            chunk = users[i : i + 1000]
            keys = [self._tomb_key(u) for u in chunk]
            stored: list[Any] = self._guard("restore_tombstones", partial(self._r.mget, keys))
            writes = [
                UserWrite(user_id=u, deleted_at_ms=int(tombstones[u]))
                for u, have in zip(chunk, stored, strict=True)
                if have is None or int(have) < int(tombstones[u])
            ]
            self.write_batch(writes)
            restored += len(writes)
        return restored

    def ping(self) -> None:
        self._guard("ping", self._r.ping)

    def close(self) -> None:
        self._guard("close", self._r.close)
