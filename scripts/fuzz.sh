#!/usr/bin/env bash
# Builds the libFuzzer drivers (clang, ASan+UBSan) and runs each one.
#   scripts/fuzz.sh [SECONDS]      run each driver for SECONDS (default 60), keeping
#                                  new interesting inputs in build-fuzz/corpus/
#   scripts/fuzz.sh --smoke        run each over its committed corpus plus 1 second
#                                  of new inputs (what `make test` does: the corpus is
#                                  the regression check, `scripts/fuzz.sh` the search)
# Prints one line per driver: executions, seconds, and whether it crashed.
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
SECS=${1:-60}
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; SECS=${FUZZ_SMOKE_SECS:-1}; fi
CC=clang cmake -S . -B build-fuzz -DBASALT_FUZZ=ON -DBASALT_TESTS=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null || exit 1
cmake --build build-fuzz -j "$(nproc)" >/dev/null || exit 1
passed=0
failed=0
for drv in filter body token config paths record wsframe http rtsub cursor viewquery search migration redisurl static walseg upload fileinfo cron mailtpl; do
  seeds=tests/fuzz/corpus/$drv
  if [ "$SMOKE" -eq 1 ]; then work=$(mktemp -d); else work=build-fuzz/corpus/$drv; mkdir -p "$work"; fi
  args=(-max_total_time="$SECS" -close_fd_mask=2 -artifact_prefix=build-fuzz/crash-"$drv"-)
  [ -f tests/fuzz/$drv.dict ] && args+=(-dict=tests/fuzz/$drv.dict)
  out=$(./build-fuzz/fuzz_$drv "${args[@]}" "$work" "$seeds" 2>&1)
  rc=$?
  runs=$(echo "$out" | awk '/^Done/ {print $2}')
  if [ "$rc" -eq 0 ]; then
    passed=$((passed+1)); echo "fuzz_$drv: ok, ${runs:-0} executions in ${SECS}s"
  else
    failed=$((failed+1)); echo "fuzz_$drv: FAILED (exit $rc)"; echo "$out" | grep -E "ERROR|SUMMARY|==[0-9]+==|artifact" | head -20
  fi
  [ "$SMOKE" -eq 1 ] && rm -rf "$work"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
