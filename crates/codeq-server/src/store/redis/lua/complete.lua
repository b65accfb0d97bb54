-- complete: makes tasks terminal with their results, each on its own.
-- ARGV per item (8): id, worker, attempt?, status, result?, error?,
-- artifacts?, delivery.
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
      local n = copy(s)
      local result_error = optarg(ARGV[i + 5])
      if status == 'COMPLETED' then n.status = 'COMPLETED'; n.error = nil
      elseif status == 'FAILED' then n.status = 'FAILED'; n.error = result_error
      else n.status = 'CANCELLED'; n.error = result_error end
      n.worker = worker; n.lease = nil; n.completed = NOW; n.updated = NOW
      record = result_fields(status, optarg(ARGV[i + 4]), result_error, optarg(ARGV[i + 6]), worker)
      write(s, n, record)
      owe_if_due(s, n, ARGV[i + 7])
      outcome = { ok = 'stored', cmd = s.cmd }
    end
  end
  outcomes[#outcomes + 1] = outcome
  if outcome.ok then records[#records + 1] = record or fields_of(s.key, RESULT_NAMES) end
end
return emit({ outcomes = outcomes }, records)
