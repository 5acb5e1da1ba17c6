#!/usr/bin/env bash
# The benchmark harness: `make bench` (full) or `bench/run.sh --quick` (about 2 min).
# Builds a release binary, starts Basalt and the bare libh2o handler (the ceiling of
# our HTTP stack) pinned to core 0, drives them from core 1 with wrk (closed loop),
# alternating systems and repeating each scenario, and writes
# bench/results/<date>/{report.md,results.csv,*.png}. Figures of different runs are
# never mixed in one ratio: every ratio in a report comes from that report's runs.
# Peers (nginx, Express/Fastify on PostgreSQL, Node ws, pgbench, redis-benchmark) are
# the next step of the benchmark issue.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
if [ "$QUICK" -eq 1 ]; then RECORDS=20000; DUR=4; REPEAT=1; else RECORDS=100000; DUR=12; REPEAT=3; fi
scripts/deps.sh bench
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DBASALT_TESTS=OFF >/dev/null
cmake --build build-release -j "$(nproc)" >/dev/null
BIN=build-release/basalt
OUT=bench/results/$(date -u +%Y-%m-%d-%H%M)
mkdir -p "$OUT"
DIR=$(mktemp -d)
PORT=18290
BARE=18291
SRV=""
BAREPID=""
cleanup() {
  [ -n "$SRV" ] && kill "$SRV" 2>/dev/null || true
  [ -n "$BAREPID" ] && kill "$BAREPID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
NOLIMITS="--rate-limit-anon=0 --rate-limit-user=0 --rate-limit-burst=0 --rate-limit-auth=0"
$BIN superuser upsert bench@example.com bench-password-1 --dir="$DIR" >/dev/null
# shellcheck disable=SC2086
taskset -c 0 $BIN serve --http=127.0.0.1:$PORT --dir="$DIR" --threads=1 --log-level=warn $NOLIMITS \
  --max-connections-per-ip=0 >/dev/null 2>&1 &
SRV=$!
taskset -c 0 build-release/h2o_bare $BARE 1 &
BAREPID=$!
sleep 0.5
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
IDLE_RSS=$(rss_kb "$SRV")
TOKEN=$(curl -s -XPOST 127.0.0.1:$PORT/api/collections/_superusers/auth-with-password \
  -H 'content-type: application/json' -d '{"identity":"bench@example.com","password":"bench-password-1"}' |
  /usr/bin/python3 -c 'import sys,json;print(json.load(sys.stdin)["token"])')
echo "seeding $RECORDS records..."
ID=$(/usr/bin/python3 bench/seed.py "http://127.0.0.1:$PORT" "$TOKEN" "$RECORDS" |
  /usr/bin/python3 -c 'import sys,json;print(json.load(sys.stdin)["id"])')
cat > "$DIR/create.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, nil, nil, '{"title":"c' .. i .. '","status":"todo","priority":3}')
end
LUA
cat > "$DIR/mixed.lua" <<'LUA'
-- 90% reads of one record, 10% durable creates
local id = os.getenv("ID")
local i = 0
request = function()
  i = i + 1
  if i % 10 == 0 then
    return wrk.format("POST", "/api/collections/bench/records", {["Content-Type"] = "application/json"},
      '{"title":"m' .. i .. '","status":"doing","priority":1}')
  end
  return wrk.format("GET", "/api/collections/bench/records/" .. id)
end
LUA
export ID
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)
LIST="/api/collections/bench/records?filter=status%3D%27doing%27%20%26%26%20priority%3E%3D5&sort=-priority&perPage=30"
echo "scenario,system,run,rps,p50_ms,p99_ms,cpu_us" > "$OUT/results.csv"
# run SCENARIO SYSTEM PID CONNECTIONS URL [LUA]
run() {
  local scen=$1 sys=$2 pid=$3 conns=$4 url=$5 lua=${6:-}
  local args=(-t1 -c"$conns" -d"${DUR}s" --latency)
  [ -n "$lua" ] && args+=(-s "$lua")
  local c0 out c1
  c0=$(cpu_ticks "$pid")
  out=$(taskset -c 1 wrk "${args[@]}" "$url")
  c1=$(cpu_ticks "$pid")
  local n rps p50 p99 us
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}')
  p99=$(echo "$out" | awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}')
  us=$(awk -v t="$((c1 - c0))" -v n="$n" -v hz="$TCK" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
  echo "$scen,$sys,$r,$rps,$p50,$p99,$us" >> "$OUT/results.csv"
  printf '  %-14s %-7s run %d: %10s req/s  p50 %7s ms  p99 %7s ms  %6s us CPU/req\n' "$scen" "$sys" "$r" "$rps" "$p50" "$p99" "$us"
}
for r in $(seq 1 "$REPEAT"); do
  # Systems alternate within each repetition.
  run health bare "$BAREPID" 64 "http://127.0.0.1:$BARE/"
  run health basalt "$SRV" 64 "http://127.0.0.1:$PORT/api/health"
  run view basalt "$SRV" 64 "http://127.0.0.1:$PORT/api/collections/bench/records/$ID"
  run list30 basalt "$SRV" 64 "http://127.0.0.1:$PORT$LIST"
  run list30_skip basalt "$SRV" 64 "http://127.0.0.1:$PORT$LIST&skipTotal=1"
  run create basalt "$SRV" 64 "http://127.0.0.1:$PORT/api/collections/bench/records" "$DIR/create.lua"
  run mixed_2000 basalt "$SRV" 2000 "http://127.0.0.1:$PORT" "$DIR/mixed.lua"
