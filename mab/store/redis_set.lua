-- Set arms of one bucket to given counts as of time t, atomically with their stream
-- entry, so running mirrors see the load in order with /feedback (mab load-catalog).
-- KEYS: arms, events, dedupe (unused), seq; ARGV: t, wall, maxlen, then per arm: id, s, f
local t, wall, maxlen = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local ids, values, fields = {}, {}, {}
local n = 0
for i = 4, #ARGV, 3 do
  local arm, s, f = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  n = n + 1
  fields[2 * n - 1] = arm
  fields[2 * n] = struct.pack('<ddd', s, f, t)
  ids[n] = struct.pack('<I4', #arm) .. arm
  values[n] = struct.pack('<ddddd', 0, 0, s, f, t)
end
if n > 0 then
  redis.call('HSET', KEYS[1], unpack(fields))
  local seq = redis.call('INCR', KEYS[4])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'n', seq, 'w', wall,
             'ids', table.concat(ids), 'v', table.concat(values))
end
return n
