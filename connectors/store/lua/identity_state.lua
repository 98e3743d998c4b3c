-- KEYS: 1 identity marker. ARGV: 1 expected id, 2 state, 3 now_ms. Returns 1 when set.
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'state_ms', ARGV[3])
return 1
