-- KEYS: per user, 3 keys: meta, feedback, keys index; users one after another.
-- ARGV: the agent ids to read (the batch read: the registered ones); none: every agent in each
--       user's keys index. Each user's agent and snippet key prefixes are its meta key without
--       `meta`.
-- Returns one flat array, users in KEYS order: false for an unknown user, else n (an integer,
-- never false), consents, newest_event_ms, newest_ingest_ms, feedback (each false when absent),
-- then n agents of 8 values each: agent_id, version, params, extras, event_time, ingest_time,
-- computed_at, snippet or false.
-- On a cluster it is called with one user only.
-- Flat, and the strings (feedback, snippets) read by one MGET per 500 keys at the end: a nested
-- reply and a GET per string cost Redis about half again as much (ADR 0036).
local out, skeys, spos = {}, {}, {}
local wanted = #ARGV > 0
for u = 1, #KEYS, 3 do
  local meta = KEYS[u]
  if redis.call('EXISTS', meta) == 0 then
    out[#out + 1] = false
  else
    local base = string.sub(meta, 1, -5)
    local prefix, sprefix = base .. 'agent:', base .. 'snippet:'
    local m = redis.call('HMGET', meta, 'consents', 'newest_event_ms', 'newest_ingest_ms')
    local at = #out
    out[at + 1], out[at + 2], out[at + 3], out[at + 4], out[at + 5] = 0, m[1], m[2], m[3], false
    skeys[#skeys + 1] = KEYS[u + 1]
    spos[#spos + 1] = at + 5
    local ids = ARGV
    if not wanted then
      ids = {}
      local plen = #prefix
      local members = redis.call('SMEMBERS', KEYS[u + 2])
      for i = 1, #members do
        local k = members[i]
        if string.sub(k, 1, plen) == prefix then ids[#ids + 1] = string.sub(k, plen + 1) end
      end
    end
    local n = 0
    for i = 1, #ids do
      local aid = ids[i]
      local v = redis.call('HMGET', prefix .. aid, 'version', 'params', 'extras', 'event_time',
        'ingest_time', 'computed_at')
      if v[1] then
        n = n + 1
        local o = #out
        out[o + 1], out[o + 2], out[o + 3], out[o + 4] = aid, v[1], v[2], v[3]
        out[o + 5], out[o + 6], out[o + 7], out[o + 8] = v[4], v[5], v[6], false
        skeys[#skeys + 1] = sprefix .. aid
        spos[#spos + 1] = o + 8
      end
    end
    out[at + 1] = n
  end
end
for i = 1, #skeys, 500 do
  local vals = redis.call('MGET', unpack(skeys, i, math.min(i + 499, #skeys)))
  for k = 1, #vals do out[spos[i + k - 1]] = vals[k] end
end
return out
