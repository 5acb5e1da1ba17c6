#!/usr/bin/env bash
# Builds and runs bench/probes/pg_models.c against a PostgreSQL 15 of its own (initdb
# under a temporary folder, on a free port of 127.0.0.1, as the postgres user when
# root), over the unix socket and over TCP, then stops it. ADR 0004 quotes its output.
# Usage: bench/probes/pg_models.sh [seconds-per-model]   (the probe runs on core 1)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
secs=${1:-3}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
tmp=$(mktemp -d)
trap 'as_pg "$bin/pg_ctl -D $tmp/data stop -m fast" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
as_pg() { if [ "$(id -u)" -eq 0 ]; then su postgres -c "$1"; else bash -c "$1"; fi; }
[ "$(id -u)" -eq 0 ] && chown postgres "$tmp"
cc -O2 -Wall -Wextra -Werror -I"$(pg_config --includedir)" "$here/pg_models.c" -o "$tmp/pg_models" -lpq -lpthread
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$bin/initdb -D $tmp/data -A trust -U postgres >/dev/null"
as_pg "$bin/pg_ctl -D $tmp/data -w -l $tmp/log -o '-k $tmp -p $port -c listen_addresses=127.0.0.1 -c shared_buffers=256MB' start >/dev/null"
echo "unix socket:"
taskset -c 1 "$tmp/pg_models" "host=$tmp port=$port user=postgres dbname=postgres" "$secs" 2>/dev/null
echo "TCP 127.0.0.1:"
taskset -c 1 "$tmp/pg_models" "host=127.0.0.1 port=$port user=postgres dbname=postgres" "$secs" 2>/dev/null
