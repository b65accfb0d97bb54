#!/usr/bin/env bash
# codeQ on Redis against the embedded backend and BullMQ, in one run, on one
# redis-server per AOF setting (docs/performance.md, "Redis backend").
#
#   tools/bench_redis.sh [PATH_TO_CODEQ_BINARY]      (run from the project root)
#
# For each AOF setting (always, everysec) and ROUNDS times (2), alternating:
#   - codeq bench, single-item and batch, against one replica on Redis;
#   - the same split over two replicas on the same Redis (two codeq bench
#     processes at once, one per replica, each half the tasks; the figure is
#     the sum of the two rates);
#   - BullMQ's steady producer + worker on the same redis-server
#     (/work/shared/bench/bullmq, or BENCH_DIR);
# and once, the embedded backend (durability: fsync) with the same codeq
# bench commands. Redis is flushed between runs. Needs redis-server,
# redis-cli, node with bullmq + ioredis under NODE_PATH (BULLMQ_DIR, default
# /tmp/codeq-bench-bullmq: `npm install` of the bench's package.json).
#
# Env: ROUNDS (2), SINGLE (20000 tasks), BATCH (100000 tasks), SECS (10, BullMQ).
set -uo pipefail
. "$(dirname "$0")/bench_setup.sh" "${1:-}"
rounds=${ROUNDS:-2}
single=${SINGLE:-20000}
batch=${BATCH:-100000}
secs=${SECS:-10}
rport=${REDIS_PORT:-6394}
work=$(mktemp -d)
servers=()
export ANCHOR_TMP="$work/redis"

cleanup() {
  for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
  "$bench_dir/redis_ctl.sh" stop "$rport" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# serve NAME [ENV…]: starts a local-mode server with data dir $work/NAME.
serve() {
  local name=$1; shift
  local port; port=$(free_port)
  rm -rf "${work:?}/$name"
  env "$@" "$bin" serve --port "$port" --data-dir "$work/$name" >"$work/$name.log" 2>&1 &
  servers+=($!)
  for _ in $(seq 100); do curl -fs "127.0.0.1:$port/readyz" >/dev/null && return 0; sleep 0.1; done
  echo "server $name did not start:" >&2; tail -5 "$work/$name.log" >&2; return 1
}

stop_servers() {
  for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  servers=()
}

# bench NAME ARGS…: runs codeq bench against server NAME, prints its JSON report.
bench() {
  local name=$1; shift
  "$bin" bench --data-dir "$work/$name" --json "$@" 2>/dev/null
}

single_args=(--count "$single" --producers 24 --workers 64)
batch_args=(--mode batch --count "$batch" --producers 3 --workers 8)
half_single=(--count $((single / 2)) --producers 12 --workers 32)
half_batch=(--mode batch --count $((batch / 2)) --producers 2 --workers 4)

rate() { python3 -c 'import sys,json; print(round(json.load(sys.stdin)["cyclesPerSecond"]))'; }
sum_rates() { python3 -c 'import sys,json; print(round(sum(json.load(open(f))["cyclesPerSecond"] for f in sys.argv[1:])))' "$@"; }

# one replica on Redis: prints "single batch"
codeq_one() {
  local redis_env=(CODEQ_STORAGE=redis CODEQ_REDIS_ADDR=127.0.0.1:$rport)
  "$bench_dir/redis_ctl.sh" flush "$rport"
  serve a "${redis_env[@]}" || return 1
  local s b
  s=$(bench a "${single_args[@]}" | rate)
  "$bench_dir/redis_ctl.sh" flush "$rport"
  b=$(bench a "${batch_args[@]}" | rate)
  stop_servers
  echo "$s $b"
}

# two replicas on Redis, one bench each at once: prints "single batch"
codeq_two() {
  local redis_env=(CODEQ_STORAGE=redis CODEQ_REDIS_ADDR=127.0.0.1:$rport)
  "$bench_dir/redis_ctl.sh" flush "$rport"
  serve a "${redis_env[@]}" && serve b "${redis_env[@]}" || return 1
  bench a "${half_single[@]}" --command bench-a >"$work/a.json" &
  local other=$!
  bench b "${half_single[@]}" --command bench-b >"$work/b.json"
  wait "$other"
  local s; s=$(sum_rates "$work/a.json" "$work/b.json")
  "$bench_dir/redis_ctl.sh" flush "$rport"
  bench a "${half_batch[@]}" --command batch-a >"$work/a.json" &
  other=$!
  bench b "${half_batch[@]}" --command batch-b >"$work/b.json"
  wait "$other"
  local b; b=$(sum_rates "$work/a.json" "$work/b.json")
  stop_servers
  echo "$s $b"
}

bullmq() {
  local mode=$1
  "$bench_dir/redis_ctl.sh" flush "$rport"
  timeout 120 node "$bench_dir/bullmq/bench_bullmq.cjs" steady --seconds "$secs" --warmup 2 \
    --inflight 100 --concurrency 50 --mode "$mode" --rep 0 --port "$rport" \
    --out "$work/bull.jsonl" >/dev/null 2>&1
  python3 -c 'import sys,json; print(round(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["throughput"]))' "$work/bull.jsonl"
  rm -f "$work/bull.jsonl"
}

embedded() {
  serve e || return 1
  local s b
  s=$(bench e "${single_args[@]}" | rate)
  stop_servers; serve e || return 1
  b=$(bench e "${batch_args[@]}" | rate)
  stop_servers
  echo "$s $b"
}

echo "codeq: $("$bin" version 2>/dev/null | head -1); $(redis-server --version | awk '{print $1, $3}'); $(date -u +%FT%TZ)"
for r in $(seq "$rounds"); do
  read -r es eb < <(embedded) || { echo "embedded run failed"; exit 1; }
  echo "round $r embedded fsync: single $es, batch $eb cycles/s"
done
for fsync in always everysec; do
  "$bench_dir/redis_ctl.sh" start "aof-$fsync" "$rport" >/dev/null || exit 1
  for r in $(seq "$rounds"); do
    read -r s1 b1 < <(codeq_one) || { echo "one-replica run failed"; exit 1; }
    bull=$(bullmq "aof-$fsync") || { echo "BullMQ run failed"; exit 1; }
    read -r s2 b2 < <(codeq_two) || { echo "two-replica run failed"; exit 1; }
    echo "round $r appendfsync $fsync: codeQ 1 replica single $s1, batch $b1; 2 replicas single $s2, batch $b2; BullMQ $bull cycles/s"
  done
  "$bench_dir/redis_ctl.sh" stop "$rport" >/dev/null
done
