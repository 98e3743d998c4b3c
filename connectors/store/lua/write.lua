-- KEYS: 1 meta, 2 feedback, 3 keys index, 4 tombstone,
--       then (agent hash, snippet) per written agent, then (agent hash, snippet) per removed agent.
-- ARGV: 1 now_ms (unused, kept for symmetry), 2 deleted_at_ms or '', 3 n_agents, 4 n_removed,
--       5 feedback JSON or '', 6 consents JSON or '', 7 newest_event_ms or '',
--       8 newest_ingest_ms or '', 9 created_ms,
--       then 8 per written agent: version, params, extras, event_time, ingest_time, computed_at,
--       snippet JSON or '', ttl_ms; then the history marker ('source=offset ...') or ''.
-- Returns {tombstone_seen, user_exists, agents_accepted, history_refused}.
-- History guard (ADR 0009): a write whose marker does not cover the stored one (a stored source
-- it lacks, or starts later in) applies only its deletion and removed agents.
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
-- One read of the user's meta hash for the history guard and the newest stamps below (nothing
-- in between writes it).
local m = redis.call('HMGET', meta, 'history', 'newest_event_ms', 'newest_ingest_ms',
  'created_ms')
if history ~= '' then
  local stored = m[1]
  if stored then
    local mine = {}
    for src, off in string.gmatch(history, '(%S+)=(%d+)') do mine[src] = tonumber(off) end
    for src, off in string.gmatch(stored, '(%S+)=(%d+)') do
      local mm = mine[src]
      if (not mm) or mm > tonumber(off) then
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
-- Index changes are gathered and made with one SADD / SREM at the end: an agent's keys are
-- either added or removed, never both, so the order does not matter.
local add, rem = {}, {}
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
      add[#add + 1] = h
      if ARGV[a + 7] ~= '' then
        redis.call('SET', s, ARGV[a + 7], 'PX', ARGV[a + 8])
        add[#add + 1] = s
      else
        redis.call('DEL', s)
        rem[#rem + 1] = s
      end
      accepted = accepted + 1
    end
  end
end
if #rem > 0 then redis.call('SREM', idx, unpack(rem)) end
if tomb_ms and ((not data_time) or data_time <= tomb_ms) then
  if #add > 0 then redis.call('SADD', idx, unpack(add)) end
  return {1, redis.call('EXISTS', meta), accepted, 0}
end
if ARGV[5] ~= '' then
  redis.call('SET', fb, ARGV[5])
  add[#add + 1] = fb
end
-- The meta hash in one HSET: what this write sets, and each stamp only when it moves forward.
local set = {}
if ARGV[6] ~= '' then set[#set + 1] = 'consents'; set[#set + 1] = ARGV[6] end
if history ~= '' then set[#set + 1] = 'history'; set[#set + 1] = history end
if ARGV[7] ~= '' and ((not m[2]) or tonumber(m[2]) < tonumber(ARGV[7])) then
  set[#set + 1] = 'newest_event_ms'; set[#set + 1] = ARGV[7]
end
if ARGV[8] ~= '' and ((not m[3]) or tonumber(m[3]) < tonumber(ARGV[8])) then
  set[#set + 1] = 'newest_ingest_ms'; set[#set + 1] = ARGV[8]
end
if not m[4] then set[#set + 1] = 'created_ms'; set[#set + 1] = ARGV[9] end
if #set > 0 then redis.call('HSET', meta, unpack(set)) end
add[#add + 1] = meta
redis.call('SADD', idx, unpack(add))
local seen = 0
if tomb_ms then seen = 1 end
return {seen, 1, accepted, 0}
