-- list: task ids newest first (by creation: ids are time-ordered), of a
-- command and a status when given, created before the task `before`.
-- ARGV: command?, status?, before?, limit, scan.
--
-- In-progress tasks come from the lease index, which holds them all. For
-- any other status each command's ids are walked newest first, looking
-- at no more than `scan` of them, so that one call never holds Redis
-- long. Answers `ids` and, when a walk stopped before it could fill the
-- page, `resume`: everything from `resume` up was looked at, and the
-- caller goes on before it.
local c, status = optarg(ARGV[FIRST]), optarg(ARGV[FIRST + 1])
local before, limit = optarg(ARGV[FIRST + 2]), tonumber(ARGV[FIRST + 3])
local scan = tonumber(ARGV[FIRST + 4])
local commands = c and { c } or redis.call('SMEMBERS', K_COMMANDS)
local found, horizon = {}, nil

local function leased(cmd)
  for _, id in ipairs(redis.call('ZRANGE', qk(cmd, 'leases'), 0, -1)) do
    if before == nil or id < before then found[#found + 1] = id end
  end
end

-- Walks `cmd`'s ids down from `before`; where it stops short of the end,
-- the horizon rises to the last id it looked at.
local function walk(cmd)
  local key, from, taken, seen = qk(cmd, 'ids'), before and ('(' .. before) or '+', 0, 0
  while true do
    local want = math.min(scan - seen, 256)
    local chunk = redis.call('ZREVRANGEBYLEX', key, from, '-', 'LIMIT', 0, want)
    for _, id in ipairs(chunk) do
      seen = seen + 1
      if status == nil or redis.call('HGET', tk(cmd, id), 's') == status then
        found[#found + 1] = id
        taken = taken + 1
        if taken == limit then
          if horizon == nil or id > horizon then horizon = id end
          return
        end
      end
    end
    if #chunk < want then return end
    local last = chunk[#chunk]
    if seen >= scan then
      if horizon == nil or last > horizon then horizon = last end
      return
    end
    from = '(' .. last
  end
end

for _, cmd in ipairs(commands) do
  if status == 'IN_PROGRESS' then leased(cmd) else walk(cmd) end
end
table.sort(found, function(x, y) return x > y end)
local page = {}
for _, id in ipairs(found) do
  if #page == limit or (horizon and id < horizon) then break end
  page[#page + 1] = id
end
local body = { ids = page }
if #page < limit then body.resume = horizon end
return emit(body)
