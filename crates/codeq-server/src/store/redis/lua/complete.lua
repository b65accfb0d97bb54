-- complete: makes tasks terminal with their results, each on its own.
-- ARGV per item (8): id, worker, attempt?, status, result?, error?,
-- artifacts?, delivery.

-- The complete rule on task `s`, which its worker holds: terminal with
-- `status` (and `err`), its result record `record` stored with it.
-- Written field by field rather than through write(), as the claim rule.
local function finish(s, status, err, record)
  local set, del = {}, {}
  for i = 1, #record do set[i] = record[i] end
  set[#set + 1] = 's'; set[#set + 1] = status
  set[#set + 1] = 'co'; set[#set + 1] = int(NOW)
  set[#set + 1] = 'ua'; set[#set + 1] = int(NOW)
  if err then
    set[#set + 1] = 'e'; set[#set + 1] = err
  elseif s.error then
    del[#del + 1] = 'e'
  end
  if s.lease then del[#del + 1] = 'lu' end
  redis.call('HSET', s.key, unpack(set))
  if #del > 0 then redis.call('HDEL', s.key, unpack(del)) end
  local n = { id = s.id, cmd = s.cmd, key = s.key, status = status, dead = false,
    completed = NOW, updated = NOW }
  unindex(s)
  index(n)
  return n
end

local outcomes, records = {}, {}
for i = FIRST, #ARGV, 8 do
  local s = load(ARGV[i])
  local worker, attempt, status = ARGV[i + 1], optn(optarg(ARGV[i + 2])), ARGV[i + 3]
  local outcome, record
  if not s then
    outcome = { err = 'NF' }
  elseif s.status == 'CANCELLED' then
    outcome = { err = 'CX' }
  elseif terminal(s.status) then
    if repeats(s, worker, attempt, status) then outcome = { ok = 'repeated', cmd = s.cmd }
    else outcome = { err = 'RC' } end
  else
    local kind, err = hold(s, worker, attempt)
    if not kind then
      outcome = { err = err }
    else
      local result_error = optarg(ARGV[i + 5])
      record = result_fields(status, optarg(ARGV[i + 4]), result_error, optarg(ARGV[i + 6]), worker)
      -- The record keeps what the worker sent; a completed task carries no error.
      local n = finish(s, status, status ~= 'COMPLETED' and result_error or nil, record)
      owe_if_due(s, n, ARGV[i + 7])
      outcome = { ok = 'stored', cmd = s.cmd }
    end
  end
  outcomes[#outcomes + 1] = outcome
  if outcome.ok then records[#records + 1] = record or fields_of(s.key, RESULT_NAMES) end
end
return emit({ outcomes = outcomes }, records)
