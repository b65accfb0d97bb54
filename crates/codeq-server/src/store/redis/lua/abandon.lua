-- abandon: gives a held task back to the ready queue at once.
-- ARGV: id, worker, attempt?.
local s = load(ARGV[FIRST])
if not s then return emit({ err = 'NF' }) end
local kind, err = hold(s, ARGV[FIRST + 1], optn(optarg(ARGV[FIRST + 2])))
if not kind then return emit({ err = err }) end
if kind == 'lapsed' then return emit({ err = 'NIP:' .. s.status }) end
local n = copy(s)
n.status = 'PENDING'; n.worker = nil; n.lease = nil; n.visible = NOW; n.updated = NOW
write(s, n)
return emit({})
