-- Freshness. KEYS: 1 newest, 2 pending, 3 reflected.
-- ARGV: triples (user, newest ingest ms, oldest ingest ms) of a stamped batch.
for i = 1, #ARGV, 3 do
  local u, newest, oldest = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  redis.call('ZADD', KEYS[1], 'GT', newest, u)
  local r = redis.call('ZSCORE', KEYS[3], u)
  if r then r = tonumber(r) end
  if (not r) or newest > r then
    local since = oldest
    if r and since <= r then since = r + 1 end
    redis.call('ZADD', KEYS[2], 'NX', since, u)
  end
end
return #ARGV / 3
