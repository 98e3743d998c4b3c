-- KEYS: 1 ledger, 2 ledger_at. ARGV: 1 tip id, 2 reaction id, 3 reaction JSON.
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'r:' .. ARGV[1] .. ':' .. ARGV[2], ARGV[3])
return 1
