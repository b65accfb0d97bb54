-- complete_claim: results, each with the claim of its worker's next task
-- (a result with `claimNext`), each pair on its own: the claim is made
-- only when its result was accepted, after it. ARGV per item: the 8 of
-- complete.lua, then a claim request as in claim.lua.
local outcomes, claims, hashes, tasks = {}, {}, {}, {}
local i = FIRST
while i <= #ARGV do
  local outcome, record = complete_item(i)
  outcomes[#outcomes + 1] = outcome
  if outcome.ok then
    if record then hashes[#hashes + 1] = record end
    claims[#claims + 1], i = claim_request(i + 8, tasks)
  else
    -- No claim ran: nothing to tell of the rate limits.
    claims[#claims + 1] = { ids = {}, skipped = true }
    i = i + 8 + 5 + tonumber(ARGV[i + 12])
  end
end
keep_buckets()
-- The records of repeats first, then the tasks claimed, each in its
-- items' order.
for _, task in ipairs(tasks) do hashes[#hashes + 1] = task end
return emit({ outcomes = outcomes, claims = claims }, hashes)
