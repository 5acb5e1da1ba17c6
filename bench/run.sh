#!/usr/bin/env bash
# The benchmark harness: `make bench` (full, about 30 minutes) or `bench/run.sh --quick`
# (about 2 minutes). Installs what it needs (Debian packages, the Node peers from npm),
# builds in release mode and runs bench/harness.py, which starts Basalt and every peer on
# loopback, runs the scenarios alternating the systems, and writes
# bench/results/<date>/{report.md,results.csv,*.png,raw/}.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh bench # Debian packages and the Node peers
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DBASALT_TESTS=OFF >/dev/null
cmake --build build-release -j "$(nproc)" >/dev/null
exec /usr/bin/python3 bench/harness.py "$@"
