#!/usr/bin/env bash
# A quick measurement of Basalt's main read paths beside the bare libh2o ceiling,
# with wrk (closed loop). The server is pinned to core 0 and wrk to core 1.
# Usage: bench/quick.sh [records] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
DUR=${2:-10}
BIN=./build/basalt
DIR=$(mktemp -d)
PORT=18090
BARE=18091
cleanup() { kill "$SRV" "$BAREPID" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
$BIN superuser upsert bench@example.com bench-password-1 --dir="$DIR" >/dev/null
taskset -c 0 $BIN serve --http=127.0.0.1:$PORT --dir="$DIR" --threads=1 --log-level=warn --rate-limit-anon=0 --rate-limit-user=0 --rate-limit-burst=0 --rate-limit-auth=0 >/dev/null 2>&1 &
SRV=$!
taskset -c 0 ./build/h2o_bare $BARE 1 &
BAREPID=$!
sleep 0.5
TOKEN=$(curl -s -XPOST 127.0.0.1:$PORT/api/collections/_superusers/auth-with-password \
  -H 'content-type: application/json' -d '{"identity":"bench@example.com","password":"bench-password-1"}' |
  /usr/bin/python3 -c 'import sys,json;print(json.load(sys.stdin)["token"])')
t0=$(date +%s.%N)
ID=$(/usr/bin/python3 bench/seed.py http://127.0.0.1:$PORT "$TOKEN" "$N" | /usr/bin/python3 -c 'import sys,json;print(json.load(sys.stdin)["id"])')
t1=$(date +%s.%N)
echo "seeded $N records over HTTP in $(echo "$t1 - $t0" | bc) s"
# CPU time (user+system, in clock ticks) the process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)
# run NAME URL [PID]: closed-loop throughput, p99, and the server's CPU time per
# request (robust when the machine, not the server, limits the throughput).
run() {
  local name=$1 url=$2 pid=${3:-$SRV}
  local out c0 c1
  c0=$(cpu_ticks "$pid")
  out=$(taskset -c 1 wrk -t1 -c64 -d"${DUR}s" --latency "$url")
  c1=$(cpu_ticks "$pid")
  local rps p99 n us
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  us=$(awk -v t="$((c1 - c0))" -v n="$n" -v hz="$TCK" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
  printf '| %-40s | %10s | %8s | %6s |\n' "$name" "$rps" "$p99" "$us"
}
echo "| scenario | requests/s | p99 | server CPU us/request |"
echo "|---|---|---|---|"
run "bare libh2o, fixed JSON" "http://127.0.0.1:$BARE/" "$BAREPID"
run "GET /api/health" "http://127.0.0.1:$PORT/api/health"
run "record view by id" "http://127.0.0.1:$PORT/api/collections/bench/records/$ID"
run "filtered, sorted list of 30" "http://127.0.0.1:$PORT/api/collections/bench/records?filter=status%3D%27doing%27%20%26%26%20priority%3E%3D5&sort=-priority&perPage=30"
run "same list, skipTotal" "http://127.0.0.1:$PORT/api/collections/bench/records?filter=status%3D%27doing%27%20%26%26%20priority%3E%3D5&sort=-priority&perPage=30&skipTotal=1"
