-- create: stores new tasks, in order; a task whose idempotency key a live
-- task holds is not stored and the holder is returned instead, and a task
-- of a new command is refused ('!') when the commands known number
-- maxCommands already.
-- ARGV: maxCommands, then per task (11): id, command, payload, priority,
-- webhook?, maxAttempts, idempotencyKey?, runAt?, createdAt, createdBy,
-- visibleAt. Times are moments on the caller's clock (rebased by at()),
-- but for a runAt passed as '@' (not '='): a moment the producer gave,
-- kept as given, its task visible then (or at creation, if that is later).
local made, holders, batch_keys, known = {}, {}, {}, {}
local max_commands, count = tonumber(ARGV[FIRST]), nil
-- True when command c is known, or is added as a new one within the bound.
local function admit(c)
  if known[c] then return true end
  if redis.call('SISMEMBER', K_COMMANDS, c) == 0 then
    count = count or redis.call('SCARD', K_COMMANDS)
    if count >= max_commands then return false end
    count = count + 1
    redis.call('SADD', K_COMMANDS, c)
  end
  known[c] = true
  return true
end
for i = FIRST + 1, #ARGV, 11 do
  local id, c = ARGV[i], ARGV[i + 1]
  local hook, key, run_at = optarg(ARGV[i + 4]), optarg(ARGV[i + 6]), optarg(ARGV[i + 7])
  local holder = key and (batch_keys[key] or redis.call('HGET', K_IDEM, key))
  if holder then
    made[#made + 1] = holder
    local where = redis.call('HGET', K_WHERE, holder)
    holders[#holders + 1] = redis.call('HGETALL', tk(where, holder))
  elseif not admit(c) then
    made[#made + 1] = '!'
  else
    made[#made + 1] = ''
    local created, visible = int(at(ARGV[i + 8])), at(ARGV[i + 10])
    if run_at and string.sub(ARGV[i + 7], 1, 1) == '@' then
      run_at = tonumber(run_at)
      visible = math.max(run_at, tonumber(created))
    elseif run_at then
      run_at = at(run_at)
    end
    local task = tk(c, id)
    -- Its body and its state as a new task, in one HSET.
    local fields = { 'c', c, 'p', ARGV[i + 2], 'pr', ARGV[i + 3], 'm', ARGV[i + 5],
      'ca', created, 'cb', ARGV[i + 9],
      's', 'PENDING', 'a', '0', 'va', int(visible), 'ua', created, 'rp', '0' }
    if hook then fields[#fields + 1] = 'w'; fields[#fields + 1] = hook end
    if key then
      fields[#fields + 1] = 'k'; fields[#fields + 1] = key
      batch_keys[key] = id
      redis.call('HSET', K_IDEM, key, id)
    end
    if run_at then fields[#fields + 1] = 'ra'; fields[#fields + 1] = int(run_at) end
    redis.call('HSET', task, unpack(fields))
    redis.call('HSET', K_WHERE, id, c)
    redis.call('ZADD', qk(c, 'ids'), '0', id)
    index({ id = id, cmd = c, status = 'PENDING', visible = visible,
      priority = tonumber(ARGV[i + 3]) })
  end
end
return emit({ made = made }, holders)
