#!/usr/bin/env bash
# A restore drill for PostgreSQL with pgBackRest, on a PostgreSQL of its own under a
# temporary folder on loopback (never the production one): it uses the options of
# deploy/pgbackrest/pgbackrest.conf with the paths moved into the folder, then
#   1. starts PostgreSQL with WAL archiving to the repository, creates the stanza,
#      takes a full base backup;
#   2. writes rows in two batches, A and B, noting the time between them;
#   3. restores the backup plus the archived WAL to that time (PITR) into a new data
#      folder, starts it and checks that exactly the rows of A are there;
#   4. restores "latest" and checks that A and B are there.
# Prints one line per check and "N passed, N failed" last; exit status 0 when all
# passed. With --metrics-file F, a success writes basalt_backup_last_verified_timestamp_seconds
# (and the drill's duration) to F for node_exporter's textfile collector.
# Usage: deploy/pgbackrest/drill.sh [--keep] [--metrics-file F] [--rows N]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
metrics="" keep=0 rows=500
while [ $# -gt 0 ]; do
  case $1 in
  --metrics-file) metrics=$2; shift 2 ;;
  --keep) keep=1; shift ;;
  --rows) rows=$2; shift 2 ;;
  *) echo "drill.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
for p in pgbackrest postgresql-15; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    { echo "drill.sh: the Debian package $p is missing: sudo apt-get install $p" >&2; exit 1; }
done
bin=/usr/lib/postgresql/15/bin
t0=$(date +%s)
dir=$(mktemp -d /tmp/basalt-drill.XXXXXX)
chmod 755 "$dir"
user=$(id -un)
[ "$(id -u)" -eq 0 ] && user=postgres && chown postgres "$dir"
as_pg() { if [ "$(id -u)" -eq 0 ]; then (cd /tmp && setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"); else (cd /tmp && "$@"); fi; }
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pass=0 fail=0
check() { if [ "$2" = "$3" ]; then echo "ok: $1 ($2)"; pass=$((pass + 1)); else echo "FAIL: $1: got '$2', expected '$3'"; fail=$((fail + 1)); fi; }

stop_pg() { [ -f "$1/postmaster.pid" ] && as_pg "$bin/pg_ctl" -D "$1" -m fast -w stop >/dev/null 2>&1 || true; }
cleanup() {
  stop_pg "$dir/pg"
  stop_pg "$dir/restore-time"
  stop_pg "$dir/restore-latest"
  if [ "$keep" = 1 ]; then echo "drill.sh: kept $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT

port=$(free_port)
conf=$dir/pgbackrest.conf
# The shipped configuration, paths moved into the drill's folder.
sed -e "s#^repo1-path=.*#repo1-path=$dir/repo#" \
  -e "s#^spool-path=.*#spool-path=$dir/spool#" \
  -e "s#^repo1-cipher-pass=.*#repo1-cipher-pass=drill-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')#" \
  -e "s#^pg1-path=.*#pg1-path=$dir/pg#" \
  -e "s#^pg1-port=.*#pg1-port=$port#" \
  -e "s#^pg1-socket-path=.*#pg1-socket-path=$dir#" \
  -e "s#^\[basalt\]#[drill]#" \
  "$here/pgbackrest.conf" >"$conf"
sed -i "s#^\[global\]#[global]\nlock-path=$dir/lock\nlog-path=$dir/log#" "$conf"
mkdir -p "$dir/repo" "$dir/spool" "$dir/lock" "$dir/log"
[ "$(id -u)" -eq 0 ] && chown -R postgres "$dir"
step() { echo "# $(($(date +%s) - t0))s: $*" >&2; }
br() { step "pgbackrest $*"; as_pg pgbackrest --config="$conf" --stanza=drill --log-level-console=warn "$@"; }

as_pg "$bin/initdb" -D "$dir/pg" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1
cat >>"$dir/pg/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
wal_level = replica
archive_mode = on
archive_command = 'pgbackrest --config=$conf --stanza=drill archive-push %p'
archive_timeout = 60
max_wal_senders = 3
CONF
as_pg "$bin/pg_ctl" -D "$dir/pg" -w -t 60 -l "$dir/pg.log" start >/dev/null
psql_at() { as_pg "$bin/psql" -h "$dir" -p "$1" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 -c "$2"; }

br stanza-create
br check
br --type=full backup
check "full backup listed by pgbackrest info" "$(br info --output=json | /usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)[0]["backup"]))')" 1

psql_at "$port" "CREATE TABLE drill (id int PRIMARY KEY, batch text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"
psql_at "$port" "INSERT INTO drill (id, batch) SELECT g, 'A' FROM generate_series(1, $rows) g"
# The moment to restore to: after A committed, before B.
sleep 1
target=$(psql_at "$port" "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
sleep 1
psql_at "$port" "INSERT INTO drill (id, batch) SELECT g, 'B' FROM generate_series($rows + 1, 2 * $rows) g"
# Every WAL segment with B in it reaches the archive before the "disaster".
psql_at "$port" "SELECT pg_switch_wal()" >/dev/null
br check
stop_pg "$dir/pg"

restore_into() { # FOLDER, then pgBackRest's restore options
  local d=$1
  shift
  mkdir -p "$d"
  [ "$(id -u)" -eq 0 ] && chown postgres "$d"
  chmod 700 "$d"
  step "restore into $d $*"
  as_pg pgbackrest --config="$conf" --stanza=drill --log-level-console=warn --pg1-path="$d" "$@" restore
  step "start $d"
  local p
  p=$(free_port)
  as_pg "$bin/pg_ctl" -D "$d" -w -t 120 -l "$d.log" -o "-p $p -c archive_mode=off" start >/dev/null
  # Wait for recovery to end (promoted at the target).
  for _ in $(seq 600); do
    [ "$(psql_at "$p" "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ] && break
    sleep 0.1
  done
  step "recovered $d"
  echo "$p"
}

p=$(restore_into "$dir/restore-time" --type=time "--target=$target" --target-action=promote)
check "restore to $target: rows of batch A" "$(psql_at "$p" "SELECT count(*) FROM drill WHERE batch = 'A'")" "$rows"
check "restore to $target: rows of batch B (written after the target)" "$(psql_at "$p" "SELECT count(*) FROM drill WHERE batch = 'B'")" 0
check "restore to $target: not in recovery" "$(psql_at "$p" "SELECT pg_is_in_recovery()")" f
stop_pg "$dir/restore-time"

p=$(restore_into "$dir/restore-latest" --type=default)
check "restore latest: every row" "$(psql_at "$p" "SELECT count(*) FROM drill")" "$((2 * rows))"
check "restore latest: distinct ids" "$(psql_at "$p" "SELECT count(DISTINCT id) FROM drill")" "$((2 * rows))"
stop_pg "$dir/restore-latest"

took=$(($(date +%s) - t0))
echo "drill took ${took}s"
if [ "$fail" -eq 0 ] && [ -n "$metrics" ]; then
  tmp=$metrics.tmp.$$
  {
    echo "# HELP basalt_backup_last_verified_timestamp_seconds Time of the last backup restored and checked by a drill."
    echo "# TYPE basalt_backup_last_verified_timestamp_seconds gauge"
    echo "basalt_backup_last_verified_timestamp_seconds{backend=\"postgresql\",tool=\"pgbackrest\"} $(date +%s)"
    echo "# HELP basalt_backup_drill_duration_seconds How long the last successful restore drill took."
    echo "# TYPE basalt_backup_drill_duration_seconds gauge"
    echo "basalt_backup_drill_duration_seconds{backend=\"postgresql\",tool=\"pgbackrest\"} $took"
  } >"$tmp"
  mv "$tmp" "$metrics"
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
