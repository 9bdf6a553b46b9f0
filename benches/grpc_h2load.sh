#!/usr/bin/env bash
# gRPC throughput/latency of shardcache beside tonic-ref, in one run, with
# the shared h2load toolkit (../shared/bench): server pinned to CPU 0 with
# one shard, h2load on CPU 1; 16x16 and 64x1, Get and Set, 64 B and 4 KiB.
#
#   benches/grpc_h2load.sh [DURATION_S]      (default 8)
#
# Writes target/bench/{shardcache,tonic-ref}.jsonl and prints the table with
# ops per server CPU-second. Runs the two servers alternately per scenario
# group so drift on a noisy machine hits both alike.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BENCH=../shared/bench
# From a git worktree outside the main checkout's folder: the toolkit beside
# the main checkout.
if [ ! -d "$BENCH" ]; then
  common="$(git rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)"
  [ -n "$common" ] && [ -d "$(dirname "$common")/../shared/bench" ] && BENCH="$(dirname "$common")/../shared/bench"
fi
DUR="${1:-8}"
[ -x "$BENCH/target/release/tonic-ref" ] || SKIP_APT="${SKIP_APT:-}" "$BENCH/setup.sh"
cargo build --release --bin shardcache
mkdir -p target/bench
rm -f target/bench/shardcache.jsonl target/bench/tonic-ref.jsonl
for s in get_64B_c16m16 set_64B_c16m16 get_64B_c64m1 set_64B_c64m1 get_4KiB_c16m16 get_4KiB_c64m1; do
  "$BENCH/run.sh" shardcache 'target/release/shardcache serve --listen 127.0.0.1:{port} --shards {shards} --memory {memory} --max-value {max_value}' \
      --duration "$DUR" --only "$s" --out target/bench/shardcache.jsonl
  "$BENCH/run.sh" tonic-ref "$BENCH/target/release/tonic-ref serve --listen 127.0.0.1:{port} --shards {shards} --memory {memory} --max-value {max_value}" \
      --duration "$DUR" --only "$s" --out target/bench/tonic-ref.jsonl
done
"$BENCH/table.py" target/bench/tonic-ref.jsonl target/bench/shardcache.jsonl
