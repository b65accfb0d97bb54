-- heartbeat: extends the lease of a held task whose lease has not ended.
-- ARGV: id, worker, attempt?, leaseUntil.
local s = load(ARGV[FIRST])
if not s then return emit({ err = 'NF' }) end
local kind, err = hold(s, ARGV[FIRST + 1], optn(optarg(ARGV[FIRST + 2])))
if not kind then return emit({ err = err }) end
if kind ~= 'held' or s.lease == nil or s.lease < NOW then return emit({ err = 'LE' }) end
local n = copy(s)
n.lease = at(ARGV[FIRST + 3]); n.updated = NOW
write(s, n)
return emit({}, { fields_of(s.key, STATE_NAMES) })
