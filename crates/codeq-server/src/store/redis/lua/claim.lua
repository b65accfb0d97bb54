-- claim: for each request in turn, takes up to `count` ready tasks of its
-- commands, highest priority first, then earliest visible, honouring each
-- command's pause, maxInFlight and rate limit; marks them in progress under
-- the request's lease. ARGV per request: worker, leaseUntil, the caller's
-- now (leaseUntil is rebased from it), count, n, then n commands ('*'
-- alone: all).
local claims, tasks = {}, {}
local i = FIRST
while i <= #ARGV do
  claims[#claims + 1], i = claim_request(i, tasks)
end
keep_buckets()
return emit({ claims = claims }, tasks)
