-- KEYS: 1 ledger, 2 ledger_at, 3 keys index, 4 tombstone, 5 meta.
-- ARGV: 1 tip id, 2 shown_at_ms, 3 header JSON, 4 cutoff ms, 5 ttl ms (never shortens), then (agent id, values
-- JSON) pairs. Returns 1 when recorded, 0 for an unknown or deleted user.
local tomb = redis.call('GET', KEYS[4])
if tomb and tonumber(tomb) >= tonumber(ARGV[2]) then return 0 end
if redis.call('EXISTS', KEYS[5]) == 0 then return 0 end
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4])
if #old > 0 then
  local drop = {}
  for i = 1, #old do drop[old[i]] = true end
  local fields = redis.call('HKEYS', KEYS[1])
  for i = 1, #fields do
    local tip = string.match(fields[i], '^%a:([^:]+)')
    if tip and drop[tip] then redis.call('HDEL', KEYS[1], fields[i]) end
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4])
end
-- One HSET for the header and every agent's values (a call from Lua costs more than a field).
local fields = {'h:' .. ARGV[1], ARGV[3]}
for i = 6, #ARGV, 2 do
  fields[#fields + 1] = 'a:' .. ARGV[1] .. ':' .. ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
for k = 1, 2 do
  if redis.call('PTTL', KEYS[k]) < tonumber(ARGV[5]) then redis.call('PEXPIRE', KEYS[k], ARGV[5]) end
end
redis.call('SADD', KEYS[3], KEYS[1], KEYS[2])
return 1
