-- nack: requeues a held task after a delay, or dead-letters it after its
-- last delivery. ARGV: id, worker, attempt?, delaySeconds, reason?, delivery.
local s = load(ARGV[FIRST])
if not s then return emit({ err = 'NF' }) end
local n, dead = rule_nack(s, ARGV[FIRST + 1], optn(optarg(ARGV[FIRST + 2])),
  tonumber(ARGV[FIRST + 3]), optarg(ARGV[FIRST + 4]))
if not n then return emit({ err = dead }) end
write(s, n)
if dead then put_result(n, 'FAILED', nil, 'MAX_ATTEMPTS', nil, '') end
owe_if_due(s, n, ARGV[FIRST + 5])
return emit({ dead = dead, cmd = s.cmd })
