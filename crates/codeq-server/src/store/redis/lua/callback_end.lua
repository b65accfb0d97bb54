-- callback_end: ends a callback (done) or schedules its next attempt
-- (retry), when `delivery` is still the one owed. A callback done with an
-- outcome keeps it (`os`) with its attempts (`oa`) until the task goes.
-- ARGV: id, delivery, 'done' | 'retry', attempts, nextAt, outcome ('' for none).
local id, delivery = ARGV[FIRST], ARGV[FIRST + 1]
local c = redis.call('HGET', K_WHERE, id)
if c and redis.call('HGET', tk(c, id), 'ob') == delivery then
  if ARGV[FIRST + 2] == 'done' then
    local outcome = ARGV[FIRST + 5]
    if outcome ~= '' then
      redis.call('HDEL', tk(c, id), 'ob', 'on')
      redis.call('HSET', tk(c, id), 'os', outcome, 'oa', ARGV[FIRST + 3])
    else
      redis.call('HDEL', tk(c, id), 'ob', 'oa', 'on')
    end
    redis.call('ZREM', K_OUTBOX, id)
  else
    local next_at = at(ARGV[FIRST + 4])
    redis.call('HSET', tk(c, id), 'oa', ARGV[FIRST + 3], 'on', int(next_at))
    redis.call('ZADD', K_OUTBOX, next_at, id)
  end
end
OUTBOX_CHANGED = true
return emit({})
