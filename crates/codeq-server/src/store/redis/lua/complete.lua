-- complete: makes tasks terminal with their results, each on its own.
-- ARGV per item (8): id, worker, attempt?, status, result?, error?,
-- artifacts?, delivery.
local outcomes, records = {}, {}
for i = FIRST, #ARGV, 8 do
  local outcome, record = complete_item(i)
  outcomes[#outcomes + 1] = outcome
  if record then records[#records + 1] = record end
end
return emit({ outcomes = outcomes }, records)
