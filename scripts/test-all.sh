#!/usr/bin/env bash
# Runs every test suite (unit, unit under ASan+UBSan, integration over HTTP, the
# official JS SDK) and ends with one summary line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
passed=0
failed=0
suite() {
  local name=$1; shift
  echo "=== $name"
  if "$@"; then passed=$((passed+1)); echo "=== $name: ok"; else failed=$((failed+1)); echo "=== $name: FAILED"; fi
}
suite "build (-Werror)" make --no-print-directory build
suite "unit tests" make --no-print-directory unit
suite "unit tests (ASan+UBSan)" make --no-print-directory unit-asan
suite "integration tests" make --no-print-directory integration
suite "JS SDK scenario" make --no-print-directory js
suite "configuration reference is current" bash -c 'diff -u docs/configuration.md <(./build/basalt config-doc)'
echo
echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
