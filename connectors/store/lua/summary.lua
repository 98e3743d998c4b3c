-- KEYS: 1 newest, 2 pending, then the lag stream of each agent.
-- ARGV: 1 now_ms, 2 window_ms, 3 worst_n, 4 max lag samples, 5 prune limit, then each agent's
-- SLA (ms). Returns {active, pending, {stale, samples, p50, p99} per agent, worst (flat
-- user, pending-since pairs)}; p50/p99 are -1 without samples.
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local worst_n, max_samples = tonumber(ARGV[3]), tonumber(ARGV[4])
local since = now - window
local idle = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. since, 'LIMIT', 0, ARGV[5])
for i = 1, #idle do
  local n = redis.call('ZSCORE', KEYS[1], idle[i])
  if (not n) or tonumber(n) < since then redis.call('ZREM', KEYS[2], idle[i]) end
end
local out = {redis.call('ZCOUNT', KEYS[1], since, '+inf'), redis.call('ZCARD', KEYS[2])}
for a = 3, #KEYS do
  local stale = redis.call('ZCOUNT', KEYS[2], '-inf', now - tonumber(ARGV[a + 3]))
  local lags = {}
  local entries = redis.call('XREVRANGE', KEYS[a], '+', since, 'COUNT', max_samples)
  for i = 1, #entries do
    for v in string.gmatch(entries[i][2][2], '[^,]+') do
      lags[#lags + 1] = tonumber(v)
    end
    if #lags >= max_samples then break end
  end
  table.sort(lags)
  local n = #lags
  if n > 0 then
    out[#out + 1] = {stale, n, lags[math.max(math.ceil(0.5 * n), 1)],
      lags[math.max(math.ceil(0.99 * n), 1)]}
  else
    out[#out + 1] = {stale, 0, -1, -1}
  end
end
local worst = {}
if tonumber(worst_n) > 0 then
  worst = redis.call('ZRANGE', KEYS[2], 0, worst_n - 1, 'WITHSCORES')
end
out[#out + 1] = worst
return out
