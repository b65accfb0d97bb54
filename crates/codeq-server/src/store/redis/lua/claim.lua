-- claim: takes up to `count` ready tasks of the given commands, highest
-- priority first, then earliest visible, honouring each command's pause,
-- maxInFlight and rate limit; marks them in progress under a lease.
-- ARGV: worker, leaseUntil, count, then the commands ('*' alone: all).
local worker, lease, count = ARGV[FIRST], at(ARGV[FIRST + 1]), tonumber(ARGV[FIRST + 2])
local commands = {}
if ARGV[FIRST + 3] == '*' then
  commands = redis.call('SMEMBERS', K_COMMANDS)
else
  local seen = {}
  for i = FIRST + 3, #ARGV do
    if not seen[ARGV[i]] then seen[ARGV[i]] = true; commands[#commands + 1] = ARGV[i] end
  end
end

local function settings(c)
  local v = redis.call('HMGET', qk(c, 'q'), 'paused', 'mif', 'rate', 'burst', 'bt', 'ba')
  return { paused = v[1] == '1', mif = optn(v[2]), rate = optn(v[3]), burst = optn(v[4]),
    tokens = optn(v[5]), at = optn(v[6]) }
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

local queues, candidates = {}, {}
for _, c in ipairs(commands) do
  local ready = qk(c, 'ready')
  if redis.call('ZCARD', ready) > 0 then
    local q = settings(c)
    queues[c] = q
    local cap = count
    if q.paused then cap = 0 end
    if cap > 0 and q.mif then
      cap = math.min(cap, math.max(q.mif - redis.call('ZCARD', qk(c, 'leases')), 0))
    end
    if cap > 0 and q.rate then cap = math.min(cap, available(q)) end
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

local tasks, ids, taken = {}, {}, {}
for i = 1, math.min(count, #candidates) do
  local pick = candidates[i]
  local s, flat = load_all(pick.cmd, pick.id)
  if s then
    tasks[#tasks + 1] = patched(flat, write(s, rule_claim(s, worker, lease)))
    taken[pick.cmd] = (taken[pick.cmd] or 0) + 1
    ids[#ids + 1] = s.id
  end
end

-- Rate limits: take the tokens, and tell when the next one comes for the
-- commands a rate limit holds back now.
local holds = {}
for c, q in pairs(queues) do
  if q.rate then
    refill(q)
    q.tokens = math.max(q.tokens - (taken[c] or 0), 0)
    redis.call('HSET', qk(c, 'q'), 'bt', string.format('%.17g', q.tokens), 'ba', int(q.at))
    local ready_left = redis.call('ZCARD', qk(c, 'ready')) > 0
    local under = not q.mif or redis.call('ZCARD', qk(c, 'leases')) < q.mif
    if ready_left and not q.paused and under and available(q) == 0 and q.rate > 0 then
      local missing = math.max(1 - q.tokens, 0)
      holds[#holds + 1] = { c, NOW + math.max(math.ceil(missing / q.rate * 1000 - 1e-6), 0) }
    end
  end
end
return emit({ holds = holds, ids = ids }, tasks)
