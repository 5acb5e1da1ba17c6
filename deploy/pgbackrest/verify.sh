#!/usr/bin/env bash
# Verifies the latest pgBackRest backup of a stanza: restores it (with the archived WAL
# after it) into a temporary folder, starts that copy on a private Unix socket (no TCP,
# no archiving, trust only for this folder's socket), waits for recovery to end, checks
# that it answers and counts the rows of every table of the database, then stops and
# deletes it. The production PostgreSQL and the repository are only read.
# Basalt runs it on PostgreSQL as --backup-verify-command (docs/backups.md, "On
# PostgreSQL"): exit 0 means verified; the last line says what was checked.
# Runs as the postgres user (as root it switches to postgres for pgBackRest and
# PostgreSQL); needs pgbackrest and the PostgreSQL server binaries of the backup's
# version, and free space for one copy of the database in --tmp (default $TMPDIR or /tmp).
# Usage: deploy/pgbackrest/verify.sh --stanza=NAME [--config=FILE] [--database=NAME]
#                                    [--tmp=DIR] [--keep]
# Exit status: 0 verified; 1 a check failed; 2 bad usage; 3 a tool is missing.
set -euo pipefail
stanza="" config="" database="" tmp=${TMPDIR:-/tmp} keep=0
for a in "$@"; do
  case $a in
  --stanza=*) stanza=${a#*=} ;;
  --config=*) config=${a#*=} ;;
  --database=*) database=${a#*=} ;;
  --tmp=*) tmp=${a#*=} ;;
  --keep) keep=1 ;;
  *) echo "verify.sh: unknown option $a (see the usage at the top of the script)" >&2; exit 2 ;;
  esac
done
[ -n "$stanza" ] || { echo "verify.sh: --stanza=NAME is required" >&2; exit 2; }
command -v pgbackrest >/dev/null ||
  { echo "verify.sh: pgbackrest is not installed (Debian package pgbackrest)" >&2; exit 3; }
t0=$(date +%s)
as_pg() { if [ "$(id -u)" -eq 0 ]; then (cd / && setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"); else (cd / && "$@"); fi; }
fail() { echo "verify.sh: FAIL: $*" >&2; exit 1; }
# pgBackRest's own words, on one line: its ERROR lines (or the last lines it printed).
errs() { local e; e=$(printf '%s\n' "$1" | grep -E '^(ERROR|WARN)' | tail -n 2); printf '%s' "${e:-$(printf '%s\n' "$1" | tail -n 2)}" | tr '\n' ' '; }
br() { as_pg pgbackrest ${config:+--config="$config"} --stanza="$stanza" --log-level-console=error "$@"; }

# What the repository holds: the stanza must be fine and hold a backup.
info=$(br info --output=json 2>&1) || fail "pgbackrest info: $(errs "$info")"
read -r label stop version < <(printf '%s' "$info" | /usr/bin/python3 -c '
import json, sys
try:
    s = json.load(sys.stdin)[0]
except Exception as e:
    print("- - -"); sys.exit(0)
b = s.get("backup") or []
if s.get("status", {}).get("code", 1) != 0 or not b:
    print("- - -", s.get("status", {}).get("message", "?").replace(" ", "_")); sys.exit(0)
db = {d["id"]: d["version"] for d in s.get("db", [])}
last = b[-1]
print(last["label"], last["timestamp"]["stop"], db.get(last.get("database", {}).get("id"), "?"))
') || true
if [ "${label:--}" = - ]; then
  fail "stanza $stanza has no usable backup: $(printf '%s' "$info" | /usr/bin/python3 -c 'import json,sys
try: print(json.load(sys.stdin)[0]["status"]["message"])
except Exception: print(sys.stdin.read() or "unreadable pgbackrest info")' 2>/dev/null)"
fi
bin=/usr/lib/postgresql/$version/bin
[ -x "$bin/postgres" ] ||
  { echo "verify.sh: the backup is of PostgreSQL $version: install postgresql-$version" >&2; exit 3; }

dir=$(mktemp -d "$tmp/basalt-verify.XXXXXX")
chmod 700 "$dir"
[ "$(id -u)" -eq 0 ] && chown postgres "$dir"
cleanup() {
  [ -f "$dir/pg/postmaster.pid" ] && as_pg "$bin/pg_ctl" -D "$dir/pg" -m immediate -w stop >/dev/null 2>&1 || true
  if [ "$keep" = 1 ]; then echo "verify.sh: kept $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 1' TERM INT

# The latest backup and every WAL archived after it: the newest consistent state.
mkdir -m 700 "$dir/pg"
[ "$(id -u)" -eq 0 ] && chown postgres "$dir/pg"
out=$(br --pg1-path="$dir/pg" --set="$label" restore 2>&1) || fail "pgbackrest restore of $label: $(errs "$out")"
cat >"$dir/hba.conf" <<HBA
local all all trust
HBA
[ "$(id -u)" -eq 0 ] && chown postgres "$dir/hba.conf"
# Private: a socket in this folder only, no TCP, no archiving into the repository.
# hot_standby off: no client until the recovery has replayed everything and ended, and no
# check that the copy's limits (max_connections...) match the primary's.
as_pg "$bin/pg_ctl" -D "$dir/pg" -w -t 86400 -l "$dir/pg.log" -o "-c listen_addresses= -k $dir -p 5432 \
  -c archive_mode=off -c hot_standby=off -c hba_file=$dir/hba.conf -c shared_buffers=32MB" start >/dev/null ||
  fail "the restored copy did not start: $(grep -E 'FATAL|PANIC|ERROR' "$dir/pg.log" 2>/dev/null | tail -n 3 | tr '\n' ' ')"
q() { as_pg "$bin/psql" -h "$dir" -p 5432 -U postgres -d "${2:-postgres}" -qAt -v ON_ERROR_STOP=1 -c "$1"; }
for _ in $(seq 3000); do
  [ "$(q "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ] && break
  sleep 0.1
done
[ "$(q "SELECT pg_is_in_recovery()")" = f ] || fail "the restored copy is still recovering"
dbs=$database
[ -n "$dbs" ] || dbs=$(q "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1")
tables=0 rows=0
for d in $dbs; do
  [ "$(q "SELECT count(*) FROM pg_database WHERE datname = '${d//\'/\'\'}'")" = 1 ] ||
    fail "database $d is not in the backup"
  # Every heap page of every table is read: a damaged page fails here.
  counts=$(as_pg "$bin/psql" -h "$dir" -p 5432 -U postgres -d "$d" -qAt -v ON_ERROR_STOP=1 <<'SQL' 2>&1
SELECT format('%I.%I', n.nspname, c.relname),
       (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname),
                                             false, true, '')))[1]::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
ORDER BY 1;
SQL
  ) || fail "counting the rows of database $d: $counts"
  while IFS='|' read -r name n; do
    [ -n "$name" ] || continue
    echo "$d.$name $n rows"
    tables=$((tables + 1)) rows=$((rows + n))
  done <<<"$counts"
done
echo "verified: backup $label (stopped $(date -u -d "@$stop" +%Y-%m-%dT%H:%M:%SZ)) of stanza $stanza restored and started; $tables tables, $rows rows; in $(($(date +%s) - t0)) s"
