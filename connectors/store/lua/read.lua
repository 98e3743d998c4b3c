-- KEYS: per user, 3 keys: meta, feedback, keys index; users one after another.
-- ARGV: none (each user's agent and snippet key prefixes are its meta key without `meta`).
-- Returns one reply per user, in KEYS order:
-- false for an unknown user, else {{consents, newest_event_ms, newest_ingest_ms}, feedback or
-- false, agents...} with each agent {agent_id, version, params, extras, event_time,
-- ingest_time, computed_at, snippet or false}. On a cluster it is called with one user only.
local out = {}
for u = 1, #KEYS, 3 do
  local meta = KEYS[u]
  if redis.call('EXISTS', meta) == 0 then
    out[#out + 1] = false
  else
    local base = string.sub(meta, 1, -5)
    local prefix, sprefix = base .. 'agent:', base .. 'snippet:'
    local plen = #prefix
    local one = {redis.call('HMGET', meta, 'consents', 'newest_event_ms', 'newest_ingest_ms'),
      redis.call('GET', KEYS[u + 1])}
    local members = redis.call('SMEMBERS', KEYS[u + 2])
    for i = 1, #members do
      local k = members[i]
      if string.sub(k, 1, plen) == prefix then
        local aid = string.sub(k, plen + 1)
        local v = redis.call('HMGET', k, 'version', 'params', 'extras', 'event_time',
          'ingest_time', 'computed_at')
        if v[1] then
          one[#one + 1] = {aid, v[1], v[2], v[3], v[4], v[5], v[6],
            redis.call('GET', sprefix .. aid)}
        end
      end
    end
    out[#out + 1] = one
  end
end
return out
