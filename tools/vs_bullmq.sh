#!/usr/bin/env bash
# codeQ (embedded) beside BullMQ in one run, every figure a user compares on
# (docs/performance.md, "codeQ beside BullMQ in one hour"):
#
#   tools/vs_bullmq.sh [PATH_TO_CODEQ_BINARY]        (from the project root)
#
# Each line pairs a codeQ run with its BullMQ counterpart, one after the
# other, on a fresh data directory or a fresh redis-server:
#   saturation   codeQ fsync / buffered (loadgen 8 producers, 32 workers)
#                against BullMQ AOF always / everysec / memory (its steady
#                producer + worker: 100 adds in flight, concurrency 50);
#   paced        5,000 and 1,000 creates/s: create -> result p50 / p99;
#   idle         20 creates/s, every worker idle: the wake-up, create ->
#                result p50 / p99;
#   batches      codeQ's batch routes (100 tasks a call: create, claim and
#                results) against BullMQ's addBulk of 100 (adds only: BullMQ
#                has no batch claim or completion).
# Needs redis-server, node with bullmq + ioredis under NODE_PATH (BULLMQ_DIR,
# default /tmp/codeq-bench-bullmq: `npm install` of the shared bench's
# bullmq/package.json there) and the shared bench's loadgen (built here).
# Env: SECS (10), BENCH_DIR (/work/shared/bench), REDIS_PORT (6394).
set -uo pipefail
. "$(dirname "$0")/bench_setup.sh" "${1:-}"
target=${LOADGEN_TARGET:-/tmp/codeq-bench-target}
(cd "$bench_dir/loadgen" && CARGO_TARGET_DIR="$target" cargo build --release --quiet) || exit 1
loadgen="$target/release/loadgen"
secs=${SECS:-10}
rport=${REDIS_PORT:-6394}
work=$(mktemp -d)
export ANCHOR_TMP="$work/redis"

# Each run happens in a subshell ($(...)), so the server's pid is kept in a
# file the trap can read, whatever stops the script.
cleanup() {
  [ -s "$work/server.pid" ] && kill "$(cat "$work/server.pid")" 2>/dev/null
  "$bench_dir/redis_ctl.sh" stop "$rport" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# codeq DURABILITY LOADGEN_ARGS...: one loadgen run on a fresh server; its
# JSON report on stdout.
codeq() {
  local durability=$1 port; shift
  port=$(free_port)
  rm -rf "$work/data"
  CODEQ_DURABILITY=$durability "$bin" serve --port "$port" --data-dir "$work/data" >"$work/server.log" 2>&1 &
  local server=$!
  echo "$server" >"$work/server.pid"
  local tokens=
  for _ in $(seq 100); do curl -fs "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  tokens=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["producerToken"], d["workerToken"])' \
    "$work/data/credentials.json" 2>/dev/null)
  if [ -n "$tokens" ]; then
    set -- --producer-token "${tokens% *}" --worker-token "${tokens#* }" "$@"
    "$loadgen" --base-url "http://127.0.0.1:$port" "$@" --duration "$secs" --warmup 2 --json --quiet 2>/dev/null | tail -1
  else
    echo "codeQ did not start:" >&2; tail -3 "$work/server.log" >&2
  fi
  kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; : >"$work/server.pid"
  [ -n "$tokens" ]
}

# bullmq MODE SCENARIO ARGS...: one run on a fresh redis-server; its JSON
# record on stdout.
bullmq() {
  local mode=$1; shift
  "$bench_dir/redis_ctl.sh" start "$mode" "$rport" >/dev/null || return 1
  timeout 180 node "$bench_dir/bullmq/bench_bullmq.cjs" "$@" --mode "$mode" --rep 0 --port "$rport" \
    --out "$work/bull.jsonl" 2>/dev/null | tail -1
  "$bench_dir/redis_ctl.sh" stop "$rport" >/dev/null 2>&1
}

# Its --seconds includes the warm-up; loadgen's --duration does not.
steady() { bullmq "$1" steady --seconds "$((secs + 2))" --warmup 2 --inflight 100 --concurrency 50 --rate "${2:-0}"; }

# line LABEL CODEQ_JSON BULLMQ_JSON: one row of the table.
line() {
  python3 - "$@" <<'PY'
import json, sys
label, ours, theirs = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
def codeq(r):
    lat = r["latency_ms"]["e2e"]
    return f'{r["completed_per_s"]:,.0f} cycles/s, create -> result p50 {lat["p50"]:.2f} / p99 {lat["p99"]:.2f} ms'
def bull(r):
    if "p50_ms" in r and r.get("unit", "").startswith("full"):
        return f'{r["throughput"]:,.0f} cycles/s, add -> completed p50 {r["p50_ms"]:.2f} / p99 {r["p99_ms"]:.2f} ms'
    return f'{r["throughput"]:,.0f} {r["unit"]}'
print(f"{label:<34} codeQ {codeq(ours)}\n{'':<34} BullMQ {bull(theirs)}")
PY
}

cycle=(--producers 8 --workers 32)
line "saturation, fsync / AOF always" "$(codeq fsync "${cycle[@]}")" "$(steady aof-always)"
line "saturation, buffered / everysec" "$(codeq buffered "${cycle[@]}")" "$(steady aof-everysec)"
line "saturation, buffered / memory" "$(codeq buffered "${cycle[@]}")" "$(steady mem)"
line "paced 5,000/s, fsync / AOF always" "$(codeq fsync "${cycle[@]}" --rate 5000)" "$(steady aof-always 5000)"
line "paced 1,000/s, fsync / AOF always" "$(codeq fsync "${cycle[@]}" --rate 1000)" "$(steady aof-always 1000)"
line "idle, 20/s, fsync / AOF always" "$(codeq fsync "${cycle[@]}" --rate 20)" "$(steady aof-always 20)"
line "batches of 100, fsync / AOF always" \
  "$(codeq fsync --scenario batch --batch 100 --producers 3 --workers 8)" \
  "$(bullmq aof-always addbulk --n 200000 --batch 100 --inflight 3)"
