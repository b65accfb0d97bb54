-- replay: sends dead letters of a command round again, each visible at its
-- time, deliveries reset, replays counted. ARGV: command, then (2) id, visibleAt.
local c = ARGV[FIRST]
local replayed = {}
for i = FIRST + 1, #ARGV, 2 do
  local s = load(ARGV[i])
  if s and s.cmd == c and s.status == 'FAILED' and s.dead then
    local n = copy(s)
    n.status = 'PENDING'; n.attempts = 0; n.worker = nil; n.lease = nil; n.visible = at(ARGV[i + 1])
    n.error = nil; n.dead = false; n.completed = nil; n.updated = NOW; n.replays = s.replays + 1
    write(s, n)
    redis.call('HDEL', s.key, unpack(RESULT_NAMES))
    replayed[#replayed + 1] = s.id
  end
end
return emit({ replayed = replayed })
