-- One /feedback batch's events of one bucket, applied atomically (see mab/store/redis_layout.py).
-- KEYS: arms (hash id -> <ddd> successes, failures, t), events (stream), dedupe (zset
--       event id -> at), seq (the stream's entry counter)
-- ARGV: at, wall, half_life, window, dedupe capacity, maxlen, then per event: id,
--       successes, failures, event id
local at, wall = tonumber(ARGV[1]), ARGV[2]
local half_life, window = tonumber(ARGV[3]), tonumber(ARGV[4])
local capacity, maxlen = tonumber(ARGV[5]), ARGV[6]
if window > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. tostring(at - window))
end
local ids, values = {}, {}
local applied, new_arms, duplicates = 0, 0, 0
for i = 7, #ARGV, 4 do
  local arm, ds, df, event = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3]
  local duplicate = false
  if event ~= '' and window > 0 then
    if redis.call('ZSCORE', KEYS[3], event) then
      duplicate = true
    else
      redis.call('ZADD', KEYS[3], at, event)
    end
  end
  if duplicate then
    duplicates = duplicates + 1
  else
    local s, f, t = 0, 0, at
    local packed = redis.call('HGET', KEYS[1], arm)
    if packed then
      s, f, t = struct.unpack('<ddd', packed)
    else
      new_arms = new_arms + 1
    end
    local now = math.max(t, at)
    if half_life > 0 then
      local old, new = 2 ^ (-(now - t) / half_life), 2 ^ (-(now - at) / half_life)
      s, f = s * old + ds * new, f * old + df * new
    else
      s, f = s + ds, f + df
    end
    redis.call('HSET', KEYS[1], arm, struct.pack('<ddd', s, f, now))
    applied = applied + 1
    ids[applied] = struct.pack('<I4', #arm) .. arm
    values[applied] = struct.pack('<ddddd', ds, df, s, f, now)
  end
end
if window > 0 then  -- past its capacity, the bucket forgets its oldest event ids early
  local excess = redis.call('ZCARD', KEYS[3]) - capacity
  if excess > 0 then
    redis.call('ZREMRANGEBYRANK', KEYS[3], 0, excess - 1)
  end
end
if applied > 0 then
  local seq = redis.call('INCR', KEYS[4])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'n', seq, 'w', wall,
             'ids', table.concat(ids), 'v', table.concat(values))
end
return {applied, new_arms, duplicates}
