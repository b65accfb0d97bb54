-- read: a task's hash (every field, or the named ones). ARGV: id, fields…
local id = ARGV[FIRST]
local c = redis.call('HGET', K_WHERE, id)
if not c then return emit({ found = false }) end
local key = tk(c, id)
if #ARGV == FIRST then return emit({ found = true }, { redis.call('HGETALL', key) }) end
local names = {}
for i = FIRST + 1, #ARGV do names[#names + 1] = ARGV[i] end
return emit({ found = true }, { fields_of(key, names) })
