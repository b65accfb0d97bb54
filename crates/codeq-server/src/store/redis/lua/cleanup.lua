-- cleanup: deletes up to `limit` terminal tasks that ended at or before
-- `before` (not those whose callback is still owed), with their results
-- and idempotency keys. ARGV: before, limit.
local before, limit = at(ARGV[FIRST]), tonumber(ARGV[FIRST + 1])
local deleted = {}
for _, c in ipairs(redis.call('SMEMBERS', K_COMMANDS)) do
  local done, offset = qk(c, 'done'), 0
  while #deleted < limit do
    local ended = redis.call('ZRANGEBYSCORE', done, '-inf', int(before), 'LIMIT', offset, 200)
    if #ended == 0 then break end
    for _, id in ipairs(ended) do
      if #deleted < limit then
        if redis.call('HEXISTS', tk(c, id), 'ob') == 1 then
          offset = offset + 1
        else
          delete_task(c, id)
          deleted[#deleted + 1] = id
        end
      end
    end
  end
end
return emit({ deleted = deleted })
