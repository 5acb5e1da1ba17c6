#!/usr/bin/env bash
# A whole Basalt cluster on loopback, from Debian packages, under one folder:
#   etcd (one member) -> two Patroni-managed PostgreSQL 15 nodes (primary + streaming
#   replica) -> HAProxy's pg_primary / pg_replica listeners (Patroni's REST checks
#   /primary and /replica pick the node) -> PgBouncer (transaction mode) -> N Basalt
#   instances, each with its own port and data folder -> HAProxy's HTTP frontend
#   (readiness checks, retries, redispatch); Redis for the instances when the binary
#   supports --redis. See docs/scaling.md and docs/adr/0007-local-cluster.md.
#
# Usage: deploy/local/cluster.sh up|down|status [options]
#        deploy/local/cluster.sh restart-instance I|stop-instance I|start-instance I|kill-instance I|sigterm-instance I
#        deploy/local/cluster.sh node-stop|node-kill|node-start NODE    (NODE: node1|node2)
#        deploy/local/cluster.sh redis-start                            (after a test killed it)
#   --instances N      Basalt instances (default 2)
#   --dir D            the cluster's folder (default: a new /tmp/basalt-cluster.XXXXXX for
#                      up; the last one up made for the others)
#   --bin PATH         the basalt binary (default: $BASALT_BIN, else build/basalt)
#   --port P           the load balancer's port (default: a free one)
#   --basalt-arg ARG   one more argument for every instance (repeatable)
#   --admin E:P        create this superuser once the database is up
# up and status print, one per line: BASALT_URL= BASALT_INSTANCE_URLS= PG_PRIMARY_URL=
# PG_REPLICA_URL= REDIS_URL= CLUSTER_DIR= (and PGBOUNCER_URL= PATRONI_URLS=
# PG_NODE_URLS= HAPROXY_SOCKET=). down stops exactly the processes up recorded in the
# folder (by PID) and removes the folder.
#
# As root, every server runs as the postgres user (PostgreSQL refuses root, and so does
# PgBouncer), in a folder that user owns; as another user, as that user.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cmd=${1:-}
[ -n "$cmd" ] && shift
instances=2 dir="" bin=${BASALT_BIN:-$repo/build/basalt} lb_port="" admin="" arg=""
extra_args=()
while [ $# -gt 0 ]; do
  case $1 in
  --instances) instances=$2; shift 2 ;;
  --instances=*) instances=${1#*=}; shift ;;
  --dir) dir=$2; shift 2 ;;
  --dir=*) dir=${1#*=}; shift ;;
  --bin) bin=$2; shift 2 ;;
  --bin=*) bin=${1#*=}; shift ;;
  --port) lb_port=$2; shift 2 ;;
  --port=*) lb_port=${1#*=}; shift ;;
  --basalt-arg) extra_args+=("$2"); shift 2 ;;
  --basalt-arg=*) extra_args+=("${1#*=}"); shift ;;
  --admin) admin=$2; shift 2 ;;
  --admin=*) admin=${1#*=}; shift ;;
  -h | --help) sed -n '2,27p' "$0"; exit 0 ;;
  -*) echo "cluster.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  *) arg=$1; shift ;;
  esac
done

die() { echo "cluster.sh: $*" >&2; exit 1; }
current_file=/tmp/basalt-cluster-$(id -u).current

