#!/usr/bin/env bash
# Runs every test suite (unit, unit under ASan+UBSan, integration over HTTP, the
# official JS SDK, the benchmark harness on tiny data, the configuration reference check) and ends with one line that
# counts the individual tests of all of them: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
passed=0
failed=0
suites_failed=0
log=$(mktemp)
# The suites' own PostgreSQL and PgBouncer (scripts/pg-env.sh), on free ports of
# 127.0.0.1 under a temporary folder, stopped at the end.
pgdir=$(mktemp -d /tmp/basalt-pg.XXXXXX)
trap 'scripts/pg-env.sh stop "$pgdir" >/dev/null 2>&1; rm -f "$log"' EXIT
if pgvars=$(scripts/pg-env.sh start "$pgdir"); then
  eval "$pgvars"
else
  echo "=== PostgreSQL for the tests could not be started (see $pgdir/*.log)"
fi

# count PASSED FAILED: adds to the totals.
count() { passed=$((passed + $1)); failed=$((failed + $2)); }

suite() {
  local name=$1 kind=$2; shift 2
  echo "=== $name"
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]} p=0 f=0 line
  case $kind in
    ctest)
      line=$(grep -E "tests passed, [0-9]+ tests failed out of" "$log" | tail -1)
      if [ -n "$line" ]; then
        f=$(echo "$line" | sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\1/')
        p=$(( $(echo "$line" | sed -E 's/.*out of ([0-9]+).*/\1/') - f ))
      fi ;;
    pytest)
      line=$(grep -E "[0-9]+ (passed|failed)" "$log" | tail -1)
      p=$(echo "$line" | grep -oE "[0-9]+ passed" | grep -oE "[0-9]+" || echo 0)
      f=$(echo "$line" | grep -oE "[0-9]+ (failed|errors?)" | awk '{s += $1} END {print s + 0}') ;;
    plain)
      line=$(grep -E "^[0-9]+ passed, [0-9]+ failed" "$log" | tail -1)
      p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
      f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/') ;;
    single)
      if [ "$rc" -eq 0 ]; then p=1; else f=1; fi ;;
  esac
  [ -z "$p" ] && p=0
  [ -z "$f" ] && f=0
  # A suite that failed without reporting a failing test still counts as one failure.
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  count "$p" "$f"
  if [ "$rc" -eq 0 ]; then echo "=== $name: ok ($p passed)"; else suites_failed=$((suites_failed+1)); echo "=== $name: FAILED"; fi
}

suite "build (-Wall -Wextra -Werror)" single make --no-print-directory build
suite "unit tests" ctest make --no-print-directory unit
suite "unit tests under ASan+UBSan" ctest make --no-print-directory unit-asan
suite "integration tests (pytest, real binary)" pytest make --no-print-directory integration
suite "integration tests, binary under ASan+UBSan" pytest make --no-print-directory integration-asan
suite "integration tests on PostgreSQL through PgBouncer" pytest make --no-print-directory integration-pg
suite "crash durability, 5 SIGKILLs under writers" plain make --no-print-directory crash KILLS=5
suite "crash durability on PostgreSQL, 5 SIGKILLs of Basalt under writers" plain make --no-print-directory crash-pg KILLS=5
suite "fuzz drivers, smoke run over the corpora" plain make --no-print-directory fuzz-smoke
suite "JS SDK scenario (pocketbase 0.28.1)" plain make --no-print-directory js
suite "JS SDK scenario on PostgreSQL through PgBouncer" plain make --no-print-directory js-pg
suite "benchmark harness smoke (Basalt and every peer, every scenario)" plain make --no-print-directory bench-smoke
suite "formatting (.clang-format)" single make --no-print-directory format-check
suite "no system service left enabled or listening by the packages installed" plain scripts/deps.sh check-services
suite "docs/configuration.md is current" single bash -c 'diff -u docs/configuration.md <(./build/basalt config-doc)'
echo
echo "$passed passed, $failed failed"
[ "$suites_failed" -eq 0 ] && [ "$failed" -eq 0 ]
