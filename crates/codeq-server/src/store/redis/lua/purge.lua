-- purge: deletes dead letters of a command among the given ids.
-- ARGV: command, ids…
local c = ARGV[FIRST]
local purged = {}
for i = FIRST + 1, #ARGV do
  local s = load(ARGV[i])
  if s and s.cmd == c and s.status == 'FAILED' and s.dead then
    delete_task(c, s.id)
    purged[#purged + 1] = s.id
  end
end
return emit({ purged = purged })
