-- cancel: a pending, delayed or in-progress task becomes CANCELLED with a
-- result record; a terminal one is refused. ARGV: reason?, then per task
-- (2): id, delivery.
local reason = optarg(ARGV[FIRST])
local outcomes, states = {}, {}
for i = FIRST + 1, #ARGV, 2 do
  local s = load(ARGV[i])
  if not s then
    outcomes[#outcomes + 1] = 'NF'
  elseif terminal(s.status) then
    outcomes[#outcomes + 1] = 'T:' .. s.status
  else
    local n = copy(s)
    n.status = 'CANCELLED'; n.worker = nil; n.lease = nil; n.error = reason; n.completed = NOW
    n.updated = NOW
    write(s, n)
    put_result(n, 'CANCELLED', nil, reason, nil, '')
    owe_if_due(s, n, ARGV[i + 1])
    outcomes[#outcomes + 1] = ''
    states[#states + 1] = fields_of(s.key, STATE_NAMES)
  end
end
return emit({ outcomes = outcomes }, states)
