#!/usr/bin/env bash
# Runs every test suite and ends with one line that counts the individual tests of all
# of them: "N passed, N failed".
#
# Set-up first (the release build, the suites' own PostgreSQL, PgBouncer and a streaming
# replica via scripts/pg-env.sh, the npm installs). Then every suite runs in one of a few
# lanes side by side (each server on its own free port and folder): the long integration
# suites start each lane, and a lane that finishes takes the next suite from one shared
# queue, longest first, so that no core waits while suites are left. Each suite's output
# is kept in its own log; when all are done, every log is printed whole, in a fixed
# order, with its time. A line per finished suite shows the progress meanwhile.
#
# CPU is the limit on 2 cores: PYTEST_JOBS=N (N > 1) runs each integration suite on N
# pytest-xdist workers (whole files per worker) so that one suite's waits overlap
# another's work; the default is 1 (one process per suite) until a full run on a quiet
# machine has shown the workers change no outcome.
#
# BASALT_TEST_CLUSTER=1 adds the whole integration suite and the JS SDK scenario on a
# 2-instance cluster (make integration-cluster, make js-cluster; issue 14) as one more lane.
set -uo pipefail
cd "$(dirname "$0")/.."
passed=0
failed=0
suites_failed=0
logs=$(mktemp -d)
pgdir=$(mktemp -d /tmp/basalt-pg.XXXXXX)
trap 'scripts/pg-env.sh stop "$pgdir" >/dev/null 2>&1; rm -rf "$logs"' EXIT
CLUSTER=${BASALT_TEST_CLUSTER:-0}
JOBS=${PYTEST_JOBS:-1}
M=(make --no-print-directory NOBUILD=1)
# Every pytest suite's log ends with its slowest tests: where the time goes.
export PYTEST_ADDOPTS="${PYTEST_ADDOPTS:-} --durations=25"

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

# run ID KIND NAME CMD...: runs one suite into $logs/ID.{log,rc,name,kind,secs,cpu}.
run() {
  local id=$1 kind=$2 name=$3; shift 3
  echo "$name" >"$logs/$id.name"
  echo "$kind" >"$logs/$id.kind"
  local t0=$SECONDS
  # /usr/bin/time: the CPU seconds of the suite and of every process it waited for.
  /usr/bin/time -f "%U %S" -o "$logs/$id.cpu" "$@" >"$logs/$id.log" 2>&1
  local rc=$?
  echo $rc >"$logs/$id.rc"
  echo $((SECONDS - t0)) >"$logs/$id.secs"
  echo "--- $(date -u +%T) $name: $([ $rc -eq 0 ] && echo ok || echo FAILED), $((SECONDS - t0)) s"
}

