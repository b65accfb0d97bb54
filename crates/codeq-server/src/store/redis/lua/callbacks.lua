-- callbacks: result callbacks due now (at most `limit`). With a lease end,
-- each one returned is leased until then (its next attempt moves there),
-- so that two replicas never send the same callback at once.
-- ARGV: limit, leaseUntil?.
local limit, lease = tonumber(ARGV[FIRST]), optarg(ARGV[FIRST + 1])
local due = redis.call('ZRANGEBYSCORE', K_OUTBOX, '-inf', int(NOW), 'LIMIT', 0, limit)
local callbacks = {}
for _, id in ipairs(due) do
  local c = redis.call('HGET', K_WHERE, id)
  local v = c and redis.call('HMGET', tk(c, id), 'ob', 'oa')
  if v and v[1] then
    callbacks[#callbacks + 1] = { id, v[1], tonumber(v[2]) }
    if lease then redis.call('ZADD', K_OUTBOX, at(lease), id) end
  else
    redis.call('ZREM', K_OUTBOX, id)
  end
end
OUTBOX_CHANGED = true
return emit({ callbacks = callbacks })
