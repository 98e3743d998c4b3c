-- One block of KEYS and one of ARGV per user written, the users one after the other: one user
-- a call on a Redis Cluster (a script's keys share one slot), up to `WRITE_USERS` a call on
-- one server (ADR 0055). Each user's write is applied in order, as if each were its own call.
-- A user's KEYS: 1 meta, 2 feedback, 3 keys index, 4 tombstone,
--   then (agent hash, snippet) per written agent, then (agent hash, snippet) per removed agent.
-- A user's ARGV: 1 now_ms (unused, kept for symmetry), 2 deleted_at_ms or '', 3 n_agents,
--   4 n_removed, 5 feedback JSON or '', 6 consents JSON or '', 7 newest_event_ms or '',
--   8 newest_ingest_ms or '', 9 created_ms,
--   then 8 per written agent: version, params, extras, event_time, ingest_time, computed_at,
--   snippet JSON or '', ttl_ms; then the history marker ('source=offset ...') or ''.
-- Returns, flat, {user's position in the call (1-based), tombstone_seen, user_exists,
-- history_refused} for each user whose write saw a tombstone or was refused; nothing for the
-- others (the common case), which wrote and exist.
-- History guard (ADR 0009): a write whose marker does not cover the stored one (a stored source
-- it lacks, or starts later in) applies only its deletion and removed agents.
-- A user whose meta hash is absent has no agent hash, snippet or index either: every write
-- that sets an agent also sets the meta hash's created_ms, and a deletion removes all of them.
-- Its agents are written without the event-time guard's read (there is nothing to guard) and
-- without deleting snippets that cannot exist. The keys index holds every agent hash and the
-- meta hash that exist (each is added with the write that makes it), so only keys that may be
-- new to it are added.
local function write(k, a)
  local meta, fb, idx, tomb = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local n_agents, n_removed = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  if ARGV[a + 2] ~= '' then
    local members = redis.call('SMEMBERS', idx)
    for i = 1, #members, 500 do
      redis.call('DEL', unpack(members, i, math.min(i + 499, #members)))
    end
    redis.call('DEL', idx, meta, fb)
    local old = redis.call('GET', tomb)
    if (not old) or tonumber(ARGV[a + 2]) > tonumber(old) then
      redis.call('SET', tomb, ARGV[a + 2])
    end
  end
  local tomb_ms = redis.call('GET', tomb)
  if tomb_ms then tomb_ms = tonumber(tomb_ms) end
  local seen = 0
  if tomb_ms then seen = 1 end
  local base = k + 4 + 2 * n_agents
  for i = 1, n_removed do
    local h, s = KEYS[base + 2 * i - 1], KEYS[base + 2 * i]
    redis.call('DEL', h, s)
    redis.call('SREM', idx, h, s)
  end
  local history = ARGV[a + 10 + 8 * n_agents]
  -- One read of the user's meta hash for the history guard and the newest stamps below (nothing
  -- in between writes it).
  local m = redis.call('HMGET', meta, 'history', 'newest_event_ms', 'newest_ingest_ms',
    'created_ms')
  local stored = m[1]
  -- An unchanged marker covers itself (the common case): it is neither parsed nor set again.
  if history ~= '' and stored and stored ~= history then
    local mine = {}
    for src, off in string.gmatch(history, '(%S+)=(%d+)') do mine[src] = tonumber(off) end
    for src, off in string.gmatch(stored, '(%S+)=(%d+)') do
      local mm = mine[src]
      if (not mm) or mm > tonumber(off) then
        return seen, redis.call('EXISTS', meta), 1
      end
    end
  end
  local known = m[4]
  local data_time = nil
  if ARGV[a + 7] ~= '' then data_time = tonumber(ARGV[a + 7]) end
  -- Index changes are gathered and made with one SADD / SREM at the end, and the snippets that
  -- go with one DEL: an agent's keys are either added or removed, never both, and nothing here
  -- reads a snippet, so the order does not matter.
  local add, rem = {}, {}
  for i = 1, n_agents do
    local h, s = KEYS[k + 3 + 2 * i], KEYS[k + 4 + 2 * i]
    local o = a + 9 + 8 * (i - 1)
    local et = tonumber(ARGV[o + 4])
    if (not tomb_ms) or et > tomb_ms then
      if (not data_time) or et > data_time then data_time = et end
      local cur = known and redis.call('HGET', h, 'event_time')
      if (not cur) or tonumber(cur) <= et then
        redis.call('HSET', h, 'version', ARGV[o + 1], 'params', ARGV[o + 2], 'extras', ARGV[o + 3],
          'event_time', ARGV[o + 4], 'ingest_time', ARGV[o + 5], 'computed_at', ARGV[o + 6])
        if not cur then add[#add + 1] = h end
        if ARGV[o + 7] ~= '' then
          redis.call('SET', s, ARGV[o + 7], 'PX', ARGV[o + 8])
          add[#add + 1] = s
        elseif known then
          rem[#rem + 1] = s
        end
      end
    end
  end
  if #rem > 0 then
    redis.call('DEL', unpack(rem))
    redis.call('SREM', idx, unpack(rem))
  end
  if tomb_ms and ((not data_time) or data_time <= tomb_ms) then
    if #add > 0 then redis.call('SADD', idx, unpack(add)) end
    return seen, redis.call('EXISTS', meta), 0
  end
  if ARGV[a + 5] ~= '' then
    redis.call('SET', fb, ARGV[a + 5])
    add[#add + 1] = fb
  end
  -- The meta hash in one HSET: what this write sets, and each stamp only when it moves forward.
  local set = {}
  if ARGV[a + 6] ~= '' then set[#set + 1] = 'consents'; set[#set + 1] = ARGV[a + 6] end
  if history ~= '' and history ~= stored then
    set[#set + 1] = 'history'; set[#set + 1] = history
  end
  local newest_event, newest_ingest = ARGV[a + 7], ARGV[a + 8]
  if newest_event ~= '' and ((not m[2]) or tonumber(m[2]) < tonumber(newest_event)) then
    set[#set + 1] = 'newest_event_ms'; set[#set + 1] = newest_event
  end
  if newest_ingest ~= '' and ((not m[3]) or tonumber(m[3]) < tonumber(newest_ingest)) then
    set[#set + 1] = 'newest_ingest_ms'; set[#set + 1] = newest_ingest
  end
  if not known then
    set[#set + 1] = 'created_ms'; set[#set + 1] = ARGV[a + 9]
    add[#add + 1] = meta
  end
  if #set > 0 then redis.call('HSET', meta, unpack(set)) end
  if #add > 0 then redis.call('SADD', idx, unpack(add)) end
  return seen, 1, 0
end

local out = {}
local k, a, user = 0, 0, 0
while a < #ARGV do
  user = user + 1
  local n_agents, n_removed = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local seen, exists, refused = write(k, a)
  if seen == 1 or refused == 1 then
    out[#out + 1] = user; out[#out + 1] = seen; out[#out + 1] = exists
    out[#out + 1] = refused
  end
  k = k + 4 + 2 * (n_agents + n_removed)
  a = a + 10 + 8 * n_agents
end
return out
