#!/usr/bin/env bash
# Realtime benchmarks with the project's own load generator (bench/rtload.c):
#   1. idle WebSocket subscribers: the most one instance holds here, and the server's
#      resident memory per connection (RSS after minus RSS before, over N);
#   2. fan-out: records created at a constant rate, each delivered to every one of
#      SUBS subscribers; deliveries per second and publish-to-deliver p50/p99.
# Usage: bench/realtime.sh [IDLE_CONNECTIONS] [SUBSCRIBERS] [EVENTS] [RATE]
# BASALT_EXTRA: more flags for the server (e.g. --realtime-outbox=0 for the in-memory path).
# RTLOAD_WRITERS=W: the creates go open loop over W connections (bench/rtload.c); unset,
#   one at a time, each after the last was answered.
# STRACE=1: count the server's system calls during the fan-out (strace -c -f; it slows
#   the server, so rates and latencies of that run are not comparable, the counts are).
# PERF=FILE: profile the server during the fan-out (perf record -g, Debian's linux-perf)
#   and write where the time went (perf report, by shared object and symbol) to FILE.
# SKIP_IDLE=1: only the fan-out.
# THREADS=N, SERVER_CPUS=LIST, LOAD_CPUS=LIST: the server's worker threads (default 1) and
#   the cores the server and rtload are pinned to (defaults 0 and 1); e.g. THREADS=2
#   SERVER_CPUS=0,1 LOAD_CPUS=0,1 for one worker per core with rtload beside them.
# BASALT_DB=postgres://.../DB: PostgreSQL (a fresh database) instead of SQLite in the
#   temporary folder; with BASALT_DB_LISTEN the direct URL for NOTIFY behind PgBouncer.
# Loopback only; the processes it starts are stopped by PID at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${1:-100000}
SUBS=${2:-10000}
EVENTS=${3:-200}
RATE=${4:-50}
BUILD=${BUILD:-build-release}
THREADS=${THREADS:-1}
SERVER_CPUS=${SERVER_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
if [ ! -x "$BUILD/basalt" ] || [ ! -x "$BUILD/rtload" ]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBASALT_TESTS=OFF >/dev/null
  cmake --build "$BUILD" -j "$(nproc)" >/dev/null
fi
# 100,000 connections need more descriptors than the default hard limit (root may raise it).
ulimit -Hn 400000 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
DIR=$(mktemp -d)
PORT=${PORT:-18190}
SRV=""; LOAD=""; STRACE_PID=""
cleanup() {
  rc=$?
  # A run that stops early says why: the server's last words, and whether it still runs.
  if [ "$rc" != 0 ] && [ -n "$SRV" ]; then
    echo "realtime.sh: stopped early (exit $rc); server $(kill -0 "$SRV" 2>/dev/null && echo running || echo gone); its log:" >&2
    tail -20 "$DIR/server.log" >&2 2>/dev/null || true
  fi
  for p in $STRACE_PID $LOAD $SRV; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"
}
trap cleanup EXIT
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
DB_FLAGS=()
[ -n "${BASALT_DB:-}" ] && DB_FLAGS+=("--db=$BASALT_DB")
[ -n "${BASALT_DB_LISTEN:-}" ] && DB_FLAGS+=("--db-listen=$BASALT_DB_LISTEN")
"$BUILD/basalt" superuser upsert bench@example.com bench-password-1 --dir="$DIR" ${DB_FLAGS[@]+"${DB_FLAGS[@]}"} >/dev/null
taskset -c "$SERVER_CPUS" "$BUILD/basalt" serve --http=127.0.0.1:$PORT --dir="$DIR" --threads="$THREADS" --log-level=warn \
  --rate-limit-anon=0 --rate-limit-user=0 --rate-limit-burst=0 --rate-limit-auth=0 \
  --realtime-max-connections=$((IDLE + 10)) --max-connections=0 --max-connections-per-ip=0 \
  ${DB_FLAGS[@]+"${DB_FLAGS[@]}"} ${BASALT_EXTRA:-} \
  >"$DIR/server.log" 2>&1 &
SRV=$!
for _ in $(seq 100); do curl -sf 127.0.0.1:$PORT/api/health >/dev/null && break; sleep 0.1; done
TOKEN=$(curl -s -XPOST 127.0.0.1:$PORT/api/collections/_superusers/auth-with-password \
  -H 'content-type: application/json' -d '{"identity":"bench@example.com","password":"bench-password-1"}' |
  /usr/bin/python3 -c 'import sys,json;print(json.load(sys.stdin)["token"])')
curl -sf -XPOST 127.0.0.1:$PORT/api/collections -H "authorization: $TOKEN" -H 'content-type: application/json' \
  -d '{"name":"bench","type":"base","listRule":"","viewRule":"","fields":[{"name":"t","type":"number"}]}' >/dev/null

if [ -z "${SKIP_IDLE:-}" ]; then
echo "## idle WebSocket subscribers ($IDLE requested)"
R0=$(rss_kib $SRV)
taskset -c "$LOAD_CPUS" "$BUILD/rtload" idle $PORT "$IDLE" > "$DIR/idle.out" &
LOAD=$!
for _ in $(seq 1200); do grep -q connected "$DIR/idle.out" 2>/dev/null && break; sleep 0.5; done
cat "$DIR/idle.out"
sleep 2
R1=$(rss_kib $SRV)
HELD=$(curl -s 127.0.0.1:$PORT/metrics | grep -F 'basalt_realtime_connections{transport="websocket"}' | awk '{print $2}')
echo "server holds $HELD WebSocket connections; RSS before $R0 KiB, with them $R1 KiB: $(( (R1 - R0) * 1024 / (HELD > 0 ? HELD : 1) )) bytes per connection"
kill $LOAD; wait $LOAD 2>/dev/null || true; LOAD=""
sleep 2
fi

echo "## fan-out: $EVENTS events at $RATE/s to $SUBS subscribers"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
deliveries_metric() { curl -s 127.0.0.1:$PORT/metrics | awk '/^basalt_realtime_deliveries_total/ {print $2}'; }
# The subscribers connect first; the CPU time, deliveries and system calls are counted
# from the moment they are all up, so they are the fan-out's (and its writes') alone.
taskset -c "$LOAD_CPUS" "$BUILD/rtload" fanout $PORT "$SUBS" "$EVENTS" "$RATE" "$TOKEN" > "$DIR/fanout.out" &
LOAD=$!
for _ in $(seq 1200); do grep -q connected "$DIR/fanout.out" 2>/dev/null && break; sleep 0.05; done
C0=$(cpu_ticks $SRV)
D0=$(deliveries_metric)
STRACE_PID=""
if [ -n "${STRACE:-}" ]; then
  strace -c -f -p $SRV -o "$DIR/strace.out" 2>/dev/null &
  STRACE_PID=$!
elif [ -n "${PERF:-}" ]; then
  perf record -q -F 499 -g -p $SRV -o "$DIR/perf.data" >/dev/null 2>&1 &
  STRACE_PID=$!
fi
wait $LOAD || true
LOAD=""
C1=$(cpu_ticks $SRV)
D1=$(deliveries_metric)
cat "$DIR/fanout.out"
DEL=$(( ${D1%.*} - ${D0%.*} ))
if [ -n "$STRACE_PID" ] && [ -n "${PERF:-}" ] && [ -z "${STRACE:-}" ]; then
  kill -INT $STRACE_PID 2>/dev/null || true
  wait $STRACE_PID 2>/dev/null || true
  STRACE_PID=""
  perf report -i "$DIR/perf.data" --no-children --sort dso,sym -g none --percent-limit 0.4 --stdio 2>/dev/null | grep "%" | head -60 > "$PERF"
  perf report -i "$DIR/perf.data" --no-children --sort dso -g none --stdio 2>/dev/null | grep '%' | head -12 >> "$PERF"
  echo "profile written to $PERF"
elif [ -n "$STRACE_PID" ]; then
  kill -INT $STRACE_PID 2>/dev/null || true
  wait $STRACE_PID 2>/dev/null || true
  echo "server system calls during the fan-out (strace -c -f), $DEL deliveries:"
  awk -v d="$DEL" '$NF ~ /^(writev|sendmsg|write|epoll_wait|epoll_ctl|read|recvfrom|futex)$/ {
      printf "  %-12s %9d calls, %.3f per delivery\n", $NF, $4, $4 / (d > 0 ? d : 1) }' "$DIR/strace.out"
fi
HZ=$(getconf CLK_TCK)
echo "server CPU during the fan-out: $(( (C1 - C0) * 1000 / HZ )) ms for $DEL deliveries, \
$(( (C1 - C0) * 1000000 / HZ * 1000 / (DEL > 0 ? DEL : 1) )) ns per delivery (the writes and their events included)"
echo "server peak RSS $(hwm_kib $SRV) KiB"
