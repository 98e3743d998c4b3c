-- KEYS: 1 identity marker. ARGV: 1 new id, 2 now_ms, 3 state. Created only when absent.
-- Returns the marker's flat hash.
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'created_ms', ARGV[2], 'state', ARGV[3],
    'state_ms', ARGV[2])
end
return redis.call('HGETALL', KEYS[1])
