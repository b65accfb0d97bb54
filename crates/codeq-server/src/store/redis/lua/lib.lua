-- codeQ's Redis backend: what every script shares (prepended to each).
--
-- ARGV[1] the key prefix, ARGV[2] the caller's "now" (ms since the epoch),
-- ARGV[3] 'server' to take the time from Redis (TIME) or 'caller' to use
-- the caller's, ARGV[4] the calling replica's id (pub/sub). A script's own
-- arguments start at ARGV[FIRST]. Every time a caller derived from its
-- clock (a lease end, a visible time) is rebased by at(): moved by the
-- difference between Redis's clock and the caller's, so that replicas
-- with skewed clocks agree on leases and delays.

local P = ARGV[1]
local CALLER_NOW = tonumber(ARGV[2])
local NOW = CALLER_NOW
if ARGV[3] == 'server' then
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local SHIFT = NOW - CALLER_NOW
-- Numbers cost a script time each time they become text (string.format,
-- and Redis formats a number argument of redis.call with '%.17g'): the
-- hot rules pass text, and "now" is made text once.
local NOW_TEXT = string.format('%d', NOW)
local ORIGIN = ARGV[4]
local FIRST = 5

-- Below, each top-level `local` declaration is a part that a script gets
-- only when its body, or another part it gets, names what it declares
-- (scripts.rs): Lua makes every closure of a script again on each call.
-- @parts
local function int(n) return string.format('%d', n) end
local function at(text) return tonumber(text) + SHIFT end
-- A time an item's caller derived from its own "now" (a lease end: items
-- of several callers merged into one call each have theirs), rebased so
-- that it lies as far from Redis's now as from the caller's.
local function at_item(text, caller_now)
  if ARGV[3] ~= 'server' then return tonumber(text) end
  return tonumber(text) + NOW - tonumber(caller_now)
end
-- An optional argument: '' for none, else '=' followed by the value.
local function optarg(v) if v == nil or v == '' then return nil end return string.sub(v, 2) end
local function opt(v) if v then return v end return nil end
local function optn(v) if v then return tonumber(v) end return nil end

-- Keys: <prefix>:{*}:… for what spans commands, <prefix>:{<command>}:…
-- for one command's (one hash tag per command).
local G = P .. ':{*}:'
local K_COMMANDS = G .. 'commands'
local K_WHERE = G .. 'where'
local K_IDEM = G .. 'idem'
local K_OUTBOX = G .. 'outbox'
local K_SUBS = G .. 'subs'
local K_SUBS_LAPSE = G .. 'subs:lapse'
local CHANNEL = G .. 'events'
local function qk(cmd, kind) return P .. ':{' .. cmd .. '}:' .. kind end
local function tk(cmd, id) return P .. ':{' .. cmd .. '}:t:' .. id end

-- What a script reports besides its answer: commands with new ready work
-- (published), commands whose ready set went from empty to non-empty, the
-- earliest deadline it made, whether the outbox changed.
local READY, WOKEN, DEADLINE, OUTBOX_CHANGED = {}, {}, nil, false
local function deadline(t) if DEADLINE == nil or t < DEADLINE then DEADLINE = t end end

local MIF = {}
local function has_max_in_flight(cmd)
  if MIF[cmd] == nil then MIF[cmd] = redis.call('HEXISTS', qk(cmd, 'q'), 'mif') == 1 end
  return MIF[cmd]
end

local function terminal(status)
  return status == 'COMPLETED' or status == 'FAILED' or status == 'CANCELLED'
end

-- The fields load_in() reads, in the order it takes their values.
local LOADED = { 's', 'a', 'wk', 'lu', 'va', 'e', 'lr', 'd', 'ua', 'co', 'rp', 'm', 'pr', 'w', 'ob', 'rb' }

-- A task's state, read from its hash (nil when there is no such task).
local function load_in(cmd, id)
  local key = tk(cmd, id)
  local v = redis.call('HMGET', key, unpack(LOADED))
  if not v[1] then return nil end
  return { id = id, cmd = cmd, key = key, status = v[1], attempts = tonumber(v[2]),
    worker = opt(v[3]), lease = optn(v[4]), visible = tonumber(v[5]), error = opt(v[6]),
    reason = opt(v[7]), dead = v[8] == '1', updated = tonumber(v[9]), completed = optn(v[10]),
    replays = tonumber(v[11]), max = tonumber(v[12]), priority = tonumber(v[13]),
    hook = v[14] ~= false, owed = v[15] ~= false, round = tonumber(v[16]) or 0 }
