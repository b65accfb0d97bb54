-- subscriptions: stores ('put' id lapsesAt json), deletes ('delete' id) or
-- removes the lapsed ('lapse'). ARGV: operation, …
local op = ARGV[FIRST]
if op == 'put' then
  redis.call('HSET', K_SUBS, ARGV[FIRST + 1], ARGV[FIRST + 3])
  redis.call('ZADD', K_SUBS_LAPSE, ARGV[FIRST + 2], ARGV[FIRST + 1])
  return emit({ count = 1 })
elseif op == 'delete' then
  redis.call('ZREM', K_SUBS_LAPSE, ARGV[FIRST + 1])
  return emit({ count = redis.call('HDEL', K_SUBS, ARGV[FIRST + 1]) })
end
local lapsed = redis.call('ZRANGEBYSCORE', K_SUBS_LAPSE, '-inf', int(NOW))
for _, id in ipairs(lapsed) do
  redis.call('HDEL', K_SUBS, id)
  redis.call('ZREM', K_SUBS_LAPSE, id)
end
return emit({ count = #lapsed })