pgbin=$(ls -d /usr/lib/postgresql/15/bin 2>/dev/null || ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
svc_user=$(id -un)
[ "$(id -u)" -eq 0 ] && svc_user=postgres

# as_svc CMD...: runs CMD as the service user; exec'd in place (setpriv does not fork),
# so that $! of a backgrounded as_svc is the server's own PID.
as_svc() {
  if [ "$(id -u)" -eq 0 ]; then
    HOME=$dir exec setpriv --reuid="$svc_user" --regid="$svc_user" --init-groups -- "$@"
  else
    exec "$@"
  fi
}

# spawn NAME CMD...: starts CMD in the background in its own session, logs to
# NAME.log, records its PID in pids/NAME.
spawn() {
  local name=$1
  shift
  # exec all the way down (subshell -> setsid -> bash -> setpriv -> the server): $! is
  # the server's PID. setsid: a Ctrl-C in the terminal that ran up reaches none of them.
  (
    cd "$dir"
    exec setsid bash -c "$(declare -f as_svc); dir='$dir'; svc_user='$svc_user'; as_svc \"\$@\"" _ "$@" \
      >>"$dir/logs/$name.log" 2>&1 </dev/null
  ) &
  echo $! >"$dir/pids/$name"
  [ "$(id -u)" -eq 0 ] && chown "$svc_user" "$dir/pids/$name"
  return 0
}

alive() { [ -f "$dir/pids/$1" ] && kill -0 "$(cat "$dir/pids/$1")" 2>/dev/null; }

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port_taken() { /usr/bin/python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try: s.bind(("127.0.0.1",int(sys.argv[1])))
except OSError: sys.exit(0)
sys.exit(1)' "$1"; }

# wait_for WHAT SECONDS TEST...: polls TEST every 0.1 s; fails with WHAT and the log.
wait_for() {
  local what=$1 secs=$2 log=$3
  shift 3
  local end=$((SECONDS + secs)) last=""
  while [ $SECONDS -lt $end ]; do
    if last=$("$@" 2>&1); then return 0; fi
    sleep 0.1
  done
  echo "cluster.sh: $what did not come up within ${secs}s; the last check said: ${last:-nothing}; the end of $log:" >&2
  tail -n 20 "$log" >&2 || true
  return 1
}

http_ok() { curl -fsS -m 2 -o /dev/null "$1"; }

check_packages() {
  local missing="" p
  for p in patroni etcd-server postgresql-15 pgbouncer haproxy redis-server curl util-linux; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    die "missing Debian packages:$missing; install them with: sudo apt-get install$missing (or scripts/deps.sh test)"
  fi
  [ -n "$pgbin" ] && [ -x "$pgbin/postgres" ] || die "no PostgreSQL binaries under /usr/lib/postgresql/*/bin; sudo apt-get install postgresql-15"
  [ -x "$bin" ] || die "no basalt binary at $bin: build it with 'make build' or pass --bin / BASALT_BIN"
}

load_state() {
  [ -n "$dir" ] || { [ -f "$current_file" ] && dir=$(cat "$current_file"); } || true
  [ -n "$dir" ] || die "no cluster folder: pass --dir (no cluster was brought up by this user)"
  [ -f "$dir/cluster.env" ] || die "$dir holds no cluster (no cluster.env)"
  # shellcheck disable=SC1091
  . "$dir/cluster.env"
}

# grep reads all of config-doc (no -q): with pipefail, an early exit would SIGPIPE it.
drain_supported() { "$bin" config-doc 2>/dev/null | grep -- '`--shutdown-drain-delay`' >/dev/null; }

redis_supported() { "$bin" config-doc 2>/dev/null | grep -- '`--redis`' >/dev/null; }

instance_args() {
  local i=$1
  local a=("serve" "--http=127.0.0.1:$(eval echo "\$BASALT_PORT_$i")" "--dir=$dir/basalt$i"
    "--db=postgres://postgres@127.0.0.1:$PGBOUNCER_PORT/basalt" "--db-listen=postgres://postgres@127.0.0.1:$PG_PRIMARY_PORT/basalt"
    "--db-replicas=postgres://postgres@127.0.0.1:$PG_REPLICA_PORT/basalt"
    "--trusted-proxies=127.0.0.1" "--max-connections-per-ip=0" "--db-connect-timeout-ms=2000")
  [ "$REDIS_FLAG" = 1 ] && a+=("--redis=redis://127.0.0.1:$REDIS_PORT")
  # Readiness fails for 2 s after SIGTERM before the listener closes: HAProxy's checks
  # (0.5 s apart, 2 failures) take the instance out first, so a bare SIGTERM is safe.
  [ "${DRAIN_FLAG:-0}" = 1 ] && a+=("--shutdown-drain-delay=2000")
  printf '%s\n' "${a[@]}"
  [ -f "$dir/basalt.args" ] && cat "$dir/basalt.args"
  return 0
}

start_instance() {
  local i=$1 a=()
  mapfile -t a < <(instance_args "$i")
  mkdir -p "$dir/basalt$i"
  [ "$(id -u)" -eq 0 ] && chown "$svc_user" "$dir/basalt$i"
  spawn "basalt$i" "$bin" "${a[@]}"
}

wait_instance() {
  local i=$1
  wait_for "basalt$i (readiness on port $(eval echo "\$BASALT_PORT_$i"))" 30 "$dir/logs/basalt$i.log" \
    http_ok "http://127.0.0.1:$(eval echo "\$BASALT_PORT_$i")/api/health?ready=1"
}

haproxy_cmd() { echo "$1" | /usr/bin/python3 -c 'import socket,sys
s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.stdin.buffer.read())
out=b""
while True:
    c=s.recv(65536)
    if not c: break
    out+=c
sys.stdout.write(out.decode())' "$dir/haproxy.sock"; }

# haproxy_server_state I: the HAProxy status (UP, DOWN, MAINT, DRAIN...) of instance I.
haproxy_server_state() {
  haproxy_cmd "show stat" | awk -F, -v s="basalt$1" '$1=="basalt" && $2==s {print $18}'
}

patroni_role() { curl -s -m 2 "http://127.0.0.1:$1/patroni" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin).get("role",""))' 2>/dev/null || true; }

print_status() {
  local urls="" i
  for i in $(seq 1 "$INSTANCES"); do
    urls="$urls${urls:+,}http://127.0.0.1:$(eval echo "\$BASALT_PORT_$i")"
  done
  echo "BASALT_URL=http://127.0.0.1:$LB_PORT"
  echo "BASALT_INSTANCE_URLS=$urls"
  echo "PG_PRIMARY_URL=postgres://postgres@127.0.0.1:$PG_PRIMARY_PORT/basalt"
  echo "PG_REPLICA_URL=postgres://postgres@127.0.0.1:$PG_REPLICA_PORT/basalt"
  echo "REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
  echo "CLUSTER_DIR=$dir"
  echo "PGBOUNCER_URL=postgres://postgres@127.0.0.1:$PGBOUNCER_PORT/basalt"
  echo "PATRONI_URLS=http://127.0.0.1:$REST_PORT_1,http://127.0.0.1:$REST_PORT_2"
  echo "PG_NODE_URLS=postgres://postgres@127.0.0.1:$PG_PORT_1/basalt,postgres://postgres@127.0.0.1:$PG_PORT_2/basalt"
  echo "HAPROXY_SOCKET=$dir/haproxy.sock"
  echo "BASALT_REDIS_FLAG=$REDIS_FLAG"
  echo "BASALT_DRAIN_FLAG=${DRAIN_FLAG:-0}"
}

# status_check: every recorded process alive, every part answering; prints problems.
status_check() {
  local bad=0 n
  for n in $(ls "$dir/pids"); do
    alive "$n" || { echo "cluster.sh: $n (pid $(cat "$dir/pids/$n")) is not running; see $dir/logs/$n.log" >&2; bad=1; }
  done
  for n in 1 2; do
    echo "# node$n: $(patroni_role "$(eval echo "\$REST_PORT_$n")") (PostgreSQL on 127.0.0.1:$(eval echo "\$PG_PORT_$n"))" >&2
  done
  return $bad
}

write_configs() {
  local n other
  mkdir -p "$dir/logs" "$dir/pids" "$dir/etcd" "$dir/redis"
  cat >"$dir/cluster.env" <<ENV
INSTANCES=$instances
LB_PORT=$LB_PORT
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
PG_PORT_1=$PG_PORT_1
PG_PORT_2=$PG_PORT_2
REST_PORT_1=$REST_PORT_1
REST_PORT_2=$REST_PORT_2
PG_PRIMARY_PORT=$PG_PRIMARY_PORT
PG_REPLICA_PORT=$PG_REPLICA_PORT
PGBOUNCER_PORT=$PGBOUNCER_PORT
REDIS_PORT=$REDIS_PORT
REDIS_FLAG=$REDIS_FLAG
DRAIN_FLAG=$DRAIN_FLAG
BIN=$bin
ENV
  for i in $(seq 1 "$instances"); do echo "BASALT_PORT_$i=$(eval echo "\$BASALT_PORT_$i")" >>"$dir/cluster.env"; done
  : >"$dir/basalt.args"
  for a in "${extra_args[@]+"${extra_args[@]}"}"; do printf '%s\n' "$a" >>"$dir/basalt.args"; done

  for n in 1 2; do
    mkdir -p "$dir/node$n"
    cat >"$dir/node$n/patroni.yml" <<YML
scope: basalt
name: node$n
log:
  level: WARNING
restapi:
  listen: 127.0.0.1:$(eval echo "\$REST_PORT_$n")
  connect_address: 127.0.0.1:$(eval echo "\$REST_PORT_$n")
etcd3:
  hosts: 127.0.0.1:$ETCD_PORT
bootstrap:
  dcs:
    # a dead primary's leader key expires after ttl: the failover time on a hard loss
    ttl: 20
    loop_wait: 1
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    # Commits wait for the replica's flush, and Patroni promotes only the synchronous
    # replica: an acknowledged write survives the primary's loss (RPO 0). When the
    # replica is gone, Patroni drops it from synchronous_standby_names after a loop, so
    # writes stall for about a second instead of failing.
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        max_connections: 300
        shared_buffers: 64MB
        synchronous_commit: "on"
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
    - data-checksums
  pg_hba:
    - local all all trust
    - host replication postgres 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:$(eval echo "\$PG_PORT_$n")
  connect_address: 127.0.0.1:$(eval echo "\$PG_PORT_$n")
  data_dir: $dir/node$n/data
  bin_dir: $pgbin
  pgpass: $dir/node$n/pgpass
  authentication:
    superuser:
      username: postgres
    replication:
      username: postgres
    rewind:
      username: postgres
  parameters:
    unix_socket_directories: $dir/node$n
watchdog:
  mode: "off"
tags:
  nofailover: false
  noloadbalance: false
YML
  done

  cat >"$dir/haproxy.cfg" <<CFG
# Written by deploy/local/cluster.sh; deploy/haproxy/haproxy.cfg is the production one.
global
    maxconn 4096
    stats socket $dir/haproxy.sock mode 600 level admin
    log stderr format short local0 notice

defaults
    log global
    mode http
    option httplog
    # Errors, retries and redispatches are logged; every good request is not (its cost).
    option dontlog-normal
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout queue 5s
    timeout tunnel 1h
    # A refused or timed-out connection is retried, on another instance after the first
    # attempt (redispatch): nothing was sent, so it is safe for every method.
    retries 3
    option redispatch 1

frontend basalt_http
    bind 127.0.0.1:$LB_PORT
    option forwardfor
    use_backend basalt_live if { nbsrv(basalt) lt 1 }
    default_backend basalt
    # HAProxy's own 503 (no instance alive) in PocketBase's error shape.
    errorfile 503 $dir/503.http

backend basalt
    balance leastconn
    # Beyond connection failures, an instance that died mid-request (empty or broken
    # answer, no answer) is retried elsewhere, but only for idempotent requests.
    retry-on conn-failure empty-response junk-response response-timeout
    http-request disable-l7-retry if !METH_GET !METH_OPTIONS
    option httpchk GET /api/health?ready=1
    http-check expect status 200
    default-server inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2 observe layer4 error-limit 1 on-error mark-down
    errorfile 503 $dir/503.http
CFG
  for i in $(seq 1 "$instances"); do
    echo "    server basalt$i 127.0.0.1:$(eval echo "\$BASALT_PORT_$i") check" >>"$dir/haproxy.cfg"
  done
  cat >>"$dir/haproxy.cfg" <<CFG

# The same instances checked for liveness only. Readiness includes the database: when
# the primary is lost, every instance fails it at once; the frontend then sends the
# traffic here, so that reads still come from the replica and writes get Basalt's own
# 503 with its message, not HAProxy's.
backend basalt_live
    balance leastconn
    retry-on conn-failure empty-response junk-response response-timeout
    http-request disable-l7-retry if !METH_GET !METH_OPTIONS
    option httpchk GET /api/health
    http-check expect status 200
    default-server inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2 observe layer4 error-limit 1 on-error mark-down
    errorfile 503 $dir/503.http
CFG
  for i in $(seq 1 "$instances"); do
    echo "    server basalt$i 127.0.0.1:$(eval echo "\$BASALT_PORT_$i") check" >>"$dir/haproxy.cfg"
  done
  body='{"status":503,"message":"No Basalt instance is available; please retry.","data":{}}'
  printf 'HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nCache-Control: no-cache\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s' \
    "${#body}" "$body" >"$dir/503.http"
  cat >>"$dir/haproxy.cfg" <<CFG

# PostgreSQL: the node whose Patroni answers 200 on /primary (or /replica). A node that
# changes role is marked down and its sessions are cut, so that PgBouncer and the
# instances' LISTEN sessions reconnect to the new primary.
listen pg_primary
    mode tcp
    option tcplog
    bind 127.0.0.1:$PG_PRIMARY_PORT
    timeout client 1h
    timeout server 1h
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 500ms fastinter 250ms fall 2 rise 1 on-marked-down shutdown-sessions
    server node1 127.0.0.1:$PG_PORT_1 check port $REST_PORT_1
    server node2 127.0.0.1:$PG_PORT_2 check port $REST_PORT_2

listen pg_replica
    mode tcp
    option tcplog
    bind 127.0.0.1:$PG_REPLICA_PORT
    timeout client 1h
    timeout server 1h
    option httpchk GET /replica
    http-check expect status 200
    default-server inter 500ms fastinter 250ms fall 2 rise 1 on-marked-down shutdown-sessions
    server node1 127.0.0.1:$PG_PORT_1 check port $REST_PORT_1
    server node2 127.0.0.1:$PG_PORT_2 check port $REST_PORT_2
CFG

  cat >"$dir/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=$PG_PRIMARY_PORT
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 40
; during a failover a client waits at most this long for a server connection, and a
; failed server login is retried after 1 s (the default waits 15 s)
query_wait_timeout = 3
server_login_retry = 1
server_connect_timeout = 2
server_idle_timeout = 30
ignore_startup_parameters = extra_float_digits,application_name
INI
  echo '"postgres" ""' >"$dir/userlist.txt"
  if [ "$(id -u)" -eq 0 ]; then chown -R "$svc_user" "$dir"; fi
}

start_redis() {
  spawn redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$dir/redis" --save "" --appendonly no \
    --daemonize no --protected-mode yes
}

cmd_up() {
  check_packages
  # Without --dir, up again is the cluster up made last time, if it still runs.
  if [ -z "$dir" ] && [ -f "$current_file" ] && [ -f "$(cat "$current_file")/cluster.env" ]; then
    dir=$(cat "$current_file")
  fi
  if [ -n "$dir" ] && [ -f "$dir/cluster.env" ]; then
    load_state
    if status_check 2>/dev/null; then
      print_status
      return 0
    fi
    die "a cluster in $dir is partly running; run '$0 down --dir $dir' first"
  fi
  [[ $instances =~ ^[0-9]+$ ]] && [ "$instances" -ge 1 ] && [ "$instances" -le 32 ] || die "--instances must be 1..32"
  if [ -n "$lb_port" ] && port_taken "$lb_port"; then
    die "port $lb_port (--port) is taken on 127.0.0.1: pick another or stop what listens there (ss -ltnp 'sport = :$lb_port')"
  fi
  if [ -z "$dir" ]; then dir=$(mktemp -d /tmp/basalt-cluster.XXXXXX); else mkdir -p "$dir"; fi
  dir=$(cd "$dir" && pwd)
  chmod 755 "$dir"
  LB_PORT=${lb_port:-$(free_port)}
  for v in ETCD_PORT ETCD_PEER_PORT PG_PORT_1 PG_PORT_2 REST_PORT_1 REST_PORT_2 PG_PRIMARY_PORT PG_REPLICA_PORT PGBOUNCER_PORT REDIS_PORT; do
    eval "$v=$(free_port)"
  done
  for i in $(seq 1 "$instances"); do eval "BASALT_PORT_$i=$(free_port)"; done
  REDIS_FLAG=0
  redis_supported && REDIS_FLAG=1
  DRAIN_FLAG=0
  drain_supported && DRAIN_FLAG=1
  INSTANCES=$instances
  write_configs
  echo "$dir" >"$current_file"
  # From here on, a failure leaves the folder for 'down' (and its logs to read).
  trap 'echo "cluster.sh: up failed; logs in $dir/logs; stop what started with: $0 down --dir $dir" >&2' ERR

  spawn etcd etcd --name e1 --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "e1=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new --log-level warn
  wait_for "etcd" 20 "$dir/logs/etcd.log" http_ok "http://127.0.0.1:$ETCD_PORT/health"

  start_redis
  spawn haproxy haproxy -db -f "$dir/haproxy.cfg"
  # node1 bootstraps the cluster (initdb) and becomes the primary; node2 then clones it.
  spawn patroni1 patroni "$dir/node1/patroni.yml"
  wait_for "Patroni node1 as primary" 90 "$dir/logs/patroni1.log" http_ok "http://127.0.0.1:$REST_PORT_1/primary"
  spawn patroni2 patroni "$dir/node2/patroni.yml"
  wait_for "Patroni node2 as streaming replica" 90 "$dir/logs/patroni2.log" http_ok "http://127.0.0.1:$REST_PORT_2/replica"
  (cd /tmp && as_svc "$pgbin/psql" -h 127.0.0.1 -p "$PG_PORT_1" -U postgres -qAt -c "CREATE DATABASE basalt") >/dev/null
  spawn pgbouncer pgbouncer "$dir/pgbouncer.ini"
  pg_through() { (cd /tmp && as_svc "$pgbin/psql" "postgres://postgres@127.0.0.1:$1/basalt" -qAt -c "SELECT 1"); }
  wait_for "HAProxy's pg_primary listener" 20 "$dir/logs/haproxy.log" pg_through "$PG_PRIMARY_PORT"
  wait_for "PgBouncer" 20 "$dir/logs/pgbouncer.log" pg_through "$PGBOUNCER_PORT"
  redis_ping() { local r; r=$(redis-cli -p "$REDIS_PORT" ping 2>&1); [ "$r" = PONG ] || { echo "$r"; return 1; }; }
  wait_for "Redis" 30 "$dir/logs/redis.log" redis_ping
  if [ -n "$admin" ]; then
    (cd /tmp && as_svc "$bin" superuser upsert "${admin%%:*}" "${admin#*:}" "--dir=$dir/basalt1" \
      "--db=postgres://postgres@127.0.0.1:$PGBOUNCER_PORT/basalt") >/dev/null
  fi
  # One instance first: it creates the schema; the others then start side by side.
  start_instance 1
  wait_instance 1
  for i in $(seq 2 "$instances"); do start_instance "$i"; done
  for i in $(seq 2 "$instances"); do wait_instance "$i"; done
  lb_ready() { http_ok "http://127.0.0.1:$LB_PORT/api/health?ready=1"; }
  wait_for "HAProxy's Basalt frontend on port $LB_PORT" 20 "$dir/logs/haproxy.log" lb_ready
  for i in $(seq 1 "$instances"); do
    instance_up() { [ "$(haproxy_server_state "$1")" = UP ]; }
    wait_for "HAProxy's check of basalt$i" 20 "$dir/logs/haproxy.log" instance_up "$i"
  done
  trap - ERR
  print_status
}

cmd_down() {
  if [ -z "$dir" ] && [ ! -f "$current_file" ]; then
    echo "cluster.sh: no cluster to stop" >&2
    return 0
  fi
  [ -n "$dir" ] || dir=$(cat "$current_file")
  [ -d "$dir" ] || { echo "cluster.sh: $dir is gone: nothing to stop" >&2; rm -f "$current_file"; return 0; }
  [ -f "$dir/cluster.env" ] && [ -d "$dir/pids" ] || die "$dir holds no cluster (no cluster.env): not touching it"
  local tier n pid pids
  # Clients first, then the servers they use, a tier at a time (in parallel within a
  # tier); Patroni stops its PostgreSQL itself.
  for tier in "$(ls "$dir/pids" | grep '^basalt' | tr '\n' ' ')" "haproxy pgbouncer redis" "patroni2 patroni1" "etcd"; do
    pids=""
    for n in $tier; do
      [ -f "$dir/pids/$n" ] || continue
      pid=$(cat "$dir/pids/$n")
      if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; pids="$pids $pid:$n"; fi
      rm -f "$dir/pids/$n"
    done
    for pn in $pids; do
      pid=${pn%%:*}
      for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then
        echo "cluster.sh: ${pn#*:} (pid $pid) ignored SIGTERM for 30 s: SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done
  done
  # A PostgreSQL left behind by a killed Patroni: its postmaster.pid names it.
  for n in 1 2; do
    if [ -f "$dir/node$n/data/postmaster.pid" ]; then
      pid=$(head -1 "$dir/node$n/data/postmaster.pid")
      if kill -0 "$pid" 2>/dev/null && grep -q "$dir/node$n/data" "/proc/$pid/cmdline" 2>/dev/null; then
        kill -INT "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      fi
    fi
  done
  rm -rf "$dir"
  [ -f "$current_file" ] && [ "$(cat "$current_file")" = "$dir" ] && rm -f "$current_file"
  echo "cluster.sh: stopped and removed $dir" >&2
}

cmd_status() {
  load_state
  print_status
  status_check
}

need_instance() {
  [[ $arg =~ ^[0-9]+$ ]] && [ "$arg" -ge 1 ] && [ "$arg" -le "$INSTANCES" ] || die "instance must be 1..$INSTANCES"
}

# Stops instance I without a failed request: HAProxy drains it first (no new requests;
# those in flight finish), then SIGTERM lets Basalt finish what it still holds.
stop_instance() {
  local i=$1 pid
  haproxy_cmd "set server basalt/basalt$i state drain" >/dev/null
  haproxy_cmd "set server basalt_live/basalt$i state drain" >/dev/null
  for _ in $(seq 100); do
    [ "$(haproxy_cmd "show stat" | awk -F, -v s="basalt$i" '($1=="basalt" || $1=="basalt_live") && $2==s {n+=$5} END {print n+0}')" = 0 ] && break
    sleep 0.05
  done
  haproxy_cmd "set server basalt/basalt$i state maint" >/dev/null
  haproxy_cmd "set server basalt_live/basalt$i state maint" >/dev/null
  if alive "basalt$i"; then
    pid=$(cat "$dir/pids/basalt$i")
    kill -TERM "$pid"
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && die "basalt$i (pid $pid) did not stop within 30 s"
  fi
  rm -f "$dir/pids/basalt$i"
}

start_and_enable() {
  local i=$1
  start_instance "$i"
  wait_instance "$i"
  haproxy_cmd "set server basalt/basalt$i state ready" >/dev/null
  haproxy_cmd "set server basalt_live/basalt$i state ready" >/dev/null
  up_state() { [ "$(haproxy_server_state "$1")" = UP ]; }
  wait_for "HAProxy's check of basalt$i" 20 "$dir/logs/haproxy.log" up_state "$i"
}

case $cmd in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
restart-instance) load_state; need_instance; stop_instance "$arg"; start_and_enable "$arg" ;;
stop-instance) load_state; need_instance; stop_instance "$arg" ;;
start-instance) load_state; need_instance; start_and_enable "$arg" ;;
sigterm-instance) # SIGTERM alone, no drain in HAProxy: the instance's own drain delay must do.
  load_state; need_instance
  if alive "basalt$arg"; then
    pid=$(cat "$dir/pids/basalt$arg"); kill -TERM "$pid"
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$dir/pids/basalt$arg" ;;
kill-instance) load_state; need_instance; alive "basalt$arg" && kill -KILL "$(cat "$dir/pids/basalt$arg")"; rm -f "$dir/pids/basalt$arg" ;;
redis-start) load_state; alive redis || start_redis ;;
node-stop | node-kill | node-start)
  load_state
  [[ $arg =~ ^node[12]$ ]] || die "NODE must be node1 or node2"
  n=${arg#node}
  case $cmd in
  node-stop) # Patroni stops its PostgreSQL and gives up the leader key: a quick failover.
    alive "patroni$n" && kill -TERM "$(cat "$dir/pids/patroni$n")"
    for _ in $(seq 300); do alive "patroni$n" || break; sleep 0.1; done
    rm -f "$dir/pids/patroni$n" ;;
  node-kill) # The machine is lost: Patroni and PostgreSQL die at once; the leader key
    # expires after the ttl.
    pm=$(head -1 "$dir/node$n/data/postmaster.pid" 2>/dev/null || true)
    alive "patroni$n" && kill -KILL "$(cat "$dir/pids/patroni$n")"
    [ -n "$pm" ] && kill -KILL "$pm" 2>/dev/null || true
    rm -f "$dir/pids/patroni$n" ;;
  node-start) alive "patroni$n" || spawn "patroni$n" patroni "$dir/node$n/patroni.yml" ;;
  esac
  ;;
*) echo "usage: $0 up|down|status [--instances N] [--dir D] (--help for more)" >&2; exit 2 ;;
esac
