-- upgrade: moves the ids of the earlier key layout's per-status sets
-- (`<p>:{C}:s:<STATUS>`) into each command's `ids` set, leaving out ids
-- whose task is gone, and deletes the emptied sets. At most ARGV[FIRST]
-- ids a call, so that a large store is moved without holding Redis long;
-- answers how many were moved (0: nothing is left to move). The call that
-- finds nothing left marks the store (`<p>:{*}:layout`), and later
-- calls stop at that mark.
local K_LAYOUT = G .. 'layout'
if redis.call('EXISTS', K_LAYOUT) == 1 then return emit({ moved = 0 }) end
local budget, moved = tonumber(ARGV[FIRST]), 0
for _, c in ipairs(redis.call('SMEMBERS', K_COMMANDS)) do
  for _, status in ipairs({ 'PENDING', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED' }) do
    if moved >= budget then return emit({ moved = moved }) end
    local old = qk(c, 's:' .. status)
    local ids = redis.call('ZRANGE', old, '0', int(budget - moved - 1))
    for _, id in ipairs(ids) do
      if redis.call('EXISTS', tk(c, id)) == 1 then redis.call('ZADD', qk(c, 'ids'), '0', id) end
      redis.call('ZREM', old, id)
    end
    moved = moved + #ids
  end
end
if moved == 0 then redis.call('SET', K_LAYOUT, '2') end
return emit({ moved = moved })
