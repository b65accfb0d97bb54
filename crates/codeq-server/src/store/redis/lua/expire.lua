-- expire: requeues or dead-letters each task still on the given delivery
-- whose lease ended. ARGV per item (4): id, attempts, delaySeconds, delivery.
local expired = {}
for i = FIRST, #ARGV, 4 do
  local s = load(ARGV[i])
  if s and s.attempts == tonumber(ARGV[i + 1]) then
    local delay = tonumber(ARGV[i + 2])
    local n, dead = rule_expire(s, delay)
    if n then
      write(s, n)
      if dead then put_result(n, 'FAILED', nil, 'MAX_ATTEMPTS', nil, '') end
      owe_if_due(s, n, ARGV[i + 3])
      expired[#expired + 1] = { s.id, s.cmd, dead and -1 or delay }
    end
  end
end
return emit({ expired = expired })