done
PEAK_RSS=$(hwm_kb "$SRV")
# The report: medians per scenario and system, ratios within this run only.
/usr/bin/python3 - "$OUT" "$IDLE_RSS" "$PEAK_RSS" "$RECORDS" "$DUR" "$REPEAT" <<'PY'
import csv, statistics, sys, datetime
out, idle, peak, records, dur, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
rows = list(csv.DictReader(open(f"{out}/results.csv")))
agg = {}
for r in rows:
    agg.setdefault((r["scenario"], r["system"]), []).append(r)
def med(lst, k):
    return statistics.median(float(x[k]) for x in lst)
order = ["health", "view", "list30", "list30_skip", "create", "mixed_2000"]
bare_cpu = med(agg[("health", "bare")], "cpu_us")
lines = [f"# Benchmark report {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC", "",
         f"`bench/run.sh` — {records} records, wrk -t1 closed loop for {dur} s, {repeat} run(s) each (medians), "
         "server pinned to core 0 with one worker thread, wrk on core 1; CPU per request from /proc. "
         "The cache is on (the default): repeated identical reads are served from it, writes invalidate it.", "",
         "| scenario | system | requests/s | p50 ms | p99 ms | CPU µs/req | CPU vs bare libh2o |", "|---|---|---|---|---|---|---|"]
with open(f"{out}/plot.dat", "w") as dat:
    for s in order:
        for sysname in ("bare", "basalt"):
            if (s, sysname) not in agg:
                continue
            g = agg[(s, sysname)]
            rps, p50, p99, cpu = med(g, "rps"), med(g, "p50_ms"), med(g, "p99_ms"), med(g, "cpu_us")
            lines.append(f"| {s} | {sysname} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {cpu:.1f} | {bare_cpu / cpu:.2f} |")
            dat.write(f'"{s} ({sysname})" {rps:.0f} {p99:.3f}\n')
lines += ["", f"Basalt resident memory: idle {idle / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB.", "",
          "![throughput](throughput.png)", "", "![p99 latency](p99.png)", ""]
open(f"{out}/report.md", "w").write("\n".join(lines))
print("\n".join(lines))
PY
for what in throughput p99; do
  col=2; label="requests/s"; [ "$what" = p99 ] && { col=3; label="p99 latency (ms)"; }
  gnuplot <<GP
set terminal pngcairo size 900,450 noenhanced
set output "$OUT/$what.png"
set style data histograms
set style fill solid 0.8
set boxwidth 0.8
set xtics rotate by -30
set ylabel "$label"
set grid ytics
unset key
plot "$OUT/plot.dat" using $col:xtic(1)
GP
done
echo "report: $OUT/report.md"
