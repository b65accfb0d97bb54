-- settings: replaces a command's pause and flow limits (the command is
-- listed from then on); the rate limit starts with a full bucket, and
-- parked claims are woken.
-- Refused ({refused = true}, nothing changed) for a new command when the
-- commands known number maxCommands already.
-- ARGV: command, paused ('1'/'0'), maxInFlight?, ratePerSecond?, burst?,
-- maxCommands.
local c = ARGV[FIRST]
if redis.call('SISMEMBER', K_COMMANDS, c) == 0
    and redis.call('SCARD', K_COMMANDS) >= tonumber(ARGV[FIRST + 5]) then
  return emit({ refused = true })
end
local key = qk(c, 'q')
local set, del = { 'paused', ARGV[FIRST + 1] }, {}
for i, name in ipairs({ 'mif', 'rate', 'burst' }) do
  local v = optarg(ARGV[FIRST + 1 + i])
  if v then set[#set + 1] = name; set[#set + 1] = v else del[#del + 1] = name end
end
local rate, burst = optn(optarg(ARGV[FIRST + 3])), optn(optarg(ARGV[FIRST + 4]))
if rate then
  set[#set + 1] = 'bt'; set[#set + 1] = string.format('%.17g', math.max(burst or 1, 1))
  set[#set + 1] = 'ba'; set[#set + 1] = int(NOW)
else
  del[#del + 1] = 'bt'; del[#del + 1] = 'ba'
end
redis.call('HSET', key, unpack(set))
-- Listed from now on, as a command with tasks is.
redis.call('SADD', K_COMMANDS, c)
if #del > 0 then redis.call('HDEL', key, unpack(del)) end
READY[c] = true
return emit({})
