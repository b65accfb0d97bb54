-- replay: sends dead letters of a command round again, each visible at its
-- time, replays counted, a new round of `max` deliveries begun (the delivery
-- numbers go on, for fencing). ARGV: command, then (2) id, visibleAt.
local c = ARGV[FIRST]
local replayed = {}
for i = FIRST + 1, #ARGV, 2 do
  local s = load(ARGV[i])
  if s and s.cmd == c and s.status == 'FAILED' and s.dead then
    local n = copy(s)
    n.status = 'PENDING'; n.worker = nil; n.lease = nil; n.visible = at(ARGV[i + 1])
    n.error = nil; n.dead = false; n.completed = nil; n.updated = NOW; n.replays = s.replays + 1
    n.round = s.attempts
    write(s, n)
    redis.call('HDEL', s.key, unpack(RESULT_NAMES))
    -- The dead letter's callback, if still owed, is dropped (and how an
    -- earlier one ended forgotten): the task owes one again when it ends
    -- anew.
    redis.call('HDEL', s.key, 'os')
    if s.owed then
      redis.call('HDEL', s.key, 'ob', 'oa', 'on')
      redis.call('ZREM', K_OUTBOX, s.id)
      OUTBOX_CHANGED = true
    else
      redis.call('HDEL', s.key, 'oa')
    end
    replayed[#replayed + 1] = s.id
  end
end
return emit({ replayed = replayed })
