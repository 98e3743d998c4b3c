-- KEYS: 1 meta, 2 feedback, 3 keys index. ARGV: 1 agent key prefix, 2 snippet key prefix.
-- Returns false for an unknown user, else {{consents, newest_event_ms, newest_ingest_ms} (each
-- false when absent), feedback or false, agents...} where each agent is {agent_id, version,
-- params, extras, event_time, ingest_time, computed_at, snippet or false}.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local out = {redis.call('HMGET', KEYS[1], 'consents', 'newest_event_ms', 'newest_ingest_ms'),
  redis.call('GET', KEYS[2])}
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