end

local function load(id)
  local cmd = redis.call('HGET', K_WHERE, id)
  if not cmd then return nil end
  return load_in(cmd, id)
end

-- What the complete rule reads of a task's state: fewer fields, and fewer
-- turned into numbers, than load() (the error only as present or not).
local RESULT_LOADED = { 's', 'a', 'wk', 'e', 'd', 'w' }
local function load_for_result(id)
  local cmd = redis.call('HGET', K_WHERE, id)
  if not cmd then return nil end
  local key = tk(cmd, id)
  local v = redis.call('HMGET', key, unpack(RESULT_LOADED))
  if not v[1] then return nil end
  return { id = id, cmd = cmd, key = key, status = v[1], attempts = tonumber(v[2]),
    worker = opt(v[3]), error = opt(v[4]), dead = v[5] == '1', hook = v[6] ~= false }
end

local function copy(s)
  local c = {}
  for k, v in pairs(s) do c[k] = v end
  return c
end

local STATE_NAMES = { 's', 'a', 'wk', 'lu', 'va', 'e', 'lr', 'd', 'ua', 'co', 'rp', 'rb' }
local RESULT_NAMES = { 'rs', 'rr', 're', 'rx', 'rw', 'rc' }

-- The fields of `names` a hash has, as a flat field/value list.
local function fields_of(key, names)
  local v = redis.call('HMGET', key, unpack(names))
  local out = {}
  for i, name in ipairs(names) do
    if v[i] then out[#out + 1] = name; out[#out + 1] = v[i] end
  end
  return out
end

local function ended(s) return s.completed or s.updated end
-- Claim order in one sorted set: priority (high first), then visible time;
-- equal scores fall back to the member, the id (time-ordered).
local function ready_score(priority, visible) return (9 - priority) * 1e13 + math.max(visible, 0) end

local ADDED = {}
local function make_ready(cmd, id, score)
  local ready = qk(cmd, 'ready')
  -- Scripts only add to a ready set after this: once this script added
  -- one task, the set is not empty.
  if not ADDED[cmd] and redis.call('ZCARD', ready) == 0 then WOKEN[cmd] = true end
  redis.call('ZADD', ready, int(score), id)
  ADDED[cmd] = true
  READY[cmd] = true
end

local function unindex(s)
  local c = s.cmd
  if s.status == 'PENDING' then
    -- Most tasks leave the ready set (claims take them from there).
    if redis.call('ZREM', qk(c, 'ready'), s.id) == 0 then redis.call('ZREM', qk(c, 'delayed'), s.id) end
  elseif s.status == 'IN_PROGRESS' then
    redis.call('ZREM', qk(c, 'leases'), s.id)
    -- A place under maxInFlight: a parked claim may take a task.
    if has_max_in_flight(c) then READY[c] = true end
  else
    redis.call('ZREM', qk(c, 'done'), s.id)
    if s.dead then redis.call('ZREM', qk(c, 'dlq'), s.id) end
  end
end

local function index(s)
  local c = s.cmd
  if s.status == 'PENDING' then
    if s.visible <= NOW then
      make_ready(c, s.id, ready_score(s.priority, s.visible))
    else
      redis.call('ZADD', qk(c, 'delayed'), int(s.visible), s.id)
      deadline(s.visible)
    end
  elseif s.status == 'IN_PROGRESS' then
    local lease = s.lease or NOW
    redis.call('ZADD', qk(c, 'leases'), int(lease), s.id)
    deadline(lease + 1)
  else
    local ended_text = int(ended(s))
    redis.call('ZADD', qk(c, 'done'), ended_text, s.id)
    if s.dead then redis.call('ZADD', qk(c, 'dlq'), ended_text, s.id) end
  end
end

local function moved(a, b)
  if a.status ~= b.status then return true end
  if a.status == 'PENDING' then return a.visible ~= b.visible end
  if a.status == 'IN_PROGRESS' then return a.lease ~= b.lease end
  return a.dead ~= b.dead or ended(a) ~= ended(b)
end

-- Adds field `name` to `set` (name, value) or `del` when it changed.
local function changed(set, del, name, old, new)
  if new == old then return end
  if new == nil then
    del[#del + 1] = name
  else
    set[#set + 1] = name
    set[#set + 1] = type(new) == 'number' and int(new) or new
  end
end

local NONE = {}

-- Stores `after` (the fields that changed) and moves the task between the
-- indexes its change calls for. `before` is nil for a new task; `extra`
-- (optional) are more fields to set with the same command. Answers the
-- fields set (name, value, …) and those deleted.
local function write(before, after, extra)
  local set, del, b = {}, {}, before or NONE
  if extra then for i = 1, #extra do set[i] = extra[i] end end
  changed(set, del, 's', b.status, after.status)
  changed(set, del, 'a', b.attempts, after.attempts)
  changed(set, del, 'wk', b.worker, after.worker)
  changed(set, del, 'lu', b.lease, after.lease)
  changed(set, del, 'va', b.visible, after.visible)
  changed(set, del, 'e', b.error, after.error)
  changed(set, del, 'lr', b.reason, after.reason)
  changed(set, del, 'd', b.dead and '1' or nil, after.dead and '1' or nil)
  changed(set, del, 'ua', b.updated, after.updated)
  changed(set, del, 'co', b.completed, after.completed)
  changed(set, del, 'rp', b.replays, after.replays)
  changed(set, del, 'rb', b.round, after.round)
  if #set > 0 then redis.call('HSET', after.key, unpack(set)) end
  if #del > 0 then redis.call('HDEL', after.key, unpack(del)) end
  if before == nil then
    index(after)
  elseif before.status == 'IN_PROGRESS' and after.status == 'IN_PROGRESS' then
    if before.lease ~= after.lease then
      local lease = after.lease or NOW
      redis.call('ZADD', qk(after.cmd, 'leases'), int(lease), after.id)
      deadline(lease + 1)
    end
  elseif moved(before, after) then
    unindex(before)
    index(after)
  end
  return set, del
end

local function outbox_summary()
  local first = redis.call('ZRANGE', K_OUTBOX, 0, 0, 'WITHSCORES')
  return { count = redis.call('ZCARD', K_OUTBOX), first = first[2] and tonumber(first[2]) }
end

-- The result record of a task that became terminal, as a flat list of
-- its hash's fields.
local function result_fields(status, result, err, artifacts, worker)
  local f = { 'rs', status, 'rw', worker, 'rc', NOW_TEXT }
  if result then f[#f + 1] = 'rr'; f[#f + 1] = result end
  if err then f[#f + 1] = 're'; f[#f + 1] = err end
  if artifacts then f[#f + 1] = 'rx'; f[#f + 1] = artifacts end
  return f
end

-- Stores the result record of a task that became terminal.
local function put_result(s, status, result, err, artifacts, worker)
  redis.call('HSET', s.key, unpack(result_fields(status, result, err, artifacts, worker)))
end

-- A task with a webhook that has just become terminal owes one callback
-- (lifecycle::owes_callback), written with the transition.
local function owe_if_due(before, after, delivery)
  if before.hook and not terminal(before.status) and terminal(after.status) then
    redis.call('HSET', after.key, 'ob', delivery, 'oa', '0', 'on', NOW_TEXT)
    redis.call('HDEL', after.key, 'os')
    redis.call('ZADD', K_OUTBOX, NOW_TEXT, after.id)
    OUTBOX_CHANGED = true
  end
end

-- Deletes a task with its indexes, idempotency key and owed callback.
local function delete_task(cmd, id)
  local key = tk(cmd, id)
  local v = redis.call('HMGET', key, 'k', 'ob')
  for _, kind in ipairs({ 'ids', 'ready', 'delayed', 'leases', 'done', 'dlq' }) do
    redis.call('ZREM', qk(cmd, kind), id)
  end
  if v[1] and redis.call('HGET', K_IDEM, v[1]) == id then redis.call('HDEL', K_IDEM, v[1]) end
  if v[2] then redis.call('ZREM', K_OUTBOX, id); OUTBOX_CHANGED = true end
  redis.call('HDEL', K_WHERE, id)
  redis.call('DEL', key)
end

-- ------------------------------------------------------------ the rules
-- The transition functions of codeq_core::lifecycle, one for one.
-- Refusals: NF not found, NIP:<status> not in progress, NO not the owner,
-- SA:<given>:<current> stale attempt, LE lease expired, RC result
-- conflict, CX cancelled, T:<status> already terminal.

local function hold(s, worker, attempt)
  if s.status == 'CANCELLED' then return nil, 'CX' end
  local lapsed = s.status == 'PENDING' and s.worker ~= nil
  if s.status ~= 'IN_PROGRESS' and not lapsed then return nil, 'NIP:' .. s.status end
  if s.worker ~= worker then
    if lapsed then return nil, 'NIP:' .. s.status end
    return nil, 'NO'
  end
  if attempt ~= nil and attempt ~= s.attempts then
    return nil, 'SA:' .. int(attempt) .. ':' .. int(s.attempts)
  end
  if lapsed then return 'lapsed' end
  return 'held'
end

-- The claim rule on ready task `id` of `cmd`: in progress under `worker`
-- until `lease`, one attempt more. Answers the task's hash as it now is,
-- as a flat field/value list (nil when there is no such task). The
-- hottest rule, so written field by field rather than through load() and
-- write(): a task in a ready set is always pending.
local function claim_task(cmd, id, worker, lease)
  local key = tk(cmd, id)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local attempts = 0
  local lease_text = int(lease)
  local new = { s = 'IN_PROGRESS', wk = worker, lu = lease_text, ua = NOW_TEXT }
  for i = 1, #flat, 2 do
    local name = flat[i]
    if name == 'a' then
      attempts = tonumber(flat[i + 1]) + 1
      flat[i + 1] = int(attempts)
    elseif new[name] then
      flat[i + 1] = new[name]
      new[name] = nil
    end
  end
  for name, value in pairs(new) do flat[#flat + 1] = name; flat[#flat + 1] = value end
  redis.call('HSET', key, 's', 'IN_PROGRESS', 'a', int(attempts), 'wk', worker,
    'lu', lease_text, 'ua', NOW_TEXT)
  redis.call('ZREM', qk(cmd, 'ready'), id)
  redis.call('ZADD', qk(cmd, 'leases'), lease_text, id)
  deadline(lease + 1)
  return flat
end

-- Requeue after `delay` seconds, or dead-letter after the last delivery:
-- `max` after the round began (lifecycle::delivery_limit).
local function rule_retry(s, delay, reason)
  local n = copy(s)
  n.lease = nil; n.reason = reason; n.updated = NOW
  if s.attempts >= s.round + s.max then
    n.status = 'FAILED'; n.worker = nil; n.error = 'MAX_ATTEMPTS'; n.dead = true; n.completed = NOW
    return n, true
  end
  n.status = 'PENDING'; n.visible = NOW + delay * 1000
  return n, false
end

local function rule_nack(s, worker, attempt, delay, reason)
  local kind, err = hold(s, worker, attempt)
  if not kind then return nil, err end
  if kind == 'lapsed' then return nil, 'NIP:' .. s.status end
  local released = copy(s)
  released.worker = nil
  return rule_retry(released, delay, reason)
end

local function rule_expire(s, delay)
  if s.status ~= 'IN_PROGRESS' or (s.lease ~= nil and s.lease >= NOW) then return nil end
  return rule_retry(s, delay, 'LEASE_EXPIRED')
end

local function repeats(s, worker, attempt, status)
  local same = (s.status == 'COMPLETED' and status == 'COMPLETED')
    or (s.status == 'FAILED' and status == 'FAILED')
  return same and not s.dead and s.worker == worker and (attempt == nil or attempt == s.attempts)
end

-- ------------------------------------------------------------ results

-- The complete rule on task `s`, which its worker holds: terminal with
-- `status` (and `err`), its result record `record` stored with it.
-- Written field by field rather than through write(), as the claim rule.
local function finish(s, status, err, record)
  local set, del = {}, {}
  for i = 1, #record do set[i] = record[i] end
  set[#set + 1] = 's'; set[#set + 1] = status
  set[#set + 1] = 'co'; set[#set + 1] = NOW_TEXT
  set[#set + 1] = 'ua'; set[#set + 1] = NOW_TEXT
  if err then
    set[#set + 1] = 'e'; set[#set + 1] = err
  elseif s.error then
    del[#del + 1] = 'e'
  end
  -- The lease end stays in the hash, one command fewer per result: it is
  -- read only while the task is in progress (reply.rs), and a replay
  -- clears it through write().
  redis.call('HSET', s.key, unpack(set))
  if #del > 0 then redis.call('HDEL', s.key, unpack(del)) end
  local n = { id = s.id, cmd = s.cmd, key = s.key, status = status, dead = false,
    completed = NOW, updated = NOW }
  unindex(s)
  index(n)
  return n
end

-- The result whose arguments start at ARGV[i] (id, worker, attempt?,
-- status, result?, error?, artifacts?, delivery): the complete rule.
-- Answers the outcome ({ ok = 'stored' | 'repeated', cmd } or { err }) and,
-- for a repeat, the result record stored before as a flat field list (a
-- stored result's record is the one its caller sent, at NOW).
local function complete_item(i)
  local s = load_for_result(ARGV[i])
  local worker, attempt, status = ARGV[i + 1], optn(optarg(ARGV[i + 2])), ARGV[i + 3]
  local outcome
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
      local record = result_fields(status, optarg(ARGV[i + 4]), result_error, optarg(ARGV[i + 6]), worker)
      -- The record keeps what the worker sent; a completed task carries no error.
      local n = finish(s, status, status ~= 'COMPLETED' and result_error or nil, record)
      owe_if_due(s, n, ARGV[i + 7])
      outcome = { ok = 'stored', cmd = s.cmd }
    end
  end
  if outcome.ok == 'repeated' then return outcome, fields_of(s.key, RESULT_NAMES) end
  return outcome, nil
end

-- ------------------------------------------------------------ claims

-- The claim rule over many requests (the claim and result-and-claim
-- scripts): each command's settings and rate-limit bucket, read once per
-- call, and the list of every command, read at most once.
local QUEUES, EVERY_COMMAND = {}, nil

-- A command's settings and rate-limit bucket.
local function settings(c)
  if QUEUES[c] then return QUEUES[c] end
  local v = redis.call('HMGET', qk(c, 'q'), 'paused', 'mif', 'rate', 'burst', 'bt', 'ba')
  QUEUES[c] = { paused = v[1] == '1', mif = optn(v[2]), rate = optn(v[3]), burst = optn(v[4]),
    tokens = optn(v[5]), at = optn(v[6]) }
  return QUEUES[c]
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
    EVERY_COMMAND = EVERY_COMMAND or redis.call('SMEMBERS', K_COMMANDS)
    return EVERY_COMMAND
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

-- Claim order across commands: priority, then visible time (one score),
-- then id.
local function claim_order(x, y)
  if x.score ~= y.score then return x.score < y.score end
  return x.id < y.id
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
        local head = redis.call('ZRANGE', ready, '0', int(cap - 1), 'WITHSCORES')
        for i = 1, #head, 2 do
          candidates[#candidates + 1] = { id = head[i], score = tonumber(head[i + 1]), cmd = c }
        end
      end
    end
  end
  if #candidates > 1 then table.sort(candidates, claim_order) end
  local ids = {}
  for i = 1, math.min(count, #candidates) do
    local pick = candidates[i]
    local flat = claim_task(pick.cmd, pick.id, worker, lease)
    if flat then
      tasks[#tasks + 1] = flat
      ids[#ids + 1] = pick.id
      local q = QUEUES[pick.cmd]
      if q.rate then q.tokens = math.max(q.tokens - 1, 0) end
    end
  end
  local holds = {}
  for _, c in ipairs(touched) do
    local until_at = held_until(c, QUEUES[c])
    if until_at then holds[#holds + 1] = { c, until_at } end
  end
  return { ids = ids, holds = holds }
end

-- The claim request whose arguments start at ARGV[i] (worker, leaseUntil,
-- the caller's now, count, n, then n commands; '*' alone: all): claims
-- for it, adding the tasks' hashes to `tasks`. Answers the claim (ids,
-- rate-limit holds) and where the next request's arguments start.
local function claim_request(i, tasks)
  local n = tonumber(ARGV[i + 4])
  local lease = at_item(ARGV[i + 1], ARGV[i + 2])
  return claim_for(ARGV[i], lease, tonumber(ARGV[i + 3]), commands_at(i + 5, n), tasks), i + 5 + n
end

-- Rate limits: keeps what the buckets the claims used hold now.
local function keep_buckets()
  for c, q in pairs(QUEUES) do
    if q.rate then
      refill(q)
      redis.call('HSET', qk(c, 'q'), 'bt', string.format('%.17g', q.tokens), 'ba', int(q.at))
    end
  end
end

local function emit(body, extra)
  local ready, woken = {}, {}
  for c in pairs(READY) do ready[#ready + 1] = c end
  for c in pairs(WOKEN) do
    local n = redis.call('ZCARD', qk(c, 'ready'))
    if n > 0 then woken[#woken + 1] = { c, n } end
  end
  if #ready > 0 then redis.call('PUBLISH', CHANNEL, ORIGIN .. ' ' .. table.concat(ready, ' ')) end
  body.now = NOW
  body.shift = SHIFT
  body.ready = ready
  body.woken = woken
  body.deadline = DEADLINE
  if OUTBOX_CHANGED then body.outbox = outbox_summary() end
  local reply = { cjson.encode(body) }
  if extra then for _, item in ipairs(extra) do reply[#reply + 1] = item end end
  return reply
end
