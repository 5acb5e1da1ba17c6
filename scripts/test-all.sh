#!/usr/bin/env bash
# Runs every test suite and ends with one line that counts the individual tests of all
# of them: "N passed, N failed".
#
# Set-up first (build, both sanitizer builds, the suites' own PostgreSQL, PgBouncer and
# a streaming replica via scripts/pg-env.sh); then the suites, in groups that run side by
# side where they are independent (each server on its own free port and folder), each
# suite's output kept in its own log and printed whole, in order, when its group ends.
set -uo pipefail
cd "$(dirname "$0")/.."
passed=0
failed=0
suites_failed=0
logs=$(mktemp -d)
pgdir=$(mktemp -d /tmp/basalt-pg.XXXXXX)
trap 'scripts/pg-env.sh stop "$pgdir" >/dev/null 2>&1; rm -rf "$logs"' EXIT

# count KIND LOG RC: prints "P F" for a suite's log.
count() {
  local kind=$1 log=$2 rc=$3 p=0 f=0 line
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
  echo "$p $f"
}

# run ID KIND NAME CMD...: runs one suite into $logs/ID.{log,rc,name,kind}.
run() {
  local id=$1 kind=$2 name=$3; shift 3
  echo "$name" >"$logs/$id.name"
  echo "$kind" >"$logs/$id.kind"
  local t0=$SECONDS
  "$@" >"$logs/$id.log" 2>&1
  echo $? >"$logs/$id.rc"
  echo $((SECONDS - t0)) >"$logs/$id.secs"
}

# report ID...: prints each suite's log and adds it to the totals, in the order given.
report() {
  local id rc pf
  for id in "$@"; do
    rc=$(cat "$logs/$id.rc")
    echo "=== $(cat "$logs/$id.name")"
    cat "$logs/$id.log"
    pf=$(count "$(cat "$logs/$id.kind")" "$logs/$id.log" "$rc")
    passed=$((passed + ${pf% *}))
    failed=$((failed + ${pf#* }))
    if [ "$rc" -eq 0 ]; then
      echo "=== $(cat "$logs/$id.name"): ok (${pf% *} passed, $(cat "$logs/$id.secs") s)"
    else
      suites_failed=$((suites_failed + 1))
      echo "=== $(cat "$logs/$id.name"): FAILED ($(cat "$logs/$id.secs") s)"
    fi
  done
}

# Set-up: the builds (one after the other: they share the two cores) and the databases.
run build single "build (-Wall -Wextra -Werror)" make --no-print-directory build
run build_asan single "build with ASan+UBSan" make --no-print-directory build-asan
run js_deps single "the JS SDK from npm" make --no-print-directory js-deps
run s3_deps single "the tests' S3-compatible server from npm" make --no-print-directory s3-deps
report build build_asan js_deps s3_deps
if pgvars=$(scripts/pg-env.sh start "$pgdir" 2>&1) && replica=$(scripts/pg-env.sh replica-up "$pgdir" 2>&1); then
  eval "$pgvars"
  eval "$replica"
  echo "=== PostgreSQL $BASALT_TEST_PG_URL, PgBouncer $BASALT_TEST_PGB_URL, replica $BASALT_TEST_PG_REPLICA_URL"
else
  echo "=== PostgreSQL for the tests could not be started: $pgvars ${replica:-} (logs in $pgdir)"
fi

# Group 1: the unit tests (short), then the three long HTTP suites side by side.
run unit ctest "unit tests" make --no-print-directory NOBUILD=1 unit
run unit_asan ctest "unit tests under ASan+UBSan" make --no-print-directory NOBUILD=1 unit-asan
report unit unit_asan
run integration pytest "integration tests (pytest, real binary)" make --no-print-directory NOBUILD=1 integration &
run integration_asan pytest "integration tests, binary under ASan+UBSan" make --no-print-directory NOBUILD=1 integration-asan &
run integration_pg pytest "integration tests on PostgreSQL through PgBouncer" make --no-print-directory NOBUILD=1 integration-pg &
wait
report integration integration_asan integration_pg

# Group 2: the shorter suites side by side.
run crash plain "crash durability, 5 SIGKILLs under writers" make --no-print-directory NOBUILD=1 crash KILLS=5 &
run crash_pg plain "crash durability on PostgreSQL, 5 SIGKILLs of Basalt under writers" make --no-print-directory NOBUILD=1 crash-pg KILLS=5 &
run fuzz plain "fuzz drivers, smoke run over the corpora" make --no-print-directory fuzz-smoke &
run js plain "JS SDK scenario (pocketbase 0.28.1)" make --no-print-directory NOBUILD=1 js &
run js_pg plain "JS SDK scenario on PostgreSQL through PgBouncer" make --no-print-directory NOBUILD=1 js-pg &
run cluster_files pytest "files and jobs on a local cluster (2 instances, S3): served across, each job once, a killed instance's job retried" make --no-print-directory NOBUILD=1 cluster-files &
wait
report crash crash_pg fuzz js js_pg cluster_files

# Group 2b: the SDK scenarios of the later capabilities and the short chaos suite, side
# by side; then the browser suites.
run js_backups plain "JS SDK: pb.backups" make --no-print-directory NOBUILD=1 js-backups &
run js_instances plain "JS SDK across two instances (stream and subscription on different ones)" make --no-print-directory NOBUILD=1 js-instances &
run js_files plain "JS SDK: file fields (FormData, Blob, thumbnails, file tokens)" make --no-print-directory NOBUILD=1 js-files &
run js_jobs plain "JS SDK: mail flows, crons, settings (SMTP server of the test's own)" make --no-print-directory NOBUILD=1 js-jobs &
run js_jobs_pg plain "JS SDK: mail flows, crons, settings on PostgreSQL" make --no-print-directory NOBUILD=1 js-jobs-pg &
run chaos pytest "chaos, short: a local cluster (Patroni, PgBouncer, Redis, HAProxy, 2 instances) losing its parts" make --no-print-directory NOBUILD=1 chaos-smoke &
wait
report js_backups js_instances js_files js_jobs js_jobs_pg chaos
# The browser suites drive Chromium and wait on realtime: one at a time, alone.
run browser plain "browser tests (Chromium): dashboard and task manager" make --no-print-directory NOBUILD=1 browser
run browser_pg plain "browser tests on PostgreSQL through PgBouncer" make --no-print-directory NOBUILD=1 browser-pg
report browser browser_pg

# Group 3: the benchmark smoke pins servers and load to the cores: alone.
run bench plain "benchmark harness smoke (Basalt and every peer, every scenario)" make --no-print-directory NOBUILD=1 bench-smoke-harness
run bench_shop plain "the shop's generator and peak-hour scenario, smoke (both backends)" make --no-print-directory NOBUILD=1 bench-smoke-shop
run format single "formatting (.clang-format)" make --no-print-directory format-check
run services plain "no system service left enabled or listening by the packages installed" scripts/deps.sh check-services
run config single "docs/configuration.md is current" bash -c 'diff -u docs/configuration.md <(./build/basalt config-doc)'
run dialect plain "backend-specific SQL only in store/ and the dialect table" scripts/check-dialect.sh
report bench bench_shop format services config dialect

echo
echo "$passed passed, $failed failed"
[ "$suites_failed" -eq 0 ] && [ "$failed" -eq 0 ]
