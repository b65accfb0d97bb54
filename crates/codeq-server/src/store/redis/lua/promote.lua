-- promote: makes delayed tasks visible now ready (at most `limit`), and
-- tells the earliest visible time still delayed. ARGV: limit.
local limit = tonumber(ARGV[FIRST])
local commands = redis.call('SMEMBERS', K_COMMANDS)
local promoted, next_at = 0, nil
for _, c in ipairs(commands) do
  local delayed = qk(c, 'delayed')
  if promoted < limit then
    local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', int(NOW), 'LIMIT', 0, limit - promoted)
    for _, id in ipairs(due) do
      redis.call('ZREM', delayed, id)
      local v = redis.call('HMGET', tk(c, id), 'pr', 'va')
      make_ready(c, id, ready_score(tonumber(v[1]), tonumber(v[2])))
      promoted = promoted + 1
    end
  end
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if first[2] and (next_at == nil or tonumber(first[2]) < next_at) then next_at = tonumber(first[2]) end
end
return emit({ promoted = promoted, next = next_at })
