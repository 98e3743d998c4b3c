-- KEYS: five a tip: 1 ledger, 2 ledger_at, 3 keys index, 4 tombstone, 5 meta (the tip's user's).
-- ARGV: for each tip the count of its arguments, then its arguments: 1 tip id, 2 shown_at_ms,
-- 3 header JSON, 4 cutoff ms, 5 ttl ms (never shortens), 6 '1' when the user must have
-- features here (meta exists), '0' in a store that holds only the ledger (ADR 0052), then
-- (agent id, values JSON) pairs.
-- Returns one reply a tip, in order: 1 when recorded, 0 for an unknown or deleted user, or the
-- error that tip alone met (each tip runs in its own pcall: one bad tip never costs the others).
-- One call records a whole trip of tips on one server (ADR 0046); a cluster sends one a tip.
local function record(K, A)
  local tomb = redis.call('GET', K[4])
  if tomb and tonumber(tomb) >= tonumber(A[2]) then return 0 end
  if A[6] == '1' and redis.call('EXISTS', K[5]) == 0 then return 0 end
  local old = redis.call('ZRANGEBYSCORE', K[2], '-inf', '(' .. A[4])
  if #old > 0 then
    local drop = {}
    for i = 1, #old do drop[old[i]] = true end
    local fields = redis.call('HKEYS', K[1])
    for i = 1, #fields do
      local tip = string.match(fields[i], '^%a:([^:]+)')
      if tip and drop[tip] then redis.call('HDEL', K[1], fields[i]) end
    end
    redis.call('ZREMRANGEBYSCORE', K[2], '-inf', '(' .. A[4])
  end
  -- One HSET for the header and every agent's values (a call from Lua costs more than a field).
  local fields = {'h:' .. A[1], A[3]}
  for i = 7, #A, 2 do
    fields[#fields + 1] = 'a:' .. A[1] .. ':' .. A[i]
    fields[#fields + 1] = A[i + 1]
  end
  redis.call('HSET', K[1], unpack(fields))
  redis.call('ZADD', K[2], A[2], A[1])
  for k = 1, 2 do
    if redis.call('PTTL', K[k]) < tonumber(A[5]) then redis.call('PEXPIRE', K[k], A[5]) end
  end
  redis.call('SADD', K[3], K[1], K[2])
  return 1
end

local out = {}
local at = 1
for first = 1, #KEYS, 5 do
  local n = tonumber(ARGV[at])
  local K = {KEYS[first], KEYS[first + 1], KEYS[first + 2], KEYS[first + 3], KEYS[first + 4]}
  local A = {unpack(ARGV, at + 1, at + n)}
  local ok, reply = pcall(record, K, A)
  if ok then
    out[#out + 1] = reply
  else
    out[#out + 1] = redis.error_reply(type(reply) == 'table' and reply.err or tostring(reply))
  end
  at = at + n + 1
end
return out
