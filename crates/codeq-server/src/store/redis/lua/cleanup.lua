-- cleanup: deletes up to `limit` terminal tasks that ended at or before
-- `before` (not those whose callback is still owed), with their results
-- and idempotency keys: oldest first across every command (by end time,
-- then id, as the embedded store), merged from each command's `done` set.
-- ARGV: before, limit. `before` is a moment the caller gave, or the
-- retention's cutoff, and is compared with end times as it is (not
-- rebased: a replica's clock skew is nothing beside a retention period).
local before, limit = tonumber(ARGV[FIRST]), tonumber(ARGV[FIRST + 1])
local most = math.min(limit, 200)
-- One command's tasks that ended by `before`, a page at a time: `rows`
-- (id, end time, ...), the next row, and how many it passed over because
-- their callback is owed (they stay, so the next page starts after them).
-- Pages start at one row and grow fourfold up to `most`: with many
-- commands, most give a row or two to a call. advance() moves `id` and
-- `ended` to the next that may go; false when there is none.
local function advance(src)
  while true do
    if src.next > #src.rows then
      if src.last then return false end
      src.rows = redis.call('ZRANGEBYSCORE', qk(src.c, 'done'), '-inf', int(before),
        'WITHSCORES', 'LIMIT', src.kept, src.page)
      src.next, src.last = 1, #src.rows < 2 * src.page
      src.page = math.min(src.page * 4, most)
      if #src.rows == 0 then return false end
    end
    local id = src.rows[src.next]
    src.next = src.next + 2
    if redis.call('HEXISTS', tk(src.c, id), 'ob') == 1 then
      src.kept = src.kept + 1
    else
      src.id, src.ended = id, tonumber(src.rows[src.next - 1])
      return true
    end
  end
end
-- A binary heap of the commands by their next task's (end time, id).
local heap = {}
local function earlier(a, b) return a.ended < b.ended or (a.ended == b.ended and a.id < b.id) end
local function push(src)
  heap[#heap + 1] = src
  local i = #heap
  while i > 1 and earlier(heap[i], heap[math.floor(i / 2)]) do
    local parent = math.floor(i / 2)
    heap[i], heap[parent] = heap[parent], heap[i]
    i = parent
  end
end
local function pop()
  local top, last = heap[1], table.remove(heap)
  if #heap == 0 then return top end
  heap[1] = last
  local i = 1
  while true do
    local least = i
    for _, child in ipairs({ 2 * i, 2 * i + 1 }) do
      if child <= #heap and earlier(heap[child], heap[least]) then least = child end
    end
    if least == i then return top end
    heap[i], heap[least] = heap[least], heap[i]
    i = least
  end
end
local deleted = {}
if limit > 0 then
  for _, c in ipairs(redis.call('SMEMBERS', K_COMMANDS)) do
    local src = { c = c, rows = {}, next = 1, kept = 0, last = false, page = 1 }
    if advance(src) then push(src) end
  end
end
while #deleted < limit and #heap > 0 do
  local src = pop()
  delete_task(src.c, src.id)
  deleted[#deleted + 1] = src.id
  if advance(src) then push(src) end
end
return emit({ deleted = deleted })
