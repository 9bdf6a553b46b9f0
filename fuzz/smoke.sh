#!/usr/bin/env bash
# CI smoke run of the fuzz targets (docs/fuzzing.md): builds every target
# with the nightly toolchain and cargo-fuzz, then runs each one on its seed
# corpus for a short while (FUZZ_SECONDS, default 20, at most 30), one process,
# and fails on any crash, panic, timeout or OOM. The corpus in the repo is
# not modified: new inputs go to a scratch copy.
#
#   ./fuzz/smoke.sh                 every target, 20 s each
#   FUZZ_SECONDS=5 ./fuzz/smoke.sh  shorter
#   ./fuzz/smoke.sh hpack_diff      one target
#
# Needs: rustup with a nightly toolchain. Without one this prints a loud
# warning naming what is skipped and exits 0 (stable builds never need
# nightly); with one, cargo-fuzz is installed if missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
FUZZ_DIR="$(pwd)"
SECONDS_EACH="${FUZZ_SECONDS:-20}"
if [ "$SECONDS_EACH" -gt 30 ]; then SECONDS_EACH=30; fi

ALL_TARGETS=(h2_frame hpack_diff h2_connection grpc_messages http1_decode peer_decode config_toml)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

banner() { printf '\n%s\n%s\n%s\n' "========================================================================" "$*" "========================================================================" >&2; }

if ! command -v rustup >/dev/null 2>&1 || ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    banner "WARNING: no nightly Rust toolchain: fuzz smoke SKIPPED for ${TARGETS[*]} (install one with: rustup toolchain install nightly)"
    exit 0
fi

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# The fuzz workspace's own target dir, whatever CARGO_TARGET_DIR says for
# the main workspace.
export CARGO_TARGET_DIR="$FUZZ_DIR/target"
# Optimized, with overflow checks and debug assertions (cargo-fuzz's default);
# no sanitizer (the fuzzed code has no unsafe; see docs/fuzzing.md).
BUILD=(cargo +nightly fuzz build -s none)
echo "==> ${BUILD[*]}"
"${BUILD[@]}"

SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
failed=()
for t in "${TARGETS[@]}"; do
    mkdir -p "$SCRATCH/$t" "$SCRATCH/artifacts/$t"
    dict=()
    case "$t" in
        h2_*|hpack_diff) dict=(-dict="$FUZZ_DIR/dict/h2.dict") ;;
        config_toml) dict=(-dict="$FUZZ_DIR/dict/config_toml.dict") ;;
    esac
    echo "==> $t: ${SECONDS_EACH}s on fuzz/corpus/$t"
    if cargo +nightly fuzz run -s none "$t" "$SCRATCH/$t" "$FUZZ_DIR/corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -max_len=16384 -print_final_stats=1 "${dict[@]}" \
        -artifact_prefix="$SCRATCH/artifacts/$t/" >"$SCRATCH/$t.log" 2>&1; then
        grep -E '^stat::number_of_executed_units' "$SCRATCH/$t.log" | sed "s/^/    $t /" || true
    else
        echo "FAILED: $t (last lines of its log; artifacts below)"
        tail -n 40 "$SCRATCH/$t.log"
        for a in "$SCRATCH/artifacts/$t"/*; do
            [ -e "$a" ] && { echo "--- $a:"; od -A x -t x1z "$a" | head -n 20; echo "base64 (whole input):"; base64 -w0 "$a"; echo; }
        done
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz smoke failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz smoke passed: ${TARGETS[*]}"
