#!/usr/bin/env bash
# Instructions Redis spends per task cycle on the hot scripts, counted by
# callgrind: the same count whatever else the machine is doing, so a
# change to the Lua scripts can be compared on a shared machine
# (docs/performance.md, "Redis backend").
#
#   tools/redis_script_ir.sh [LUA_DIR]      (run from the project root)
#
# Starts redis-server (REDIS_SERVER, default the one on PATH; a `-g` build
# of the same version also gives a per-function breakdown with
# callgrind_annotate on the kept output, KEEP=path) under valgrind with
# instrumentation off, loads the scripts with a short warm-up run of
# tools/redis_script_cost.py, then counts the instructions of ROUNDS rounds
# of ITEMS tasks (--claim-next: creates, then results with their next
# claims). The count includes the tool's own INFO calls, a constant share.
#
# Env: ITEMS (16), ROUNDS (150), PORT (6401), REDIS_SERVER, KEEP.
set -euo pipefail
lua_dir=${1:-crates/codeq-server/src/store/redis/lua}
items=${ITEMS:-16}; rounds=${ROUNDS:-150}; port=${PORT:-6401}
work=$(mktemp -d)
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" --instr-atstart=no \
  "${REDIS_SERVER:-redis-server}" --port "$port" --bind 127.0.0.1 --save '' \
  --appendonly yes --appendfsync everysec --dir "$work" >"$work/log" 2>&1 &
server=$!
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.2; done
cost() { LUA_DIR=$lua_dir python3 tools/redis_script_cost.py --port "$port" --claim-next "$@" >/dev/null; }
cost --items "$items" --rounds 5
callgrind_control -i on "$server" >/dev/null 2>&1
cost --items "$items" --rounds "$rounds"
callgrind_control -i off "$server" >/dev/null 2>&1
callgrind_control -d "$server" >/dev/null 2>&1
redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
wait "$server" || true
total=$(cat "$work"/cg.out* | awk '/^totals:/ {sum += $2} END {print sum}')
[ -n "${KEEP:-}" ] && cat "$work"/cg.out.* >"$KEEP"
echo "$lua_dir: $((total / (items * rounds))) instructions a cycle ($items tasks a call, $rounds rounds)"
