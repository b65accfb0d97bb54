-- settings: replaces a command's pause and flow limits (the command is
-- listed from then on), and parked claims are woken. A new rate or burst
-- starts with a full bucket; a pause, a resume or a new maxInFlight keeps
-- the bucket as it is (so a pause and resume lets no burst through), as
-- the embedded store's Queue::set_settings does.
-- Mode 'paused' changes the pause only, the limits as they are.
-- Refused ({refused = true}, nothing changed) for a new command when the
-- commands known number maxCommands already; else {before = the texts of
-- paused, mif, rate and burst before ('' when not set)}.
-- ARGV: command, paused ('1'/'0'), maxInFlight?, ratePerSecond?, burst?,
-- maxCommands, mode ('all'/'paused').
local c = ARGV[FIRST]
if redis.call('SISMEMBER', K_COMMANDS, c) == 0
    and redis.call('SCARD', K_COMMANDS) >= tonumber(ARGV[FIRST + 5]) then
  return emit({ refused = true })
end
local key = qk(c, 'q')
local was = redis.call('HMGET', key, 'paused', 'mif', 'rate', 'burst')
local before = { was[1] or '', was[2] or '', was[3] or '', was[4] or '' }
if ARGV[FIRST + 6] == 'paused' then
  redis.call('HSET', key, 'paused', ARGV[FIRST + 1])
  redis.call('SADD', K_COMMANDS, c)
  READY[c] = true
  return emit({ before = before })
end
local set, del = { 'paused', ARGV[FIRST + 1] }, {}
for i, name in ipairs({ 'mif', 'rate', 'burst' }) do
  local v = optarg(ARGV[FIRST + 1 + i])
  if v then set[#set + 1] = name; set[#set + 1] = v else del[#del + 1] = name end
end
local rate, burst = optn(optarg(ARGV[FIRST + 3])), optn(optarg(ARGV[FIRST + 4]))
local same_rate = optn(was[3]) == rate and optn(was[4]) == burst
if rate and not same_rate then
  set[#set + 1] = 'bt'; set[#set + 1] = string.format('%.17g', math.max(burst or 1, 1))
  set[#set + 1] = 'ba'; set[#set + 1] = int(NOW)
elseif not rate then
  del[#del + 1] = 'bt'; del[#del + 1] = 'ba'
end
redis.call('HSET', key, unpack(set))
-- Listed from now on, as a command with tasks is.
redis.call('SADD', K_COMMANDS, c)
if #del > 0 then redis.call('HDEL', key, unpack(del)) end
READY[c] = true
return emit({ before = before })
