#!/usr/bin/env bash
# Starts a PostgreSQL 15 of the tests' own, and PgBouncer in transaction mode in front
# of it, under a temporary folder on free ports of 127.0.0.1; run as the postgres user
# when root. Never a system service.
#   scripts/pg-env.sh start DIR   prints the variables to eval:
#       BASALT_TEST_PG_URL       direct (session) connection
#       BASALT_TEST_PGB_URL      through PgBouncer, transaction pooling
#       BASALT_TEST_PG_DIR       DIR
#   scripts/pg-env.sh stop DIR    stops both (by their PIDs) and removes DIR
# For fault tests, on a DIR that start made:
#   scripts/pg-env.sh pg-down DIR / pg-up DIR       stops / starts PostgreSQL alone
#   scripts/pg-env.sh bouncer-restart DIR           restarts PgBouncer (clients cut)
#   scripts/pg-env.sh replica-up DIR                a streaming replica (pg_basebackup -R) on
#                                                   a free port; prints BASALT_TEST_PG_REPLICA_URL
#   scripts/pg-env.sh replica-down DIR / replica-start DIR   stops / starts it again
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?folder}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
as_pg() { if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/bash -c "$1"; else bash -c "$1"; fi; }
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pg_up() {
  as_pg "$bin/pg_ctl -D '$dir/data' -w -t 60 -l '$dir/postgres.log' -o \"-k '$dir' -p $1 -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=128MB -c shared_preload_libraries=pg_stat_statements\" start >/dev/null"
}

replica_up() {
  as_pg "$bin/pg_ctl -D '$dir/replica' -w -t 60 -l '$dir/replica.log' -o \"-k '$dir' -p $1 -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=64MB\" start >/dev/null"
}

case $cmd in
pg-down)
  as_pg "$bin/pg_ctl -D '$dir/data' -m fast -w stop >/dev/null"
  ;;
pg-up)
  pg_up "$(cat "$dir/pg.port")"
  ;;
replica-up)
  rport=$(free_port)
  echo "$rport" >"$dir/replica.port"
  # -c fast: the base backup's checkpoint at once; the default (spread) paces it over
  # most of checkpoint_timeout, which on a just-made cluster kept this waiting ~90 s.
  as_pg "$bin/pg_basebackup -h 127.0.0.1 -p $(cat "$dir/pg.port") -U postgres -D '$dir/replica' -R -X stream -c fast >/dev/null 2>'$dir/basebackup.log'"
  replica_up "$rport"
  echo "export BASALT_TEST_PG_REPLICA_URL=postgres://postgres@127.0.0.1:$rport/basalt_test"
  ;;
replica-down)
  as_pg "$bin/pg_ctl -D '$dir/replica' -m fast -w stop >/dev/null"
  ;;
replica-start)
  replica_up "$(cat "$dir/replica.port")"
  ;;
bouncer-restart)
  kill "$(cat "$dir/pgbouncer.pid")"
  for _ in $(seq 50); do [ -f "$dir/pgbouncer.pid" ] || break; sleep 0.1; done
  as_pg "/usr/sbin/pgbouncer -d '$dir/pgbouncer.ini'"
  ;;
start)
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
  pg_port=$(free_port)
  pgb_port=$(free_port)
  echo "$pg_port" >"$dir/pg.port"
  as_pg "$bin/initdb -D '$dir/data' -A trust -U postgres -E UTF8 --locale=C.UTF-8 >'$dir/initdb.log' 2>&1"
  # Small and fast for tests; fsync stays on (the durability tests mean it).
  pg_up "$pg_port"
  as_pg "$bin/psql -h '$dir' -p $pg_port -U postgres -qAt -c 'CREATE DATABASE basalt_test' >/dev/null"
  cat >"$dir/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=$pg_port
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pgb_port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
; a client waits at most this long for a server connection (the default is 120 s)
query_wait_timeout = 5
max_client_conn = 500
default_pool_size = 20
; each test server's database keeps its own pool: idle server connections of finished
; tests are closed soon, so that the suite stays within max_connections
server_idle_timeout = 10
ignore_startup_parameters = extra_float_digits,application_name
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
  echo '"postgres" ""' >"$dir/userlist.txt"
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir/pgbouncer.ini" "$dir/userlist.txt"
  as_pg "/usr/sbin/pgbouncer -d '$dir/pgbouncer.ini'"
  for _ in $(seq 50); do
    as_pg "$bin/psql 'postgres://postgres@127.0.0.1:$pgb_port/basalt_test' -qAt -c 'SELECT 1'" >/dev/null 2>&1 && break
    sleep 0.1
  done
  echo "export BASALT_TEST_PG_URL=postgres://postgres@127.0.0.1:$pg_port/basalt_test"
  echo "export BASALT_TEST_PGB_URL=postgres://postgres@127.0.0.1:$pgb_port/basalt_test"
  echo "export BASALT_TEST_PG_DIR=$dir"
  ;;
stop)
  if [ -f "$dir/pgbouncer.pid" ]; then kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true; fi
  if [ -f "$dir/replica/postmaster.pid" ]; then as_pg "$bin/pg_ctl -D '$dir/replica' -m fast -w stop >/dev/null" || true; fi
  if [ -f "$dir/data/postmaster.pid" ]; then as_pg "$bin/pg_ctl -D '$dir/data' -m fast -w stop >/dev/null" || true; fi
  rm -rf "$dir"
  ;;
esac
