-- lease_ends: in-progress tasks whose lease ended before now (at most
-- `limit`), and the earliest lease end of all. ARGV: limit.
local limit = tonumber(ARGV[FIRST])
local ends, next_at = {}, nil
for _, c in ipairs(redis.call('SMEMBERS', K_COMMANDS)) do
  local leases = qk(c, 'leases')
  if #ends < limit then
    local over = redis.call('ZRANGEBYSCORE', leases, '-inf', '(' .. int(NOW), 'LIMIT', 0, limit - #ends)
    for _, id in ipairs(over) do
      local task = redis.call('HMGET', tk(c, id), 'a', 'rb')
      ends[#ends + 1] = { id, tonumber(task[1]) or 0, tonumber(task[2]) or 0 }
    end
  end
  local first = redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')
  if first[2] and (next_at == nil or tonumber(first[2]) < next_at) then next_at = tonumber(first[2]) end
end
return emit({ ends = ends, next = next_at })
