-- KEYS: 1 ledger. ARGV: agent ids whose values go from every entry. Returns fields removed.
local fields = redis.call('HKEYS', KEYS[1])
local removed = 0
for i = 1, #fields do
  local f = fields[i]
  if string.sub(f, 1, 2) == 'a:' then
    for j = 1, #ARGV do
      local suffix = ':' .. ARGV[j]
      if string.sub(f, -#suffix) == suffix then
        redis.call('HDEL', KEYS[1], f)
        removed = removed + 1
        break
      end
    end
  end
end
return removed
