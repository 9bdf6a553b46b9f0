#!/usr/bin/env bash
# The benchmark report of docs/benchmarks.md, regenerated in one run on one
# machine: shardcache vs tonic-ref driven by the same load generator
# (shardcache-loadtest), closed and open loop; Redis (redis-benchmark) and
# memcached (mcload) for context; instructions per request (callgrind, or
# perf where the PMU is available); resident bytes per item with 1M items.
# Servers run pinned to CPU 0, load generators to CPU 1.
#
#   benches/compare.sh            full run (~30 min), updates docs/benchmarks.md
#                                 and docs/img/compare-latency.png
#   benches/compare.sh --quick    smoke run (~1 min), touches nothing in docs/
#   benches/compare.sh --only closed,open --reps 5 --duration 8 --no-docs
#
# Results: target/compare/{results.jsonl,report.md,latency.dat,latency.png}
# (--quick: target/compare/quick/); a full run also refreshes
# docs/data/compare-results.jsonl.
# See benches/compare.py --help for every option.
#
# Needs: taskset, python3, gnuplot, redis-server, redis-cli, redis-benchmark,
# memcached, valgrind (or a working `perf stat -e instructions`), and the
# shared toolkit's tonic-ref and mcload (../shared/bench/setup.sh builds them;
# TONIC_REF=... and MCLOAD=... point elsewhere). Missing Debian packages are
# installed with `apt-get install -y` when running as root; otherwise the
# script stops and names them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { echo "compare.sh: $*" >&2; exit 1; }

[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (server on CPU 0, load on CPU 1); this machine has $(nproc)"

# command -> Debian package
declare -A PKG=(
  [taskset]=util-linux [python3]=python3 [gnuplot]=gnuplot-nox
  [redis-server]=redis-server [redis-cli]=redis-tools [redis-benchmark]=redis-tools
  [memcached]=memcached [valgrind]=valgrind [git]=git [h2load]=nghttp2-client
)
missing=()
for cmd in "${!PKG[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG[$cmd]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" -ne 0 ]; then
    die "missing Debian packages: ${missing[*]} (install them: sudo apt-get install -y ${missing[*]})"
  fi
  command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get to install them"
  echo "compare.sh: installing ${missing[*]}" >&2
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2; then
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 \
      || die "apt-get install ${missing[*]} failed"
  fi
fi

# The shared toolkit sits beside the checkout (../shared/bench); from a git
# worktree elsewhere, beside the main checkout.
SHARED="${COMPARE_SHARED_BENCH:-../shared/bench}"
if [ ! -d "$SHARED" ] && [ -z "${COMPARE_SHARED_BENCH:-}" ]; then
  common="$(git rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)"
  [ -n "$common" ] && [ -d "$(dirname "$common")/../shared/bench" ] && SHARED="$(dirname "$common")/../shared/bench"
fi
TONIC_REF="${TONIC_REF:-$SHARED/target/release/tonic-ref}"
MCLOAD="${MCLOAD:-$SHARED/target/release/mcload}"
[ -x "$TONIC_REF" ] || die "no tonic-ref at $TONIC_REF: run $SHARED/setup.sh (or SKIP_APT=1 $SHARED/setup.sh), or set TONIC_REF"
[ -x "$MCLOAD" ] || die "no mcload at $MCLOAD: run $SHARED/setup.sh, or set MCLOAD"
export TONIC_REF MCLOAD COMPARE_SHARED_BENCH="$SHARED"

cargo build --release -p shardcache-loadtest --bin shardcache-loadtest
cargo build --release --bin shardcache

exec python3 benches/compare.py "$@"
