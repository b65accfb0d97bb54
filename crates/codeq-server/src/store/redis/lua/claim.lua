-- claim: for each request in turn, takes up to `count` ready tasks of its
-- commands, highest priority first, then earliest visible, honouring each
-- command's pause, maxInFlight and rate limit; marks them in progress under
-- the request's lease. ARGV per request: worker, leaseUntil, the caller's
-- now (leaseUntil is rebased from it), count, n, then n commands ('*'
-- alone: all).
local queues, every_command = {}, nil

-- A command's settings and rate-limit bucket, read once per call.
local function settings(c)
  if queues[c] then return queues[c] end
  local v = redis.call('HMGET', qk(c, 'q'), 'paused', 'mif', 'rate', 'burst', 'bt', 'ba')
  queues[c] = { paused = v[1] == '1', mif = optn(v[2]), rate = optn(v[3]), burst = optn(v[4]),
    tokens = optn(v[5]), at = optn(v[6]) }
  return queues[c]
end

-- The token bucket of codeq_core::TokenBucket: full when first used.
local function refill(q)
  if not q.rate then return end
  local size = math.max(q.burst or 1, 1)
  if q.tokens == nil then q.tokens = size; q.at = NOW end
  local elapsed = math.max(NOW - q.at, 0) / 1000
  q.tokens = math.min(q.tokens + elapsed * q.rate, size)
  q.at = NOW
end

local function available(q)
  refill(q)
  return math.max(math.floor(q.tokens + 1e-9), 0)
end

local function commands_at(first, n)
  if n == 1 and ARGV[first] == '*' then
    every_command = every_command or redis.call('SMEMBERS', K_COMMANDS)
    return every_command
  end
  local commands, seen = {}, {}
  for i = first, first + n - 1 do
    if not seen[ARGV[i]] then seen[ARGV[i]] = true; commands[#commands + 1] = ARGV[i] end
  end
  return commands
end

-- How many tasks command `c` may give now, at most `count`.
local function cap_of(c, q, count)
  if q.paused then return 0 end
  local cap = count
  if q.mif then cap = math.min(cap, math.max(q.mif - redis.call('ZCARD', qk(c, 'leases')), 0)) end
  if cap > 0 and q.rate then cap = math.min(cap, available(q)) end
  return cap
end

-- When the next token comes for a command its rate limit holds back now
-- (nil when it does not).
local function held_until(c, q)
  if not q.rate or q.paused or q.rate <= 0 then return nil end
  if redis.call('ZCARD', qk(c, 'ready')) == 0 then return nil end
  if q.mif and redis.call('ZCARD', qk(c, 'leases')) >= q.mif then return nil end
  if available(q) > 0 then return nil end
  local missing = math.max(1 - q.tokens, 0)
  return NOW + math.max(math.ceil(missing / q.rate * 1000 - 1e-6), 0)
end

local function claim_for(worker, lease, count, commands, tasks)
  local candidates, touched = {}, {}
  for _, c in ipairs(commands) do
    local ready = qk(c, 'ready')
    if redis.call('ZCARD', ready) > 0 then
      local q = settings(c)
      touched[#touched + 1] = c
      local cap = cap_of(c, q, count)
      if cap > 0 then
        local head = redis.call('ZRANGE', ready, 0, cap - 1, 'WITHSCORES')
        for i = 1, #head, 2 do
          candidates[#candidates + 1] = { id = head[i], score = tonumber(head[i + 1]), cmd = c }
        end
      end
    end
  end
  table.sort(candidates, function(x, y)
    if x.score ~= y.score then return x.score < y.score end
    return x.id < y.id
  end)
  local ids = {}
  for i = 1, math.min(count, #candidates) do
    local pick = candidates[i]
    local flat = claim_task(pick.cmd, pick.id, worker, lease)
    if flat then
      tasks[#tasks + 1] = flat
      ids[#ids + 1] = pick.id
      local q = queues[pick.cmd]
      if q.rate then q.tokens = math.max(q.tokens - 1, 0) end
    end
  end
  local holds = {}
  for _, c in ipairs(touched) do
    local until_at = held_until(c, queues[c])
    if until_at then holds[#holds + 1] = { c, until_at } end
  end
  return { ids = ids, holds = holds }
end

local claims, tasks = {}, {}
local i = FIRST
while i <= #ARGV do
  local n = tonumber(ARGV[i + 4])
  local lease = at_item(ARGV[i + 1], ARGV[i + 2])
  claims[#claims + 1] = claim_for(ARGV[i], lease, tonumber(ARGV[i + 3]), commands_at(i + 5, n), tasks)
  i = i + 5 + n
end
-- Rate limits: keep what the buckets hold now.
for c, q in pairs(queues) do
  if q.rate then
    refill(q)
    redis.call('HSET', qk(c, 'q'), 'bt', string.format('%.17g', q.tokens), 'ba', int(q.at))
  end
end
return emit({ claims = claims }, tasks)
