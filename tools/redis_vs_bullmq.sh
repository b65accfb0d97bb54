#!/usr/bin/env bash
# codeQ on Redis against BullMQ at BullMQ's own shape, on one redis-server,
# alternated (docs/performance.md, "Redis backend" and "Against the targets").
#
#   tools/redis_vs_bullmq.sh [always|everysec] [ROUNDS] [PATH_TO_CODEQ_BINARY]
#
# Each round: one `codeq serve` replica on the Redis, driven by `codeq bench
# --producers 100 --workers 50 --claim-next` (100 creates in flight; each
# worker's result asks for its next task, as BullMQ's moveToFinished fetches
# the next job), then BullMQ's steady producer + worker (`--inflight 100
# --concurrency 50`, its defaults) on the same Redis. Redis is flushed before
# each run. Prints each run's cycles/s, the CPU per cycle of Redis, the
# server and the bench (from /proc), and last the ratio of the medians.
#
# Needs redis-server, redis-cli, node with bullmq + ioredis under NODE_PATH
# (BULLMQ_DIR, default /tmp/codeq-bench-bullmq: `npm install` of
# /work/shared/bench/bullmq/package.json there).
# Env: COUNT (60000 tasks), SECS (10, BullMQ), BENCH_DIR, REDIS_PORT (6393).
set -uo pipefail
mode=${1:-everysec}
rounds=${2:-3}
case $mode in always|everysec) ;; *) echo "mode: always or everysec"; exit 1 ;; esac
. "$(dirname "$0")/bench_setup.sh" "${3:-}"
count=${COUNT:-60000}
secs=${SECS:-10}
rport=${REDIS_PORT:-6393}
work=$(mktemp -d)
export ANCHOR_TMP="$work/redis"
server=

cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null
  wait 2>/dev/null
  "$bench_dir/redis_ctl.sh" stop "$rport" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
# cpu PID: user + system clock ticks so far.
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }

"$bench_dir/redis_ctl.sh" start "aof-$mode" "$rport" >/dev/null || exit 1
redis_pid=$(cat "$work/redis/redis-$rport/pid")
redis_pid=$(pgrep -P "$redis_pid" redis-server || echo "$redis_pid")
ticks=$(getconf CLK_TCK)

# codeq_run: prints "CYCLES_PER_SECOND REDIS_US SERVER_US BENCH_US".
codeq_run() {
  "$bench_dir/redis_ctl.sh" flush "$rport" >/dev/null
  local port; port=$(free_port)
  rm -rf "$work/data"
  CODEQ_STORAGE=redis CODEQ_REDIS_ADDR=127.0.0.1:$rport \
    "$bin" serve --port "$port" --data-dir "$work/data" >"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do curl -fs "127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  local r0 s0 r1 s1
  r0=$(cpu "$redis_pid"); s0=$(cpu "$server")
  /usr/bin/time -f "%U %S" -o "$work/bench.time" "$bin" bench --data-dir "$work/data" --json \
    --count "$count" --producers 100 --workers 50 --claim-next >"$work/bench.json" 2>/dev/null
  r1=$(cpu "$redis_pid"); s1=$(cpu "$server")
  kill "$server"; wait "$server" 2>/dev/null; server=
  python3 - "$work/bench.json" "$work/bench.time" "$count" "$ticks" "$((r1 - r0))" "$((s1 - s0))" <<'PY'
import json, sys
report, times, count, ticks, redis, server = sys.argv[1:]
count, ticks = int(count), int(ticks)
per_cycle = lambda t: t / ticks * 1e6 / count
bench = sum(map(float, open(times).read().split())) * 1e6 / count
print(round(json.load(open(report))["cyclesPerSecond"]),
      round(per_cycle(int(redis))), round(per_cycle(int(server))), round(bench))
PY
}

bullmq_run() {
  "$bench_dir/redis_ctl.sh" flush "$rport" >/dev/null
  timeout 120 node "$bench_dir/bullmq/bench_bullmq.cjs" steady --seconds "$secs" --warmup 2 \
    --inflight 100 --concurrency 50 --mode "aof-$mode" --rep 0 --port "$rport" \
    --out "$work/bull.jsonl" >/dev/null 2>&1
  python3 -c 'import sys,json; print(round(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["throughput"]))' "$work/bull.jsonl"
  rm -f "$work/bull.jsonl"
}

echo "codeq: $("$bin" version 2>/dev/null | head -1); $(redis-server --version | awk '{print $1, $3}'); appendfsync $mode; $(date -u +%FT%TZ)"
codeq_rates=(); bull_rates=()
for r in $(seq "$rounds"); do
  read -r rate redis_us server_us bench_us < <(codeq_run) || { echo "codeQ run failed"; exit 1; }
  bull=$(bullmq_run) || { echo "BullMQ run failed"; exit 1; }
  echo "round $r: codeQ $rate cycles/s (CPU a cycle: Redis $redis_us µs, server $server_us µs, bench $bench_us µs); BullMQ $bull"
  codeq_rates+=("$rate"); bull_rates+=("$bull")
done
python3 - "${codeq_rates[*]}" "${bull_rates[*]}" <<'PY'
import statistics, sys
codeq, bull = ([int(v) for v in arg.split()] for arg in sys.argv[1:])
print("codeQ (Redis, 1 replica):", " · ".join(map(str, codeq)), "cycles/s")
print("BullMQ:                  ", " · ".join(map(str, bull)), "cycles/s")
print("ratio of the medians %.2f" % (statistics.median(codeq) / statistics.median(bull)))
PY
