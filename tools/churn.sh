#!/usr/bin/env bash
# Churn benchmark of the embedded store: steady create -> claim -> result
# with 1 KiB payloads, at most 4 live tasks, retention and cleanup every
# 5 s, for DURATION seconds (default 600). Every 10 s it prints the data
# directory's size on disk and the server's resident memory, so one can
# see both stay flat (docs/storage.md has a run).
#
#   cargo build --release -p codeq
#   tools/churn.sh            # 10 minutes
#   tools/churn.sh 60         # one minute
#
# CODEQ_BIN picks another binary. The server binds 127.0.0.1 on a free
# port; everything lives in a temporary directory removed at the end.
set -euo pipefail

duration=${1:-600}
bin=${CODEQ_BIN:-target/release/codeq}
work=$(mktemp -d)
data="$work/data"
trap 'kill "$server" 2>/dev/null && wait "$server" 2>/dev/null; rm -rf "$work"' EXIT

CODEQ_RETENTION_SECONDS=5 CODEQ_CLEANUP_INTERVAL_SECONDS=5 CODEQ_LOG_LEVEL=warn \
    "$bin" serve --port 0 --data-dir "$data" >"$work/serve.out" 2>"$work/serve.err" &
server=$!
for _ in $(seq 100); do
    grep -q listening "$work/serve.out" 2>/dev/null && break
    sleep 0.1
done

"$bin" bench --data-dir "$data" --duration "$duration" --producers 4 --workers 4 \
    --max-live 4 --payload-bytes 1024 >"$work/bench.out" 2>&1 &
bench=$!

printf '%6s %12s %14s %10s\n' seconds "disk MiB" "apparent MiB" "RSS MiB"
start=$(date +%s)
while kill -0 "$bench" 2>/dev/null; do
    elapsed=$(($(date +%s) - start))
    disk=$(du -s --block-size=1 "$data" | cut -f1)
    apparent=$(du -s --apparent-size --block-size=1 "$data" | cut -f1)
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$server/status")
    awk -v t="$elapsed" -v d="$disk" -v a="$apparent" -v r="$rss" \
        'BEGIN { printf "%6d %12.1f %14.1f %10.1f\n", t, d / 1048576, a / 1048576, r / 1024 }'
    sleep 10
done
wait "$bench" || true
grep -E 'cycles/s|errors' "$work/bench.out"
