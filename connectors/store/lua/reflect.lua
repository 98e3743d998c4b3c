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
