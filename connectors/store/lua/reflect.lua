-- KEYS: 1 newest, 2 pending, 3 reflected. ARGV: triples (user, reflected ingest ms or '',
-- forget '1'/'0'); forget (a deletion) first removes the user from every freshness key.
-- A batch of distinct users none of whom is forgotten (the common case) reads the old stamps of
-- up to 1,000 users with one ZMSCORE per key and writes them with one command per key: a
-- handful of calls instead of three a user (ADR 0055), with the same outcome as the loop below.
local bulk = true
local named = {}
for i = 1, #ARGV, 3 do
  local u = ARGV[i]
  if ARGV[i + 2] == '1' or named[u] then
    bulk = false
    break
  end
  named[u] = true
end
if bulk then
  local users, stamps = {}, {}
  for i = 1, #ARGV, 3 do
    if ARGV[i + 1] ~= '' then
      users[#users + 1] = ARGV[i]
      stamps[#stamps + 1] = tonumber(ARGV[i + 1])
    end
  end
  for first = 1, #users, 1000 do
    local last = math.min(first + 999, #users)
    local reflected = redis.call('ZMSCORE', KEYS[3], unpack(users, first, last))
    local newest = redis.call('ZMSCORE', KEYS[1], unpack(users, first, last))
    local moved, ahead, caught, behind = {}, {}, {}, {}
    for j = first, last do
      local u, cur = users[j], stamps[j]
      local r = reflected[j - first + 1]
      if r then r = tonumber(r) end
      if (not r) or cur > r then  -- the reflected stamp moves forward only (ZADD GT)
        moved[#moved + 1] = cur; moved[#moved + 1] = u
      else
        cur = r
      end
      local n = newest[j - first + 1]
      if n then n = tonumber(n) end
      if (not n) or n < cur then
        ahead[#ahead + 1] = cur; ahead[#ahead + 1] = u
        caught[#caught + 1] = u
      elseif n <= cur then
        caught[#caught + 1] = u
      else
        behind[#behind + 1] = cur + 1; behind[#behind + 1] = u
      end
    end
    if #moved > 0 then redis.call('ZADD', KEYS[3], 'GT', unpack(moved)) end
    if #ahead > 0 then redis.call('ZADD', KEYS[1], 'GT', unpack(ahead)) end
    if #caught > 0 then redis.call('ZREM', KEYS[2], unpack(caught)) end
    if #behind > 0 then redis.call('ZADD', KEYS[2], 'XX', 'GT', unpack(behind)) end
  end
  return 1
end
for i = 1, #ARGV, 3 do
  local u, r = ARGV[i], ARGV[i + 1]
  if ARGV[i + 2] == '1' then
    redis.call('ZREM', KEYS[1], u)
    redis.call('ZREM', KEYS[2], u)
    redis.call('ZREM', KEYS[3], u)
  end
  if r ~= '' then
    -- Fewest calls for the common case (the flow reflects a newer event than before, and
    -- nothing newer was stamped): ZADD GT CH says whether the stamp moved, so its old value
    -- is read only when it did not.
    local cur = tonumber(r)
    if redis.call('ZADD', KEYS[3], 'GT', 'CH', cur, u) == 0 then
      cur = tonumber(redis.call('ZSCORE', KEYS[3], u))
    end
    if redis.call('ZADD', KEYS[1], 'GT', 'CH', cur, u) == 1 then
      redis.call('ZREM', KEYS[2], u)  -- newest was older or absent: caught up
    else
      local newest = tonumber(redis.call('ZSCORE', KEYS[1], u))
      if newest <= cur then
        redis.call('ZREM', KEYS[2], u)
      else
        redis.call('ZADD', KEYS[2], 'XX', 'GT', cur + 1, u)
      end
    end
  end
end
return 1
