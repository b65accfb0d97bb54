# Sourced by the benchmark scripts in tools/ (not run on its own): finds
# what they all need, or exits saying how to get it.
#
#   . "$(dirname "$0")/bench_setup.sh" [PATH_TO_CODEQ_BINARY]
#
# Sets bin (the codeq binary, absolute), bench_dir (the shared bench:
# BENCH_DIR, default /work/shared/bench) and exports NODE_PATH (BullMQ and
# ioredis under BULLMQ_DIR, default /tmp/codeq-bench-bullmq).
bin=$(realpath "${1:-target/release/codeq}")
[ -x "$bin" ] || { echo "no codeq binary at $bin (cargo build --release -p codeq)"; exit 1; }
bench_dir=${BENCH_DIR:-/work/shared/bench}
export NODE_PATH=${BULLMQ_DIR:-/tmp/codeq-bench-bullmq}/node_modules
[ -d "$NODE_PATH/bullmq" ] || { echo "no bullmq under $NODE_PATH (npm install bullmq ioredis)"; exit 1; }
