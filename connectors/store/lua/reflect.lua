-- KEYS: 1 newest, 2 pending, 3 reflected. ARGV: triples (user, reflected ingest ms or '',
-- forget '1'/'0'); forget (a deletion) first removes the user from every freshness key.
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
