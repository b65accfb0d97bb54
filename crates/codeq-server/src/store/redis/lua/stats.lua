-- stats: depths and settings of the given commands ('*' alone: every
-- command ever used). ARGV: commands…
local commands = {}
if ARGV[FIRST] == '*' then
  commands = redis.call('SMEMBERS', K_COMMANDS)
  table.sort(commands)
else
  for i = FIRST, #ARGV do commands[#commands + 1] = ARGV[i] end
end
local stats = {}
for _, c in ipairs(commands) do
  local q = redis.call('HMGET', qk(c, 'q'), 'paused', 'mif', 'rate', 'burst')
  stats[#stats + 1] = { c, redis.call('ZCARD', qk(c, 'ready')), redis.call('ZCARD', qk(c, 'delayed')),
    redis.call('ZCARD', qk(c, 'leases')), redis.call('ZCARD', qk(c, 'dlq')),
    q[1] or '', q[2] or '', q[3] or '', q[4] or '' }
end
return emit({ stats = stats })
