-- KEYS: 1 newest, 2 pending. ARGV: 1 now_ms, 2 window_ms, 3 worst_n, 4 prune limit, then each
-- agent's SLA (ms). Returns {active, pending, stale users per agent (in ARGV order), worst
-- (flat user, pending-since pairs)}. The agents' lag samples are read apart, outside any
-- script, in bounded XREVRANGE steps (`RedisFreshnessMixin._lag_stats`): parsing and sorting
-- thousands of samples here held the single-threaded server for milliseconds (ADR 0040).
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local worst_n = tonumber(ARGV[3])
local since = now - window
local idle = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. since, 'LIMIT', 0, ARGV[4])
for i = 1, #idle do
  local n = redis.call('ZSCORE', KEYS[1], idle[i])
  if (not n) or tonumber(n) < since then redis.call('ZREM', KEYS[2], idle[i]) end
end
local stale = {}
for a = 5, #ARGV do
  stale[#stale + 1] = redis.call('ZCOUNT', KEYS[2], '-inf', now - tonumber(ARGV[a]))
end
local worst = {}
if worst_n > 0 then
  worst = redis.call('ZRANGE', KEYS[2], 0, worst_n - 1, 'WITHSCORES')
end
return {redis.call('ZCOUNT', KEYS[1], since, '+inf'), redis.call('ZCARD', KEYS[2]), stale, worst}
