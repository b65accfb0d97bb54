-- list: task ids newest first (by creation: ids are time-ordered), of a
-- command and a status when given, created before the task `before`.
-- ARGV: command?, status?, before?, limit, scan.
--
-- Every listed command's `ids` set is walked at once, newest first (a
-- heap holds each command's next id), reading each task's status when a
-- status is asked for and looking at no more than `scan` ids, so that one
-- call never holds Redis long. In-progress tasks come from the lease
-- sets instead while they hold no more than `scan` ids in all. Answers
-- `ids` and, when the walk stopped before it could fill the page,
-- `resume`: every id from `resume` up was looked at, and the caller goes
-- on before it.
local c, status = optarg(ARGV[FIRST]), optarg(ARGV[FIRST + 1])
local before, limit = optarg(ARGV[FIRST + 2]), tonumber(ARGV[FIRST + 3])
local scan = tonumber(ARGV[FIRST + 4])
local commands = c and { c } or redis.call('SMEMBERS', K_COMMANDS)
if limit < 1 or scan < 1 then return emit({ ids = {} }) end

-- In progress, when few: every lease set read whole.
local function leased()
  local total = 0
  for _, cmd in ipairs(commands) do total = total + redis.call('ZCARD', qk(cmd, 'leases')) end
  if total > scan then return nil end
  local found = {}
  for _, cmd in ipairs(commands) do
    for _, id in ipairs(redis.call('ZRANGE', qk(cmd, 'leases'), '0', '-1')) do
      if before == nil or id < before then found[#found + 1] = id end
    end
  end
  table.sort(found, function(x, y) return x > y end)
  local page = {}
  for i = 1, math.min(limit, #found) do page[i] = found[i] end
  return page
end

local CHUNK = 128
local first_chunk = math.max(math.min(CHUNK, math.ceil(scan / #commands)), 8)

-- A command's place in the walk: its next ids, read a chunk at a time.
local function next_chunk(head, size)
  local chunk = redis.call('ZREVRANGEBYLEX', head.key, head.from, '-', 'LIMIT', '0', int(size))
  head.ids, head.at = chunk, 1
  if #chunk > 0 then head.from = '(' .. chunk[#chunk] end
  return #chunk > 0
end

-- A max-heap of the commands' places, by the id each is at.
local heap = {}
local function newer(i, j) return heap[i].ids[heap[i].at] > heap[j].ids[heap[j].at] end
local function swap(i, j) heap[i], heap[j] = heap[j], heap[i] end
local function sift_up(i)
  while i > 1 and newer(i, math.floor(i / 2)) do swap(i, math.floor(i / 2)); i = math.floor(i / 2) end
end
local function sift_down(i)
  while true do
    local top, l, r = i, 2 * i, 2 * i + 1
    if l <= #heap and newer(l, top) then top = l end
    if r <= #heap and newer(r, top) then top = r end
    if top == i then return end
    swap(i, top); i = top
  end
end

local function walk()
  for _, cmd in ipairs(commands) do
    local head = { cmd = cmd, key = qk(cmd, 'ids'), from = before and ('(' .. before) or '+' }
    if next_chunk(head, first_chunk) then heap[#heap + 1] = head; sift_up(#heap) end
  end
  local page, seen = {}, 0
  while #heap > 0 do
    local head = heap[1]
    local id = head.ids[head.at]
    seen = seen + 1
    if status == nil or redis.call('HGET', tk(head.cmd, id), 's') == status then
      page[#page + 1] = id
      if #page == limit then return page, nil end
    end
    if seen >= scan then return page, id end
    head.at = head.at + 1
    if head.at > #head.ids and not next_chunk(head, CHUNK) then
      heap[1] = heap[#heap]
      heap[#heap] = nil
    end
    if #heap > 0 then sift_down(1) end
  end
  return page, nil
end

local page = status == 'IN_PROGRESS' and leased()
if page then return emit({ ids = page }) end
local ids, resume = walk()
return emit({ ids = ids, resume = resume })
