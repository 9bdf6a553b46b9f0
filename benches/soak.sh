#!/usr/bin/env bash
# Soak test (docs/benchmarks.md "Soak"): builds the release binaries, makes
# sure a Python with grpcio is at hand (the test suite's venv, created the
# same way when missing) and gnuplot for --plot, then runs benches/soak.py
# with the given flags (default: 30 minutes).
#
#   benches/soak.sh
#   benches/soak.sh --minutes 30 --json target/soak.jsonl --plot docs/img/soak.png
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ulimit -l unlimited 2>/dev/null || ulimit -S -l "$(ulimit -H -l)" 2>/dev/null || true

cargo build --release --workspace --bins --locked

VENV=target/test-venv
if ! "$VENV/bin/python3" -c 'import grpc' 2>/dev/null; then
    PY=python3
    [ -x /usr/bin/python3 ] && PY=/usr/bin/python3
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python3" -m pip install --disable-pip-version-check -q grpcio grpcio-tools protobuf
fi
if [[ " $* " == *" --plot "* ]] && ! command -v gnuplot >/dev/null; then
    apt-get install -y -q gnuplot-nox >/dev/null
fi
exec "$VENV/bin/python3" benches/soak.py "$@"
