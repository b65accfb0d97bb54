-- dead_letters: a page of a command's dead letters, newest first, after
-- the cursor (failedAt, id), failed before/after the given times, whose
-- error or last reason contains the text.
-- ARGV: command, before?, after?, cursorAt?, cursorId?, text?, limit.
local c = ARGV[FIRST]
local before, after = optn(optarg(ARGV[FIRST + 1])), optn(optarg(ARGV[FIRST + 2]))
local cursor_at, cursor_id = optn(optarg(ARGV[FIRST + 3])), optarg(ARGV[FIRST + 4])
local text, limit = optarg(ARGV[FIRST + 5]), tonumber(ARGV[FIRST + 6])
local dlq = qk(c, 'dlq')
local top = cursor_at and int(cursor_at) or '+inf'
local page, offset, stop = {}, 0, false

local function mentions(id)
  local v = redis.call('HMGET', tk(c, id), 'e', 'lr')
  for _, field in ipairs({ v[1], v[2] }) do
    if field and string.find(field, text, 1, true) then return true end
  end
  return false
end

while #page < limit and not stop do
  local chunk = redis.call('ZREVRANGEBYSCORE', dlq, top, '-inf', 'WITHSCORES', 'LIMIT', offset, 500)
  if #chunk == 0 then break end
  for i = 1, #chunk, 2 do
    local id, failed = chunk[i], tonumber(chunk[i + 1])
    offset = offset + 1
    if not (cursor_at and failed == cursor_at and id >= cursor_id) then
      if after and failed <= after then stop = true; break end
      if (not before or failed < before) and (not text or mentions(id)) then
        page[#page + 1] = { failed, id }
        if #page >= limit then break end
      end
    end
  end
end
return emit({ page = page })