# report ID...: prints each suite's log and adds it to the totals, in the order given.
report() {
  local id rc pf cpu
  for id in "$@"; do
    [ -f "$logs/$id.rc" ] || continue
    rc=$(cat "$logs/$id.rc")
    cpu=$(tail -1 "$logs/$id.cpu" 2>/dev/null | awk '{printf "%.0f", $1 + $2}')
    echo "=== $(cat "$logs/$id.name")"
    cat "$logs/$id.log"
    pf=$(count "$(cat "$logs/$id.kind")" "$logs/$id.log" "$rc")
    passed=$((passed + ${pf% *}))
    failed=$((failed + ${pf#* }))
    if [ "$rc" -eq 0 ]; then
      echo "=== $(cat "$logs/$id.name"): ok (${pf% *} passed, $(cat "$logs/$id.secs") s, ${cpu:-?} s CPU)"
    else
      suites_failed=$((suites_failed + 1))
      echo "=== $(cat "$logs/$id.name"): FAILED ($(cat "$logs/$id.secs") s, ${cpu:-?} s CPU)"
    fi
  done
}

# ---- the suites: job_ID runs suite ID ----
# The unit suites share the tests' basalt_test database and stop and start its replica:
# never two at once (the lock), beside anything else.
job_build_asan() { run build_asan single "build with ASan+UBSan" make --no-print-directory build-asan; }
job_unit() { run unit ctest "unit tests" flock -o "$logs/unit.lock" "${M[@]}" unit; }
job_unit_asan() { run unit_asan ctest "unit tests under ASan+UBSan" flock -o "$logs/unit.lock" "${M[@]}" unit-asan; }
job_integration() { run integration pytest "integration tests (pytest, real binary)" "${M[@]}" PYTEST_JOBS="$JOBS" integration; }
job_integration_asan() { run integration_asan pytest "integration tests, binary under ASan+UBSan" "${M[@]}" PYTEST_JOBS="$JOBS" integration-asan; }
job_integration_pg() { run integration_pg pytest "integration tests on PostgreSQL through PgBouncer" "${M[@]}" PYTEST_JOBS="$JOBS" integration-pg; }
job_integration_cluster() { run integration_cluster pytest "integration tests on a 2-instance cluster (PostgreSQL, Redis, HAProxy)" "${M[@]}" PYTEST_JOBS="$JOBS" integration-cluster; }
job_js_cluster() { run js_cluster plain "JS SDK scenario on a 2-instance cluster" "${M[@]}" js-cluster; }
job_crash() { run crash plain "crash durability, 5 SIGKILLs under writers" "${M[@]}" crash KILLS=5; }
job_crash_pg() { run crash_pg plain "crash durability on PostgreSQL, 5 SIGKILLs of Basalt under writers" "${M[@]}" crash-pg KILLS=5; }
job_fuzz() { run fuzz plain "fuzz drivers, smoke run over the corpora" make --no-print-directory fuzz-smoke; }
job_js() { run js plain "JS SDK scenario (pocketbase 0.28.1)" "${M[@]}" js; }
job_js_pg() { run js_pg plain "JS SDK scenario on PostgreSQL through PgBouncer" "${M[@]}" js-pg; }
job_cluster_files() { run cluster_files pytest "files and jobs on a local cluster (2 instances, S3): served across, each job once, a killed instance's job retried" "${M[@]}" cluster-files; }
job_js_backups() { run js_backups plain "JS SDK: pb.backups" "${M[@]}" js-backups; }
job_js_instances() { run js_instances plain "JS SDK across two instances (stream and subscription on different ones)" "${M[@]}" js-instances; }
job_js_files() { run js_files plain "JS SDK: file fields (FormData, Blob, thumbnails, file tokens)" "${M[@]}" js-files; }
job_js_jobs() { run js_jobs plain "JS SDK: mail flows, crons, settings (SMTP server of the test's own)" "${M[@]}" js-jobs; }
job_js_jobs_pg() { run js_jobs_pg plain "JS SDK: mail flows, crons, settings on PostgreSQL" "${M[@]}" js-jobs-pg; }
job_chaos() { run chaos pytest "chaos, short: a local cluster (Patroni, PgBouncer, Redis, HAProxy, 2 instances) losing its parts" "${M[@]}" chaos-smoke; }
# The browser suites drive one Chromium each and wait on realtime: one at a time.
job_browser() { run browser plain "browser tests (Chromium): dashboard and task manager" flock -o "$logs/browser.lock" "${M[@]}" browser; }
job_browser_pg() { run browser_pg plain "browser tests on PostgreSQL through PgBouncer" flock -o "$logs/browser.lock" "${M[@]}" browser-pg; }
job_bench() { run bench plain "benchmark harness smoke (Basalt and every peer, every scenario)" "${M[@]}" bench-smoke-harness; }
job_bench_shop() { run bench_shop plain "the shop's generator and peak-hour scenario, smoke (both backends)" "${M[@]}" bench-smoke-shop; }
job_format() { run format single "formatting (.clang-format)" make --no-print-directory format-check; }
job_services() { run services plain "no system service left enabled or listening by the packages installed" scripts/deps.sh check-services; }
job_config() { run config single "docs/configuration.md is current" bash -c 'diff -u docs/configuration.md <(./build/basalt config-doc)'; }
job_dialect() { run dialect plain "backend-specific SQL only in store/ and the dialect table" scripts/check-dialect.sh; }

# The shared queue: one suite id a line; pop prints the next one (none: fails).
queue=$logs/queue
pop() {
  (
    flock 9
    local n id
    n=$(cat "$queue.next" 2>/dev/null || echo 0)
    id=$(sed -n "$((n + 1))p" "$queue")
    [ -n "$id" ] || exit 1
    echo $((n + 1)) >"$queue.next"
    echo "$id"
  ) 9>"$queue.lock"
}
# lane ID...: runs the given suites in order, then takes suites from the queue until
# it is empty.
lane() {
  local id
  for id in "$@"; do "job_$id"; done
  while id=$(pop); do "job_$id"; done
}

# ---- set-up ----
run build single "build (-Wall -Wextra -Werror)" make --no-print-directory build
run js_deps single "the JS SDK from npm" make --no-print-directory js-deps
run s3_deps single "the tests' S3-compatible server from npm" make --no-print-directory s3-deps
report build js_deps s3_deps
if pgvars=$(scripts/pg-env.sh start "$pgdir" 2>&1) && replica=$(scripts/pg-env.sh replica-up "$pgdir" 2>&1); then
  eval "$pgvars"
  eval "$replica"
  echo "=== PostgreSQL $BASALT_TEST_PG_URL, PgBouncer $BASALT_TEST_PGB_URL, replica $BASALT_TEST_PG_REPLICA_URL"
else
  echo "=== PostgreSQL for the tests could not be started: $pgvars ${replica:-} (logs in $pgdir)"
fi

# ---- the lanes ----
# The queue, longest first (measured seconds in a comment); the browser and benchmark
# smokes last, when fewer suites are left beside them.
cat >"$queue" <<EOF
fuzz
chaos
cluster_files
$([ "$CLUSTER" = 1 ] && echo js_cluster)
crash
crash_pg
js_instances
js_pg
js
js_files
js_jobs_pg
js_jobs
js_backups
format
services
config
dialect
browser
browser_pg
bench
bench_shop
EOF
sed -i '/^$/d' "$queue"
# The ASan lane builds first (the other suites need only the release build).
lane build_asan unit_asan integration_asan &
lane integration_pg &
lane unit integration &
lane &
[ "$CLUSTER" = 1 ] && lane integration_cluster &
wait

report build_asan unit unit_asan integration integration_asan integration_pg integration_cluster \
  crash crash_pg fuzz js js_pg cluster_files js_backups js_instances js_files js_jobs js_jobs_pg js_cluster chaos \
  browser browser_pg bench bench_shop format services config dialect

echo
echo "$passed passed, $failed failed"
[ "$suites_failed" -eq 0 ] && [ "$failed" -eq 0 ]
