-- list: task ids newest first (by creation), of a command and a status when
-- given, created before the task `before`. ARGV: command?, status?, before?, limit.
local c, status = optarg(ARGV[FIRST]), optarg(ARGV[FIRST + 1])
local before, limit = optarg(ARGV[FIRST + 2]), tonumber(ARGV[FIRST + 3])
local commands = c and { c } or redis.call('SMEMBERS', K_COMMANDS)
local top = before and ('(' .. before) or '+'
local all = {}
local statuses = status and { status }
  or { 'PENDING', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED' }
for _, cmd in ipairs(commands) do
  for _, each in ipairs(statuses) do
    for _, id in ipairs(redis.call('ZREVRANGEBYLEX', qk(cmd, 's:' .. each), top, '-', 'LIMIT', 0, limit)) do
      all[#all + 1] = id
    end
  end
end
table.sort(all, function(x, y) return x > y end)
local page = {}
for i = 1, math.min(limit, #all) do page[i] = all[i] end
return emit({ ids = page })
