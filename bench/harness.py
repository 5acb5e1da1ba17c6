#!/usr/bin/env python3
"""The benchmark harness behind `make bench` and `bench/run.sh [--quick]`.

Starts Basalt and its peers on 127.0.0.1 (free ports, everything under one temporary
folder, every process stopped by PID at the end), all servers pinned to core 0 and the
load generators to core 1, runs every scenario against every system that implements it,
alternating the systems and repeating the whole round, and writes
bench/results/<date>/{report.md, results.csv, *.png, raw/}.

Every ratio in a report is computed from that report's own runs (medians of its
repetitions); results of different runs are never mixed.
"""
import argparse
import csv
import datetime
import glob
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BENCH_BUILD", os.path.join(ROOT, "build-release"))  # make bench-smoke: build/
PEERS = os.path.join(ROOT, "bench", "peers")
# Servers on the first core, load generators on the second (one core: both share it).
_CORES = sorted(os.sched_getaffinity(0))
SERVER_CORE, LOAD_CORE = str(_CORES[0]), str(_CORES[1] if len(_CORES) > 1 else _CORES[0])
PY = "/usr/bin/python3"
HZ = os.sysconf("SC_CLK_TCK")
SECRET = "bench-secret-for-the-node-peers-0123456789"
NOLIMITS = ["--rate-limit-anon=0", "--rate-limit-user=0", "--rate-limit-burst=0", "--rate-limit-auth=0",
            "--max-connections=0", "--max-connections-per-ip=0"]
# Limits on but out of reach (a million per second): every request is one rate-limit
# decision (in Redis with --redis) and none is refused. The cluster systems run so, as
# a deployment would (limits on); basalt_pg_redis is basalt_pg with them and Redis.
HIGHLIMITS = ["--rate-limit-anon=1000000", "--rate-limit-user=1000000", "--rate-limit-burst=1000000",
              "--rate-limit-period-ms=1000", "--rate-limit-auth=0", "--max-connections=0",
              "--max-connections-per-ip=0"]
# Rows the smoke leaves out to stay within its time (each system and scenario still runs:
# basalt_cluster2 covers every cluster scenario, basalt_cluster1 and basalt_pg_redis the view).
SMOKE_SKIP = {("list30", "basalt_cluster1"), ("create", "basalt_cluster1"), ("mixed_2000", "basalt_cluster1"),
              ("list30", "basalt_pg_redis")}
# The parts of a system whose CPU the cluster table shows, in this order.
PARTS = ["basalt", "haproxy", "pgbouncer", "postgres", "redis"]


def log(*a):
    print(*a, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port, path="/", timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if s.recv(16).startswith(b"HTTP/1."):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing answers on 127.0.0.1:{port}{path}")


def http(method, port, path, body=None, token=None):
    """A small JSON request with the standard library (set-up only, not measured)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", token)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


# --- processes, CPU and memory ---------------------------------------------------------

def process_tree(roots):
    """The given pids and all their descendants that are alive."""
    children = {}
    for st in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(st) as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(st.split("/")[2]))
    out, todo = [], list(roots)
    while todo:
        p = todo.pop()
        if os.path.exists(f"/proc/{p}"):
            out.append(p)
            todo.extend(children.get(p, []))
    return out


def cpu_ticks(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2:].split()
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total


def pss_kib(pids):
    """Proportional set size summed over processes: shared pages (PostgreSQL's shared
    buffers, say) are counted once across a server's processes, not once per process."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmRSS:")))


class MemWatch(threading.Thread):
    """Samples a system's memory every 0.2 s; .peak is the highest sample."""

    def __init__(self, roots):
        super().__init__(daemon=True)
        self.roots, self.peak, self.halt = roots, 0, threading.Event()

    def run(self):
        while not self.halt.is_set():
            self.peak = max(self.peak, pss_kib(process_tree(self.roots)))
            self.halt.wait(0.2)

    def stop(self):
        self.halt.set()
        self.join()
        return self.peak


class System:
    def __init__(self, name, roots, port, **attrs):
        self.name, self.roots, self.port = name, roots, port
        self.__dict__.update(attrs)

    def pids(self):
        return process_tree(self.roots)


class Lab:
    """Owns every process and file the harness starts; stop() ends them all by PID."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="basalt-bench-")
        os.chmod(self.dir, 0o755)
        self.procs = []
        self.stops = []

    def start(self, name, argv, env=None, core=SERVER_CORE, cwd=None):
        out = open(os.path.join(self.dir, f"{name}.log"), "ab")
        e = dict(os.environ, **(env or {}))
        p = subprocess.Popen(["taskset", "-c", core] + argv, stdout=out, stderr=subprocess.STDOUT, env=e,
                             cwd=cwd, start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self):
        for fn in reversed(self.stops):
            try:
                fn()
            except Exception as ex:  # keep stopping the rest
                log(f"stop: {ex}")
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# --- the systems ----------------------------------------------------------------------

def start_basalt(lab, name, data, extra=(), limits=NOLIMITS):
    return start_basalt_bin(lab, name, f"{BUILD}/basalt", data, extra, limits)


def start_basalt_bin(lab, name, binary, data, extra=(), limits=NOLIMITS):
    port = free_port()
    p = lab.start(name, [binary, "serve", f"--http=127.0.0.1:{port}", f"--dir={data}", "--threads=1",
                         "--log-level=warn"] + list(limits) + list(extra))
    wait_http(port, "/api/health")
    return p, port


def superuser_token(port):
    return http("POST", port, "/api/collections/_superusers/auth-with-password",
                {"identity": "bench@example.com", "password": "bench-password-1"})["token"]


def setup_basalt(lab, records):
    """Three Basalt instances on copies of one seeded data folder: the defaults
    (synchronous=NORMAL, crash-safe; cache on), --sync=full (power-safe), and
    --cache-budget-mb=0 (every read goes to SQLite, as the peers' go to PostgreSQL)."""
    data = os.path.join(lab.dir, "basalt")
    subprocess.run([f"{BUILD}/basalt", "superuser", "upsert", "bench@example.com", "bench-password-1",
                    f"--dir={data}"], check=True, stdout=subprocess.DEVNULL)
    p, port = start_basalt(lab, "basalt-seed", data)
    t0 = time.time()
    seeded = json.loads(subprocess.run([PY, os.path.join(ROOT, "bench", "seed.py"), f"http://127.0.0.1:{port}",
                                        superuser_token(port), str(records)],
                                       check=True, capture_output=True, text=True).stdout)
    log(f"  basalt: {records} records seeded through /api/batch in {time.time() - t0:.1f} s")
    p.terminate()
    p.wait()
    shutil.copytree(data, data + "-full")
    shutil.copytree(data, data + "-nocache")
    systems = []
    for name, d, extra in (("basalt", data, []), ("basalt_full", data + "-full", ["--sync=full"]),
                           ("basalt_nocache", data + "-nocache", ["--cache-budget-mb=0"])):
        p, port = start_basalt(lab, name, d, extra)
        systems.append(System(name, [p.pid], port, id=seeded["id"], token=seeded["token"], owner=seeded["user"],
                              parts={"basalt": [p.pid]}, health="/api/health", list_query=(
                                  "/api/collections/bench/records?filter=status%3D%27doing%27%20%26%26%20"
                                  "priority%3E%3D5&sort=-priority&perPage=30")))
    return systems


def pg_bin(tool):
    return sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))[-1]


def setup_postgres(lab, records, pgbench_scale):
    """A PostgreSQL cluster of the harness's own: initdb under the temporary folder,
    loopback only, default durability (fsync, synchronous_commit=on)."""
    data, sock = os.path.join(lab.dir, "pg"), os.path.join(lab.dir, "pgsock")
    as_pg = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        as_pg = ["runuser", "-u", "postgres", "--"]
        for d in (data, sock):
            os.makedirs(d)
            shutil.chown(d, "postgres", "postgres")
    else:
        os.makedirs(sock)
    subprocess.run(as_pg + [pg_bin("initdb"), "-D", data, "-U", "bench", "--auth=trust", "-E", "UTF8"],
                   check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    p = lab.start("postgres", as_pg + [pg_bin("postgres"), "-D", data, "-p", str(port), "-k", sock,
                                       "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300",
                                       "-c", "shared_buffers=128MB"])
    for _ in range(300):
        if subprocess.run([pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                          stdout=subprocess.DEVNULL).returncode == 0:
            break
        time.sleep(0.1)
    env = dict(PGHOST="127.0.0.1", PGPORT=str(port), PGUSER="bench")
    penv = dict(os.environ, **env)
    owner = "benchuser000001"
    t0 = time.time()
    subprocess.run(["createdb", "bench"], env=penv, check=True)
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"n={records}", "-v", f"owner={owner}",
                    "-d", "bench", "-f", os.path.join(PEERS, "schema.sql")], env=penv, check=True,
                   stdout=subprocess.DEVNULL)
    log(f"  postgres: {records} records loaded in {time.time() - t0:.1f} s")
    subprocess.run(["createdb", "pgbench"], env=penv, check=True)
    subprocess.run([pg_bin("pgbench"), "-i", "-q", "-s", str(pgbench_scale), "pgbench"], env=penv, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p, dict(env, PGDATABASE="bench"), owner


def setup_basalt_pg(lab, records, pgenv, extra=(), nocache=True):
    """Basalt on the harness's PostgreSQL through a PgBouncer of its own (transaction
    pooling), seeded through its API like the embedded one: `basalt_pg` with its
    defaults (cache on, as deployed), and, when nocache, `basalt_pg_nocache`, a second
    instance on the same database with the cache off, so that every read goes to
    PostgreSQL as the Node peers' do. extra: more arguments for both (--pg-args)."""
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    penv = dict(os.environ, **pgenv)
    subprocess.run(["createdb", "basalt"], env=penv, check=True)
    pgb = free_port()
    ini = os.path.join(lab.dir, "pgbouncer.ini")
    with open(ini, "w") as f:
        f.write(f"[databases]\n* = host=127.0.0.1 port={pgenv['PGPORT']}\n[pgbouncer]\nlisten_addr = 127.0.0.1\n"
                f"listen_port = {pgb}\nunix_socket_dir =\nauth_type = trust\n"
                f"auth_file = {lab.dir}/pgb-users.txt\npool_mode = transaction\nmax_client_conn = 500\n"
                "default_pool_size = 16\nquery_wait_timeout = 10\n"
                "ignore_startup_parameters = extra_float_digits,application_name\n")
    with open(os.path.join(lab.dir, "pgb-users.txt"), "w") as f:
        f.write('"bench" ""\n')
    if as_pg:
        for fn in (ini, os.path.join(lab.dir, "pgb-users.txt")):
            shutil.chown(fn, "postgres", "postgres")
    bp = lab.start("pgbouncer", as_pg + ["/usr/sbin/pgbouncer", ini])
    for _ in range(100):
        if subprocess.run(["psql", f"postgres://bench@127.0.0.1:{pgb}/basalt", "-qAt", "-c", "SELECT 1"],
                          capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    data = os.path.join(lab.dir, "basalt-pg")
    # The production configuration: reads through PgBouncer, LISTEN and the writer on
    # direct sessions of their own (ADR 0018: the writer prepares its statements).
    db = [f"--db=postgres://bench@127.0.0.1:{pgb}/basalt",
          f"--db-listen=postgres://bench@127.0.0.1:{pgenv['PGPORT']}/basalt",
          f"--db-writer=postgres://bench@127.0.0.1:{pgenv['PGPORT']}/basalt"]
    subprocess.run([f"{BUILD}/basalt", "superuser", "upsert", "bench@example.com", "bench-password-1",
                    f"--dir={data}"] + db, check=True, stdout=subprocess.DEVNULL)
    # --batch-timeout-ms: the seeding's batches of 100 creates may pass the default 3 s
    # on a loaded machine; the scenarios send no batches.
    p, port = start_basalt(lab, "basalt_pg", data, db + ["--batch-timeout-ms=60000"] + list(extra))
    t0 = time.time()
    seeded = json.loads(subprocess.run([PY, os.path.join(ROOT, "bench", "seed.py"), f"http://127.0.0.1:{port}",
                                        superuser_token(port), str(records)],
                                       check=True, stdout=subprocess.PIPE, text=True).stdout)
    log(f"  basalt_pg: {records} records seeded through /api/batch in {time.time() - t0:.1f} s")
    lq = "/api/collections/bench/records?filter=status%3D%27doing%27%20%26%26%20priority%3E%3D5&sort=-priority&perPage=30"
    # What the cluster systems and the Redis rows start on: the same database, seeded once.
    lab.pgb_port, lab.pgb_pid, lab.pg_db, lab.seeded, lab.list_query = pgb, bp.pid, db, seeded, lq
    out = [System("basalt_pg", [p.pid, bp.pid, lab.pg_pid], port, id=seeded["id"], token=seeded["token"],
                  owner=seeded["user"], health="/api/health", list_query=lq,
                  parts={"basalt": [p.pid], "pgbouncer": [bp.pid], "postgres": [lab.pg_pid]})]
    if nocache:
        p2, port2 = start_basalt(lab, "basalt_pg_nocache", data + "-nocache", db + ["--cache-budget-mb=0"] + list(extra))
        out.append(System("basalt_pg_nocache", [p2.pid, bp.pid, lab.pg_pid], port2, id=seeded["id"],
                          token=seeded["token"], owner=seeded["user"], health="/api/health", list_query=lq,
                          parts={"basalt": [p2.pid], "pgbouncer": [bp.pid], "postgres": [lab.pg_pid]}))
    return out


def shared_redis(lab):
    """The Redis of the Basalt systems that use one (started once; apart from the
    `redis` system that redis-benchmark loads, so that its CPU is theirs alone)."""
    if getattr(lab, "redis_port", None) is None:
        r = setup_redis(lab, "redis-basalt")
        lab.redis_port, lab.redis_pid = r.port, r.roots[0]
    return lab.redis_port, lab.redis_pid


def pg_system(lab, name, procs, port, extra_parts=None, **attrs):
    """A System on the seeded PostgreSQL database: procs are its Basalt processes; its
    roots and parts add PgBouncer, PostgreSQL and (extra_parts) HAProxy or Redis."""
    parts = {"basalt": [p.pid for p in procs], "pgbouncer": [lab.pgb_pid], "postgres": [lab.pg_pid]}
    parts.update(extra_parts or {})
    roots = [r for rs in parts.values() for r in rs]
    s = lab.seeded
    return System(name, roots, port, id=s["id"], token=s["token"], owner=s["user"], health="/api/health",
                  list_query=lab.list_query, parts=parts, **attrs)


def setup_redis_systems(lab, want_redis, want_l2):
    """basalt_pg with Redis: `basalt_pg_redis` (limits on, out of reach: every request
    one decision in Redis; otherwise basalt_pg's defaults), and `basalt_pg_l2` (no
    limits, an in-process cache of 1 MiB so that the L2 scenarios' many keys miss it
    and go to Redis's L2 tier)."""
    rport, rpid = shared_redis(lab)
    redis = [f"--redis=redis://127.0.0.1:{rport}"]
    out = []
    if want_redis:
        p, port = start_basalt(lab, "basalt_pg_redis", os.path.join(lab.dir, "basalt-pg-redis"),
                               lab.pg_db + redis, limits=HIGHLIMITS)
        out.append(pg_system(lab, "basalt_pg_redis", [p], port, {"redis": [rpid]}, metrics=True))
    if want_l2:
        p, port = start_basalt(lab, "basalt_pg_l2", os.path.join(lab.dir, "basalt-pg-l2"),
                               lab.pg_db + redis + ["--cache-budget-mb=1"])
        out.append(pg_system(lab, "basalt_pg_l2", [p], port, {"redis": [rpid]}, metrics=True))
    return out


def start_haproxy(lab, name, ports):
    """HAProxy in front of the given Basalt ports: HTTP mode, leastconn, keep-alive to
    the instances, readiness checks every second, X-Forwarded-For (the instances trust
    127.0.0.1), no request log; one thread (it is pinned to the server core)."""
    port = free_port()
    cfg = os.path.join(lab.dir, f"{name}.cfg")
    servers = "".join(f"    server b{i} 127.0.0.1:{p} check inter 1s\n" for i, p in enumerate(ports, 1))
    with open(cfg, "w") as f:
        f.write(f"""global
    maxconn 6000
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    option forwardfor
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    balance leastconn
    option httpchk GET /api/health?ready=1
{servers}""")
    p = lab.start(name, ["haproxy", "-db", "-f", cfg])
    wait_http(port, "/api/health")
    for _ in range(100):  # HAProxy answers before its first checks have passed: wait for a 200
        if get(port, "/api/health")[0] == 200:
            break
        time.sleep(0.1)
    return p, port


def setup_cluster(lab, want1, want2):
    """`basalt_cluster1`: HAProxy in front of one instance; `basalt_cluster2`: another
    HAProxy in front of that instance and a second one. Both instances on the seeded
    database through the same PgBouncer, with --db-listen, the shared Redis and limits
    on (out of reach), as deployed. On this machine every part is pinned to the server
    core, so the second instance measures the overhead of two, not scale-out."""
    rport, rpid = shared_redis(lab)
    extra = lab.pg_db + [f"--redis=redis://127.0.0.1:{rport}", "--trusted-proxies=127.0.0.1"]
    pa, porta = start_basalt(lab, "basalt-c-a", os.path.join(lab.dir, "basalt-c-a"), extra, limits=HIGHLIMITS)
    out = []
    if want1:
        h1, hport1 = start_haproxy(lab, "haproxy-c1", [porta])
        out.append(pg_system(lab, "basalt_cluster1", [pa], hport1, {"haproxy": [h1.pid], "redis": [rpid]},
                             instance_ports=[porta]))
    if want2:
        pb, portb = start_basalt(lab, "basalt-c-b", os.path.join(lab.dir, "basalt-c-b"), extra, limits=HIGHLIMITS)
        h2, hport2 = start_haproxy(lab, "haproxy-c2", [porta, portb])
        out.append(pg_system(lab, "basalt_cluster2", [pa, pb], hport2, {"haproxy": [h2.pid], "redis": [rpid]},
                             instance_ports=[porta, portb]))
    return out


def node_token(owner):
    return subprocess.run(["node", "-e", "process.stdout.write(require('jsonwebtoken').sign("
                           f"{{sub: '{owner}'}}, '{SECRET}', {{expiresIn: '2h'}}))"],
                          cwd=PEERS, check=True, capture_output=True, text=True).stdout


def jwt_costs():
    """Microseconds per token check with each Node verifier, measured here: the
    report's explanation of the peers' authenticated figures."""
    js = ("process.env.BENCH_JWT_SECRET = 'x'.repeat(40); const c = require('./common');"
          "const t = require('jsonwebtoken').sign({sub: 'a'}, process.env.BENCH_JWT_SECRET);"
          "const out = {}; for (const k of ['jsonwebtoken', 'fastjwt']) { const v = c.verifiers[k];"
          "for (let i = 0; i < 2000; i++) v(t); const t0 = process.hrtime.bigint();"
          "for (let i = 0; i < 20000; i++) v(t); out[k] = Number(process.hrtime.bigint() - t0) / 1e3 / 20000; }"
          "console.log(JSON.stringify(out)); process.exit(0);")
    r = subprocess.run(["taskset", "-c", SERVER_CORE, "node", "-e", js], cwd=PEERS, capture_output=True, text=True)
    try:
        return json.loads(r.stdout)
    except ValueError:
        return {}


def setup_node(lab, name, script, pg, pgenv, owner, token):
    port = free_port()
    p = lab.start(name, ["node", script, str(port)],
                  env=dict(pgenv, BENCH_JWT_SECRET=SECRET, NODE_ENV="production"), cwd=PEERS)
    wait_http(port, "/api/health")
    return System(name, [p.pid, pg.pid], port, id="0" * 15, token=token, owner=owner, health="/api/health",
                  list_query="/api/collections/bench/records?status=doing&minPriority=5&sort=-priority&perPage=30")


def setup_nginx(lab):
    port = free_port()
    prefix = os.path.join(lab.dir, "nginx")
    os.makedirs(os.path.join(prefix, "logs"))
    body = '{"message":"API is healthy.","code":200,"data":{}}'
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{ default_type application/json; return 200 '{body}'; }}
  }}
}}
""")
    p = lab.start("nginx", ["nginx", "-p", prefix, "-c", conf])
    wait_http(port)
    return System("nginx", [p.pid], port, health="/")


def setup_bare(lab):
    port = free_port()
    p = lab.start("h2o_bare", [f"{BUILD}/h2o_bare", str(port), "1"])
    wait_http(port)
    return System("bare_h2o", [p.pid], port, health="/")


def setup_redis(lab, name="redis"):
    port = free_port()
    p = lab.start(name, ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                            "--appendonly", "no", "--dir", lab.dir])
    for _ in range(100):
        if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() == b"PONG":
            break
        time.sleep(0.1)
    return System("redis", [p.pid], port)


# --- load generators ------------------------------------------------------------------

def to_ms(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
    n, unit = float(m.group(1)), m.group(2)
    return n / 1000 if unit == "us" else n if unit == "ms" else n * 1000 if unit == "s" else n * 60000


def wrk(url, conns, secs, headers=(), script=None, env=None):
    argv = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--latency", "--timeout", "10s"]
    for h in headers:
        argv += ["-H", h]
    if script:
        argv += ["-s", script]
    out = subprocess.run(argv + [url], capture_output=True, text=True, env=dict(os.environ, **(env or {}))).stdout
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    m = re.search(r"(\d+) requests in", out)
    if m is None or "50" not in lat:  # nothing answered: no distribution to read
        return dict(rps=0.0, p50=float("nan"), p99=float("nan"), n=0, errors=conns), out
    n = int(m.group(1))
    errors = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:  # read errors are left out: a server closing an idle keep-alive connection causes them
        errors += int(sock.group(1)) + int(sock.group(3)) + int(sock.group(4))
    return dict(rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), p50=to_ms(lat["50"]),
                p99=to_ms(lat["99"]), n=n, errors=errors), out


def rateload(url, rate, secs, conns=64, headers=(), method="GET", body=None):
    argv = ["taskset", "-c", LOAD_CORE, f"{BUILD}/rateload", "-r", str(rate), "-d", str(secs), "-c", str(conns),
            "-w", str(min(1.0, secs / 4)), "-m", method]
    for h in headers:
        argv += ["-H", h]
    if body is not None:
        argv += ["-b", body, "-H", "Content-Type: application/json"]
    out = subprocess.run(argv + [url], capture_output=True, text=True).stdout
    kv = dict(x.split("=") for x in out.split())
    ok, errors = int(kv["ok"]), int(kv["errors"])
    return dict(rps=float(kv["achieved"]), p50=float(kv["p50"]), p99=float(kv["p99"]), n=int(kv["all"]),
                errors=errors, p999=float(kv["p99.9"])), out


def pgbench(pgenv, secs, mode="prepared", port=None):
    """pgbench -S: directly with prepared statements (PostgreSQL's ceiling), or with port
    (PgBouncer's) and mode simple, as Basalt's reads go through it (no prepared
    statements in transaction mode): the ceiling on Basalt's own path."""
    env = dict(os.environ, **pgenv)
    if port:
        env["PGPORT"] = str(port)
    out = subprocess.run(["taskset", "-c", LOAD_CORE, pg_bin("pgbench"), "-S", "-M", mode, "-c", "16", "-j", "1",
                          "-T", str(secs), "pgbench"],
                         capture_output=True, text=True, env=env).stdout
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
    lat = float(re.search(r"latency average = ([\d.]+) ms", out).group(1))
    n = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))
    failed = re.search(r"number of failed transactions: (\d+)", out)
    return dict(rps=tps, p50=lat, p99=float("nan"), n=n, errors=int(failed.group(1)) if failed else 0), out


def redis_bench(port, test, n):
    out = subprocess.run(["taskset", "-c", LOAD_CORE, "redis-benchmark", "-p", str(port), "-c", "64", "-n", str(n),
                          "-t", test, "--csv"], capture_output=True, text=True).stdout
    row = list(csv.DictReader(out.strip().splitlines()))[0]
    return dict(rps=float(row["rps"]), p50=float(row["p50_latency_ms"]), p99=float(row["p99_latency_ms"]), n=n,
                errors=0), out


def rtload(mode, port, *args):
    return subprocess.Popen(["taskset", "-c", LOAD_CORE, f"{BUILD}/rtload", mode, str(port)] + [str(a) for a in args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# --- scenarios ------------------------------------------------------------------------

LUA_CREATE = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("TOKEN")
local owner, i = os.getenv("OWNER"), 0
request = function()
  i = i + 1
  return wrk.format(nil, nil, nil, '{"title":"c' .. i .. '","status":"todo","priority":3,"owner":"' .. owner .. '"}')
end
"""
LUA_MIXED = """-- 90% authenticated reads of one record, 10% durable creates
local id, token, owner, i = os.getenv("ID"), os.getenv("TOKEN"), os.getenv("OWNER"), 0
request = function()
  i = i + 1
  if i % 10 == 0 then
    return wrk.format("POST", "/api/collections/bench/records",
      {["Content-Type"] = "application/json", ["Authorization"] = token},
      '{"title":"m' .. i .. '","status":"doing","priority":1,"owner":"' .. owner .. '"}')
  end
  return wrk.format("GET", "/api/collections/bench/records/" .. id, {["Authorization"] = token})
end
"""
LUA_L2 = """-- the owner's record view, each request under another cache key: `fields` names the
-- record's fields and one that does not exist (ignored in the answer, but part of the
-- key of both cache tiers). KEYS=0: keys never seen (NONCE is new); KEYS=n: the n keys
-- of the run before, again and again.
local id, token, nonce, keys, i = os.getenv("ID"), os.getenv("TOKEN"), os.getenv("NONCE"), tonumber(os.getenv("KEYS")), 0
request = function()
  i = i + 1
  local k = i
  if keys > 0 then k = i % keys + 1 end
  return wrk.format("GET", "/api/collections/bench/records/" .. id ..
    "?fields=id,title,status,priority,owner,created,updated," .. nonce .. k, {["Authorization"] = token})
end
"""


def http_scenarios(cfg, lab):
    """(scenario, description, systems, run(system) -> (figures, raw output))."""
    lua = {}
    for name, text in (("create", LUA_CREATE), ("mixed", LUA_MIXED), ("l2", LUA_L2)):
        lua[name] = os.path.join(lab.dir, f"{name}.lua")
        with open(lua[name], "w") as f:
            f.write(text)

    def base(s):
        return f"http://127.0.0.1:{s.port}"

    def env(s):
        return dict(ID=s.id, TOKEN=s.token, OWNER=s.owner)

    d = cfg.secs

    def l2_fresh(s):
        """Keys never seen: a miss in both tiers, a database read, then stored."""
        s.l2_nonce = f"n{time.time_ns() % 10 ** 12}k"
        fig, raw = wrk(f"{base(s)}/", 64, d, script=lua["l2"], env=dict(env(s), NONCE=s.l2_nonce, KEYS="0"))
        s.l2_keys = max(1, fig["n"])
        return fig, raw

    def l2_again(s):
        """The keys of the run before, cycled: basalt_pg finds them in its cache; basalt_pg_l2,
        whose 1 MiB cache holds a fraction of them, mostly in Redis's L2 tier."""
        return wrk(f"{base(s)}/", 64, d, script=lua["l2"],
                   env=dict(env(s), NONCE=getattr(s, "l2_nonce", "none"), KEYS=str(getattr(s, "l2_keys", 1))))

    cl = ["basalt_cluster1", "basalt_cluster2"]
    return [
        ("health", "GET health, a fixed small JSON body (64 connections)",
         ["nginx", "bare_h2o", "basalt", "express", "fastify"],
         lambda s: wrk(base(s) + s.health, 64, d)),
        ("view", "authenticated record view by id, rule `owner = @request.auth.id` (64 connections)",
         ["basalt", "basalt_nocache", "basalt_pg", "basalt_pg_nocache", "basalt_pg_redis", *cl, "express", "fastify"],
         lambda s: wrk(f"{base(s)}/api/collections/bench/records/{s.id}", 64, d, [f"Authorization: {s.token}"])),
        ("list30", f"filtered (status, priority), sorted list of 30 from {cfg.records:,} records, with the total",
         ["basalt", "basalt_nocache", "basalt_pg", "basalt_pg_nocache", "basalt_pg_redis", *cl, "express", "fastify"],
         lambda s: wrk(base(s) + s.list_query, 64, d)),
        ("list30_skiptotal", "the same list without the total (skipTotal=1)",
         ["basalt", "basalt_nocache", "basalt_pg", "basalt_pg_nocache", "express", "fastify"],
         lambda s: wrk(base(s) + s.list_query + "&skipTotal=1", 64, d)),
        ("create", "authenticated durable create (64 connections)",
         ["basalt", "basalt_full", "basalt_pg", "basalt_pg_redis", *cl, "express", "fastify"],
         lambda s: wrk(f"{base(s)}/api/collections/bench/records", 64, d, script=lua["create"], env=env(s))),
        ("mixed_2000", "90% authenticated views / 10% creates, 2,000 concurrent connections",
         ["basalt", "basalt_pg", *cl, "express", "fastify"],
         # The smoke checks that every system answers the mix, in 2 s next to other
         # suites: 2,000 connections to a Node peer then may not finish one request.
         lambda s: wrk(base(s), 200 if cfg.smoke else 2000, d, script=lua["mixed"], env=env(s))),
        ("view_l2miss", "the authenticated view, every request under a cache key never seen (`fields` with an "
         "unknown name): a miss in the in-process cache and, with Redis, in its L2 tier; a database read",
         ["basalt_pg", "basalt_pg_l2"], l2_fresh),
        ("view_l2hit", "the same keys again, cycled: basalt_pg answers from its in-process cache, basalt_pg_l2 "
         "(1 MiB in-process cache) mostly from Redis's L2 tier",
         ["basalt_pg", "basalt_pg_l2"], l2_again),
        ("view_rate", f"constant rate: {cfg.view_rate:,} authenticated views/s (open loop, latency from due time)",
         ["basalt", "basalt_nocache", "basalt_pg", "basalt_pg_nocache", "express", "fastify"],
         lambda s: rateload(f"{base(s)}/api/collections/bench/records/{s.id}", cfg.view_rate, d,
                            headers=[f"Authorization: {s.token}"])),
        ("list_rate", f"constant rate: {cfg.list_rate:,} filtered lists/s with the total",
         ["basalt", "basalt_nocache", "basalt_pg", "basalt_pg_nocache", "express", "fastify"],
         lambda s: rateload(base(s) + s.list_query, cfg.list_rate, d)),
        ("create_rate", f"constant rate: {cfg.create_rate:,} authenticated creates/s",
         ["basalt", "basalt_full", "basalt_pg", "express", "fastify"],
         lambda s: rateload(f"{base(s)}/api/collections/bench/records", cfg.create_rate, d,
                            headers=[f"Authorization: {s.token}"], method="POST",
                            body='{"title":"r{n}","status":"todo","priority":3,"owner":"%s"}' % s.owner)),
    ]


def get(port, path, token=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("authorization", token)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None


def verify(systems, records):
    """Before anything is measured: every system answers each scenario alike (the same
    record for the owner and nothing for a guest, the same 30 items and total for the
    list, a create that belongs to the caller). Raises on the first difference."""
    expect_total = sum(1 for i in range(records) if i % 3 == 1 and i % 10 >= 5)
    for name in ("basalt", "basalt_full", "basalt_nocache", "basalt_pg", "basalt_pg_nocache", "basalt_pg_redis",
                 "basalt_pg_l2", "basalt_cluster1", "basalt_cluster2", "express", "fastify"):
        s = systems.get(name)
        if s is None:  # not among --systems
            continue
        st, rec = get(s.port, f"/api/collections/bench/records/{s.id}", s.token)
        assert st == 200 and rec["owner"] == s.owner and rec["title"] == "task 0", (name, st, rec)
        st, _ = get(s.port, f"/api/collections/bench/records/{s.id}")
        assert st in (401, 404), (name, "a guest's view", st)
        st, page = get(s.port, s.list_query)
        items = page["items"]
        assert st == 200 and page["totalItems"] == expect_total and len(items) == min(30, expect_total), \
            (name, st, page.get("totalItems"), len(items))
        assert all(x["status"] == "doing" and x["priority"] >= 5 for x in items), name
        assert [x["priority"] for x in items] == sorted((x["priority"] for x in items), reverse=True), name
        created = http("POST", s.port, "/api/collections/bench/records",
                       {"title": "verify", "status": "todo", "priority": 3, "owner": s.owner}, s.token)
        assert created["owner"] == s.owner and created["title"] == "verify", (name, created)
        for p in getattr(s, "instance_ports", []):  # behind HAProxy: each instance answers alike too
            st, rec = get(p, f"/api/collections/bench/records/{s.id}", s.token)
            assert st == 200 and rec["owner"] == s.owner and rec["title"] == "task 0", (name, p, st, rec)
            st, page = get(p, s.list_query)
            assert st == 200 and page["totalItems"] == expect_total, (name, p, st, page.get("totalItems"))
        if name in ("basalt_pg", "basalt_pg_l2"):  # the L2 scenarios' view: the unknown field is left out
            st, rec = get(s.port, f"/api/collections/bench/records/{s.id}?fields=id,title,owner,nverify1", s.token)
            assert st == 200 and rec == {"id": s.id, "title": "task 0", "owner": s.owner}, (name, st, rec)
    for name in ("nginx", "bare_h2o"):
        s = systems.get(name)
        if s is None:
            continue
        st, body = get(s.port, s.health)
        assert st == 200 and body["code"] == 200, (name, st, body)


def basalt_metrics(port):
    """The Redis counters of one Basalt instance (GET /metrics): L2 hits and misses,
    decisions taken locally, time-outs; {} when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
    except (OSError, ValueError):
        return {}
    out = {}
    for key, pat in (("l2hit", r'basalt_cache_l2_total\{result="hit"\} (\d+)'),
                     ("l2miss", r'basalt_cache_l2_total\{result="miss"\} (\d+)'),
                     ("local", r"basalt_ratelimit_local_decisions_total (\d+)"),
                     ("timeouts", r"basalt_redis_timeouts_total (\d+)")):
        m = re.search(pat, text)
        if m:
            out[key] = int(m.group(1))
    return out


def parts_cpu(system):
    """CPU ticks per part of a system (parts: part -> root pids)."""
    return {k: cpu_ticks(process_tree(v)) for k, v in getattr(system, "parts", {}).items()}


def measure(system, fn):
    pids = system.pids()
    idle = pss_kib(pids)
    c0, p0 = cpu_ticks(pids), parts_cpu(system)
    m0 = basalt_metrics(system.port) if getattr(system, "metrics", False) else {}
    w = MemWatch(system.roots)
    w.start()
    figures, raw = fn()
    peak = max(w.stop(), idle)
    c1, p1 = cpu_ticks(system.pids()), parts_cpu(system)
    n = figures["n"]
    figures.update(mem_idle_kib=idle, mem_peak_kib=peak,
                   cpu_us=(c1 - c0) / HZ * 1e6 / n if n else float("nan"),
                   parts=";".join(f"{k}={(p1[k] - p0[k]) / HZ * 1e6 / n:.1f}" for k in p0) if n else "")
    if m0:  # what the run did in Redis, from the instance's counters
        m1 = basalt_metrics(system.port)
        figures["note"] = " ".join(f"{k}={m1.get(k, 0) - v}" for k, v in m0.items())
    return figures, raw


FIELDS = ["scenario", "system", "run", "rps", "p50", "p99", "errors", "cpu_us", "mem_idle_kib", "mem_peak_kib",
          "parts", "note"]


class Results(list):
    """The rows of results.csv, each written as soon as it is measured: a run that
    fails late keeps everything measured before (and `--report DIR` can use it)."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        with open(path, "w", newline="") as f:
            csv.DictWriter(f, FIELDS).writeheader()

    def append(self, row):
        super().append(row)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, FIELDS).writerow(row)


def settle(pid, timeout=60):
    """Waits until a server has closed the connections of the last run (its open
    descriptors stop falling and are few), so runs do not overlap."""
    deadline, last = time.time() + timeout, -1
    while time.time() < deadline:
        try:
            n = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            return
        if n < 200 and n == last:
            return
        last = n
        time.sleep(0.5)


def rt_basalt(lab, tag, idle_max):
    """A Basalt of its own for a realtime run, with collection `bench` (field t)."""
    data = os.path.join(lab.dir, f"basalt-rt-{tag}")
    subprocess.run([f"{BUILD}/basalt", "superuser", "upsert", "bench@example.com", "bench-password-1",
                    f"--dir={data}"], check=True, stdout=subprocess.DEVNULL)
    p, port = start_basalt(lab, f"basalt-rt-{tag}", data, [f"--realtime-max-connections={idle_max + 100}"])
    tok = superuser_token(port)
    http("POST", port, "/api/collections", {"name": "bench", "listRule": "", "viewRule": "",
                                             "fields": [{"name": "t", "type": "number"}]}, tok)
    return System("basalt", [p.pid], port, token=tok, proc=p)


def rt_node(lab, tag, pgenv):
    port = free_port()
    p = lab.start(f"node_ws-{tag}", ["node", "ws_fanout.js", str(port)],
                  env=dict(pgenv, BENCH_JWT_SECRET=SECRET, NODE_ENV="production"), cwd=PEERS)
    wait_http(port, "/api/health")
    return System("node_ws", [p.pid], port, proc=p)


def realtime(cfg, lab, results, raw_dir, ws_peer, pgenv):
    """Idle WebSocket memory (a fresh server process for every run, so that memory kept
    by earlier runs does not hide the cost) and fan-out, Basalt against Node + ws."""
    fan = rt_basalt(lab, "fanout", cfg.idle)
    systems = [fan, ws_peer]
    for r in range(cfg.repeat):
        for name in ("basalt", "node_ws") if r % 2 == 0 else ("node_ws", "basalt"):
            s = rt_basalt(lab, f"idle{r}", cfg.idle) if name == "basalt" else rt_node(lab, f"idle{r}", pgenv)
            time.sleep(1)
            idle = pss_kib(s.pids())
            load = rtload("idle", s.port, cfg.idle)
            line = load.stdout.readline().strip()
            time.sleep(2)
            m = re.search(r"subscribed (\d+)", line)
            held = int(m.group(1)) if m else 0
            mem = pss_kib(s.pids())
            load.terminate()
            load.wait()
            s.proc.terminate()
            s.proc.wait()
            per = (mem - idle) * 1024 / held if held else float("nan")
            log(f"  rt_idle      {s.name:<12} run {r + 1}: {held:>6} connections, {per:,.0f} bytes each "
                f"(PSS {idle / 1024:.1f} -> {mem / 1024:.1f} MiB)")
            results.append(dict(scenario="rt_idle", system=s.name, run=r + 1, rps=held, p50=per, p99=float("nan"),
                                errors=cfg.idle - held, cpu_us=float("nan"), mem_idle_kib=idle, mem_peak_kib=mem))
            with open(os.path.join(raw_dir, f"rt_idle-{s.name}-{r + 1}.txt"), "w") as f:
                f.write(line + "\n")
        for s in systems if r % 2 == 0 else systems[::-1]:
            idle = pss_kib(s.pids())
            c0 = cpu_ticks(s.pids())
            w = MemWatch(s.roots)
            w.start()
            load = rtload("fanout", s.port, cfg.subs, cfg.events, cfg.event_rate, s.token)
            out = load.communicate()[0]
            peak = max(w.stop(), idle)
            m = re.search(r"deliveries (\d+) of (\d+) in ([\d.]+) s = (\d+) deliveries/s; latency p50 ([\d.]+) ms "
                          r"p99 ([\d.]+) ms", out)
            with open(os.path.join(raw_dir, f"rt_fanout-{s.name}-{r + 1}.txt"), "w") as f:
                f.write(out)
            if m is None:  # the load generator could not run: a failed run, kept in the report
                log(f"  rt_fanout    {s.name:<12} run {r + 1}: FAILED: {out.strip()[-200:]}")
                results.append(dict(scenario="rt_fanout", system=s.name, run=r + 1, rps=0.0, p50=float("nan"),
                                    p99=float("nan"), errors=cfg.subs * cfg.events, cpu_us=float("nan"),
                                    mem_idle_kib=idle, mem_peak_kib=peak))
                settle(s.roots[0])
                continue
            got, want = int(m.group(1)), int(m.group(2))
            cpu = (cpu_ticks(s.pids()) - c0) / HZ * 1e6 / got if got else float("nan")
            log(f"  rt_fanout    {s.name:<12} run {r + 1}: {int(m.group(4)):>10,} deliveries/s  p50 {m.group(5)} ms  "
                f"p99 {m.group(6)} ms  ({got:,} of {want:,})")
            results.append(dict(scenario="rt_fanout", system=s.name, run=r + 1, rps=float(m.group(4)),
                                p50=float(m.group(5)), p99=float(m.group(6)), errors=want - got, cpu_us=cpu,
                                mem_idle_kib=idle, mem_peak_kib=peak))
            settle(s.roots[0])


def rt_cluster(cfg, lab, results, raw_dir, pgenv, names):
    """Fan-out across instances: two instances on a database of their own (collection
    `bench` with field t; through the harness's PgBouncer, --db-listen, the shared
    Redis), every event created through instance A. basalt_cluster1: every subscriber on
    A; basalt_cluster2: subscribers alternate between A and B (rtload's RTLOAD_PORTS),
    so half the deliveries cross from A to B (A's outbox, PostgreSQL's NOTIFY, B's read
    of the outbox). Subscribers connect to the instances directly (HAProxy would only
    add its tunnel). CPU per delivery is that of both instances, PgBouncer, PostgreSQL
    and Redis."""
    subprocess.run(["createdb", "basalt_rt"], env=dict(os.environ, **pgenv), check=True)
    rport, rpid = shared_redis(lab)
    db = [f"--db=postgres://bench@127.0.0.1:{lab.pgb_port}/basalt_rt",
          f"--db-listen=postgres://bench@127.0.0.1:{pgenv['PGPORT']}/basalt_rt"]
    # Redis database 1: the rate-limit and L2 keys of the other deployment are apart.
    extra = db + [f"--redis=redis://127.0.0.1:{rport}/1", f"--realtime-max-connections={cfg.subs + 100}"]
    da = os.path.join(lab.dir, "basalt-rt-a")
    subprocess.run([f"{BUILD}/basalt", "superuser", "upsert", "bench@example.com", "bench-password-1",
                    f"--dir={da}"] + db, check=True, stdout=subprocess.DEVNULL)
    pa, porta = start_basalt(lab, "basalt-rt-a", da, extra)
    tok = superuser_token(porta)
    http("POST", porta, "/api/collections", {"name": "bench", "listRule": "", "viewRule": "",
                                              "fields": [{"name": "t", "type": "number"}]}, tok)
    pb, portb = start_basalt(lab, "basalt-rt-b", os.path.join(lab.dir, "basalt-rt-b"), extra)
    parts = {"basalt": [pa.pid, pb.pid], "pgbouncer": [lab.pgb_pid], "postgres": [lab.pg_pid], "redis": [rpid]}
    runs = [(n, ports) for n, ports in (("basalt_cluster1", [porta]), ("basalt_cluster2", [porta, portb]))
            if n in names]
    for r in range(cfg.repeat):
        for name, ports in runs if r % 2 == 0 else runs[::-1]:
            s = System(name, [x for v in parts.values() for x in v], porta, parts=parts)
            idle = pss_kib(s.pids())
            c0, p0 = cpu_ticks(s.pids()), parts_cpu(s)
            w = MemWatch(s.roots)
            w.start()
            load = subprocess.Popen(["taskset", "-c", LOAD_CORE, f"{BUILD}/rtload", "fanout", str(porta),
                                     str(cfg.subs), str(cfg.events), str(cfg.event_rate), tok],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    env=dict(os.environ, RTLOAD_PORTS=",".join(map(str, ports))))
            out = load.communicate()[0]
            peak = max(w.stop(), idle)
            with open(os.path.join(raw_dir, f"rt_fanout-{name}-{r + 1}.txt"), "w") as f:
                f.write(out)
            m = re.search(r"deliveries (\d+) of (\d+) in ([\d.]+) s = (\d+) deliveries/s; latency p50 ([\d.]+) ms "
                          r"p99 ([\d.]+) ms", out)
            if m is None:
                log(f"  rt_fanout    {name:<12} run {r + 1}: FAILED: {out.strip()[-200:]}")
                results.append(dict(scenario="rt_fanout", system=name, run=r + 1, rps=0.0, p50=float("nan"),
                                    p99=float("nan"), errors=cfg.subs * cfg.events, cpu_us=float("nan"),
                                    mem_idle_kib=idle, mem_peak_kib=peak))
            else:
                got, want = int(m.group(1)), int(m.group(2))
                p1 = parts_cpu(s)
                cpu = (cpu_ticks(s.pids()) - c0) / HZ * 1e6 / got if got else float("nan")
                log(f"  rt_fanout    {name:<12} run {r + 1}: {int(m.group(4)):>10,} deliveries/s  p50 {m.group(5)} ms  "
                    f"p99 {m.group(6)} ms  ({got:,} of {want:,}; {len(ports)} instance(s))")
                results.append(dict(scenario="rt_fanout", system=name, run=r + 1, rps=float(m.group(4)),
                                    p50=float(m.group(5)), p99=float(m.group(6)), errors=want - got, cpu_us=cpu,
                                    mem_idle_kib=idle, mem_peak_kib=peak,
                                    parts=";".join(f"{k}={(p1[k] - p0[k]) / HZ * 1e6 / got:.1f}" for k in p0)
                                    if got else ""))
            for p in (pa, pb):
                settle(p.pid)


# --- the report -----------------------------------------------------------------------

ORDER = ["basalt", "basalt_full", "basalt_nocache", "basalt_pg", "basalt_pg_nocache", "basalt_pg_redis",
         "basalt_pg_l2", "basalt_cluster1", "basalt_cluster2", "bare_h2o", "nginx", "express", "fastify", "node_ws", "postgres", "postgres_pgb",
         "redis"]


def report(cfg, out, results, descriptions, started):
    agg = {}
    for r in results:
        agg.setdefault((r["scenario"], r["system"]), []).append(r)

    def med(scen, system, key):
        rows = agg.get((scen, system))
        vals = [v for v in (float(x[key]) for x in rows or []) if v == v]  # drop NaN
        return statistics.median(vals) if vals else float("nan")

    def errs(scen, system):
        return sum(int(x["errors"]) for x in agg[(scen, system)])

    def div(a, b):
        return a / b if b == b and b else float("nan")

    scenarios = list(dict.fromkeys(r["scenario"] for r in results))
    L = [f"# Benchmark report {started:%Y-%m-%d %H:%M} UTC", "",
         f"Command: `{cfg.command}` — {cfg.records:,} records, {cfg.secs} s per run, {cfg.repeat} round(s) with "
         "the systems alternating (figures are medians of the rounds). Every server is pinned to core 0 with one "
         "worker (Basalt `--threads=1`, nginx `worker_processes 1`, one Node process; PostgreSQL's processes share "
         "core 0 with the Node peer using them), every load generator to core 1. Closed loop: wrk -t1. Constant rate: "
         "bench/rateload (latency from each request's due time). Memory: proportional set size of all the system's "
         "processes (the Node peers include their PostgreSQL), idle just before the run and peak during it. CPU: "
         "user+system time of all the system's processes per request. Ratios compare Basalt with each system "
         "within this run only.", ""]
    # The summary: throughput (p99 in ms) per scenario and system, Basalt's ratio to the Node peers.
    cols = [c for c in ORDER if c not in ("postgres", "postgres_pgb", "redis") and any(sy == c for (_, sy) in agg)]
    L += ["## Summary", "", "Requests/s (p99 ms) per scenario; `rt_fanout` in deliveries/s; `rt_idle` in bytes "
          "of memory per idle WebSocket connection. Ratios are Basalt's figure over the peer's.", "",
          "| scenario | " + " | ".join(cols) + " | Basalt ÷ Express | Basalt ÷ Fastify | Basalt ÷ Node ws |",
          "|---|" + "---|" * (len(cols) + 3)]
    for scen in scenarios:
        if scen in ("pgbench_select", "pgbench_select_pgb", "redis_get", "redis_set"):
            continue
        cells = []
        for c in cols:
            if (scen, c) not in agg:
                cells.append("")
            elif scen == "rt_idle":
                cells.append(f"{med(scen, c, 'p50'):,.0f} B")
            else:
                cells.append(f"{med(scen, c, 'rps'):,.0f} ({med(scen, c, 'p99'):.1f})")
        ratios = []
        for peer in ("express", "fastify", "node_ws"):
            if (scen, peer) in agg and (scen, "basalt") in agg and scen != "rt_idle":
                ratios.append(f"{div(med(scen, 'basalt', 'rps'), med(scen, peer, 'rps')):.1f}×")
            elif scen == "rt_idle" and (scen, peer) in agg:
                ratios.append(f"{div(med(scen, peer, 'p50'), med(scen, 'basalt', 'p50')):.1f}× less")
            else:
                ratios.append("")
        L.append(f"| {scen} | " + " | ".join(cells + ratios) + " |")
    L += ["", "Ceilings of the databases under the Node peers (same machine, same run): " + ", ".join(
        f"{sc} {med(sc, sy, 'rps'):,.0f}/s" for sc, sy in (("pgbench_select", "postgres"),
                                                           ("pgbench_select_pgb", "postgres_pgb"),
                                                           ("redis_get", "redis"),
                                                           ("redis_set", "redis")) if (sc, sy) in agg) + ".", ""]
    for scen in scenarios:
        if scen in ("rt_idle", "rt_fanout"):
            continue
        systems = sorted({s for (sc, s) in agg if sc == scen}, key=ORDER.index)
        L += [f"## {scen}", "", descriptions.get(scen, ""), "",
              "| system | requests/s | p50 ms | p99 ms | errors | CPU µs/req | memory idle MiB | memory peak MiB "
              "| Basalt's ratio |", "|---|---|---|---|---|---|---|---|---|"]
        b = med(scen, "basalt", "rps")
        for s in systems:
            rps = med(scen, s, "rps")
            ratio = f"{b / rps:.2f}×" if s != "basalt" and b == b and rps else "—"
            L.append(f"| {s} | {rps:,.0f} | {med(scen, s, 'p50'):.2f} | {med(scen, s, 'p99'):.2f} | "
                     f"{errs(scen, s)} | {med(scen, s, 'cpu_us'):.1f} | {med(scen, s, 'mem_idle_kib') / 1024:.1f} | "
                     f"{med(scen, s, 'mem_peak_kib') / 1024:.1f} | {ratio} |")
        L.append("")
    if any(sc == "rt_fanout" for (sc, _) in agg):
        L += ["## realtime", "",
              f"Idle: {cfg.idle:,} subscribed WebSocket connections held, memory added per connection. Fan-out: "
              f"{cfg.subs:,} subscribers of one collection, {cfg.events} records created at {cfg.event_rate}/s, each "
              "delivered to every subscriber; latency from the record's creation (a timestamp in it) to its parsing "
              "by the subscriber (bench/rtload). `basalt_cluster1`/`basalt_cluster2` here: two instances on "
              "PostgreSQL (through PgBouncer) with Redis, every record created through instance A; cluster1 has "
              "every subscriber on A, cluster2 half on A and half on B (those deliveries cross from A to B through "
              "the outbox and PostgreSQL's NOTIFY); subscribers connect to the instances directly.", "",
              "| system | idle connections held | bytes per connection | fan-out deliveries/s | p50 ms | p99 ms | "
              "undelivered | memory peak MiB | Basalt's ratio (deliveries/s) |", "|---|---|---|---|---|---|---|---|---|"]
        b = med("rt_fanout", "basalt", "rps")
        for s in [x for x in ("basalt", "basalt_cluster1", "basalt_cluster2", "node_ws") if ("rt_fanout", x) in agg]:
            rps = med("rt_fanout", s, "rps")
            idle = "—" if ("rt_idle", s) not in agg else f"{med('rt_idle', s, 'rps'):,.0f}"
            per = "—" if ("rt_idle", s) not in agg else f"{med('rt_idle', s, 'p50'):,.0f}"
            L.append(f"| {s} | {idle} | {per} | {rps:,.0f} | "
                     f"{med('rt_fanout', s, 'p50'):.2f} | {med('rt_fanout', s, 'p99'):.2f} | {errs('rt_fanout', s)} | "
                     f"{med('rt_fanout', s, 'mem_peak_kib') / 1024:.1f} | "
                     f"{'—' if s == 'basalt' or not rps or b != b else f'{b / rps:.2f}×'} |")
        L.append("")

    L += cluster_sections(cfg, agg, med, errs, div)

    def goal(text, value, target, fmt):
        met = "met" if value == value and value >= target else "not met"
        return f"| {text} | {fmt.format(value)} | {fmt.format(target)} | {met} |"

    view, bare = med("view", "basalt", "rps"), med("health", "bare_h2o", "rps")
    L += ["## Goals", "", "Directions from the benchmark issue, held against this run (not test assertions).", "",
          "| goal | measured | target | |", "|---|---|---|---|",
          goal("authenticated view, share of the bare libh2o ceiling (requests/s)", div(view, bare), 0.5, "{:.2f}"),
          goal("authenticated view, share of the bare libh2o ceiling (CPU per request)",
               div(med("health", "bare_h2o", "cpu_us"), med("view", "basalt", "cpu_us")), 0.5, "{:.2f}"),
          goal("authenticated view, × Express", div(view, med("view", "express", "rps")), 10, "{:.1f}"),
          goal("filtered list, × Fastify on PostgreSQL", div(med("list30", "basalt", "rps"), med("list30", "fastify", "rps")),
               5, "{:.1f}"),
          goal("filtered list with the cache off, × Fastify on PostgreSQL",
               div(med("list30", "basalt_nocache", "rps"), med("list30", "fastify", "rps")), 5, "{:.1f}"),
          *[g for name, how in (("basalt_pg", "defaults"), ("basalt_pg_nocache", "cache off")) for g in (
              goal(f"Basalt on PostgreSQL ({how}): authenticated view, share of pgbench select-only",
                   div(med("view", name, "rps"), med("pgbench_select", "postgres", "rps")), 0.8, "{:.2f}"),
              *[goal(f"Basalt on PostgreSQL ({how}): authenticated view, share of pgbench -S -M simple through "
                     "PgBouncer (context)",
                     div(med("view", name, "rps"), med("pgbench_select_pgb", "postgres_pgb", "rps")), 0.8,
                     "{:.2f}") for _ in [0] if ("pgbench_select_pgb", "postgres_pgb") in agg],
              *[goal(f"Basalt on PostgreSQL ({how}): {sc}, × Fastify on PostgreSQL",
                     div(med(sc, name, "rps"), med(sc, "fastify", "rps")), 5, "{:.1f}")
                for sc in ("view", "list30", "list30_skiptotal", "create", "mixed_2000")
                if name == "basalt_pg" or sc not in ("create", "mixed_2000")])],
          goal("creates/s, crash-safe (synchronous=NORMAL)", med("create", "basalt", "rps"), 50000, "{:,.0f}"),
          goal("creates/s, power-safe (synchronous=FULL)", med("create", "basalt_full", "rps"), 20000, "{:,.0f}")]
    idle = cfg.basalt_idle_rss_kib / 1024
    L += [f"| Basalt idle resident memory (RSS after start-up, {cfg.records:,} records), MiB | {idle:.1f} | "
          f"≤ 16 | {'met' if idle <= 16 else 'not met'} |", "",
          "## Notes", "",
          "- The peers verify tokens with the libraries their stacks name: Express with jsonwebtoken "
          f"({getattr(cfg, 'jwt_us', {}).get('jsonwebtoken', float('nan')):.0f} µs per check here), Fastify with fast-jwt as "
          f"@fastify/jwt does ({getattr(cfg, 'jwt_us', {}).get('fastjwt', float('nan')):.1f} µs). Basalt's view check includes "
          "the rule `owner = @request.auth.id`; the peers' query has the same condition.",
          "- The Node peers and PostgreSQL share core 0, as Basalt's worker, writer and embedded SQLite do. "
          "PostgreSQL commits are power-safe (fsync, synchronous_commit=on), like `basalt_full`; `basalt` is "
          "crash-safe (WAL, synchronous=NORMAL).",
          "- Basalt runs with its defaults, so its in-process cache is on: the repeated view and list are served "
          "from it between writes (writes invalidate exactly what they touch; `mixed_2000` and the create rows show "
          "the write path). The peers have no cache, as written by hand they usually do not; `basalt_nocache` "
          "(`--cache-budget-mb=0`) is Basalt with every read going to SQLite. `basalt_pg` is Basalt on the same "
          "PostgreSQL as the peers, through PgBouncer in transaction mode, with its defaults (cache on); "
          "`basalt_pg_nocache`, a second instance on the same database with the cache off, sends every read to "
          "PostgreSQL. Their memory and CPU include PgBouncer and PostgreSQL, as the Node peers' include PostgreSQL.",
          "- Closed-loop latency under overload hides queueing (a connection waits before it can send); the "
          "constant-rate rows do not: a system slower than the target rate shows its growing queue in p50/p99.",
          "",
          "![throughput](throughput.png)", "", "![p99 latency](p99.png)", "", "![Basalt's ratio](ratio.png)", ""]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(L))
    plots(out, agg, med, scenarios)
    return "\n".join(L)


def part_med(agg, scen, system):
    """The median CPU µs per request of each part of a system in a scenario (the
    results' `parts` column, "basalt=12.3;haproxy=4.5")."""
    vals = {}
    for r in agg.get((scen, system), []):
        for kv in (r.get("parts") or "").split(";"):
            if "=" in kv:
                k, v = kv.split("=")
                vals.setdefault(k, []).append(float(v))
    return {k: statistics.median(v) for k, v in vals.items()}


def cluster_sections(cfg, agg, med, errs, div):
    """The cluster table (per-part CPU per request) and Redis's added cost."""
    L = []
    ladder = [s for s in ("basalt", "basalt_pg", "basalt_pg_redis", "basalt_cluster1", "basalt_cluster2")
              if any(sy == s for (_, sy) in agg)]
    if any(s.startswith("basalt_cluster") for s in ladder):
        L += ["## Cluster: instances behind HAProxy on PostgreSQL and Redis", "",
              "The same scenarios, one step at a time: `basalt` embedded (SQLite), `basalt_pg` (one instance on "
              "PostgreSQL through PgBouncer), `basalt_pg_redis` (the same with Redis: limits on but out of reach, so "
              "every request is one rate-limit decision in Redis), `basalt_cluster1` (HAProxy in front of one such "
              "instance) and `basalt_cluster2` (HAProxy in front of two). All on one database, seeded once. CPU: "
              "user+system time of each part's processes per request, from /proc (PostgreSQL includes every backend; "
              "the other, idle instances' background work on PostgreSQL is in its figure too). **Every server "
              "process here is pinned to core 0, as the harness pins every system: the two instances of "
              "`basalt_cluster2` share that core with HAProxy, PgBouncer, PostgreSQL and Redis, so two instances "
              "measure the overhead of running two, not scale-out** (docs/scaling.md models bigger machines from "
              "the per-part costs).", "",
              "| scenario | system | requests/s | p50 ms | p99 ms | errors | CPU µs/req | " +
              " | ".join(f"{p} µs" for p in PARTS) + " |", "|---|---|---|---|---|---|---|" + "---|" * len(PARTS)]
        for scen in ("view", "list30", "create", "mixed_2000", "rt_fanout"):
            for s in ["basalt_cluster1", "basalt_cluster2"] if scen == "rt_fanout" else ladder:
                if (scen, s) not in agg:
                    continue
                pm = part_med(agg, scen, s)
                if s == "basalt":
                    pm = {"basalt": med(scen, s, "cpu_us")}
                L.append(f"| {scen}{' (per delivery)' if scen == 'rt_fanout' else ''} | {s} | "
                         f"{med(scen, s, 'rps'):,.0f} | {med(scen, s, 'p50'):.2f} | {med(scen, s, 'p99'):.2f} | "
                         f"{errs(scen, s)} | {med(scen, s, 'cpu_us'):.1f} | " +
                         " | ".join(f"{pm[p]:.1f}" if p in pm else "" for p in PARTS) + " |")
        L.append("")
    rows = []

    def delta(text, sa, a, sb, b):
        """One row: system b in scenario sb minus system a in scenario sa."""
        if (sa, a) not in agg or (sb, b) not in agg:
            return
        pa, pb = part_med(agg, sa, a), part_med(agg, sb, b)
        rows.append(f"| {text} | `{b}` {sb} − `{a}` {sa} | {med(sb, b, 'cpu_us') - med(sa, a, 'cpu_us'):+.1f} | "
                    f"{pb.get('basalt', 0) - pa.get('basalt', 0):+.1f} | {pb.get('redis', 0) - pa.get('redis', 0):+.1f} | "
                    f"{pb.get('postgres', 0) - pa.get('postgres', 0):+.1f} | "
                    f"{(med(sb, b, 'p50') - med(sa, a, 'p50')) * 1000:+.0f} |")
    for scen in ("view", "list30", "create"):
        delta(f"rate-limit decision in Redis ({scen})", scen, "basalt_pg", scen, "basalt_pg_redis")
    delta("L2 miss: a lookup that misses, then the database read and the store", "view_l2miss", "basalt_pg",
          "view_l2miss", "basalt_pg_l2")
    delta("L2 hit instead of a database read", "view_l2miss", "basalt_pg", "view_l2hit", "basalt_pg_l2")
    delta("L2 hit instead of an in-process hit", "view_l2hit", "basalt_pg", "view_l2hit", "basalt_pg_l2")
    if rows:
        notes = []
        for scen in ("view_l2miss", "view_l2hit"):
            for r in agg.get((scen, "basalt_pg_l2"), []):
                if r.get("note"):
                    notes.append(f"{scen} run {r['run']}: {r['note']}")
        L += ["## Redis's added cost per request", "",
              "Differences of medians within this run, in µs of CPU per request (all of the system's processes; "
              "then Basalt's, Redis's and PostgreSQL's own) and in µs of median latency under the same closed-loop "
              "load (64 connections). `basalt_pg_redis`: basalt_pg with --redis and limits on but out of reach; "
              "`basalt_pg_l2`: --redis, no limits, a 1 MiB in-process cache. The L2 scenarios view the same record "
              "under a new cache key each request (`fields` naming one field that does not exist), then the same "
              "keys again.", "",
              "| what | compared | Δ CPU µs/req | Δ Basalt | Δ Redis | Δ PostgreSQL | Δ p50 µs |",
              "|---|---|---|---|---|---|---|"] + rows + [""]
        if notes:
            L += ["basalt_pg_l2's counters during the L2 runs (L2 hits and misses; local: rate-limit decisions "
                  "taken without Redis): " + "; ".join(notes) + ".", ""]
    return L


def plots(out, agg, med, scenarios):
    """Clustered bars per scenario, one bar per system, log scale (gnuplot)."""
    http_scen = [s for s in scenarios if s not in ("rt_idle", "pgbench_select", "pgbench_select_pgb", "redis_get",
                                                   "redis_set")]
    everyone = [s for s in ORDER if any(sy == s for (_, sy) in agg) and s not in ("postgres", "redis")]

    def plot(name, ylabel, fn, systems, extra=""):
        if not systems or not http_scen:  # a partial run (--systems) may have nothing to draw
            return
        dat = os.path.join(out, f"{name}.dat")
        with open(dat, "w") as f:
            f.write("# scenario " + " ".join(systems) + "\n")
            for sc in http_scen:
                vals = [fn(sc, s) if (sc, s) in agg else float("nan") for s in systems]
                f.write(sc + " " + " ".join("-" if v != v else f"{v:.4f}" for v in vals) + "\n")
        cols = ", ".join((f'"{dat}"' if i == 0 else '""') + f' using {i + 2}:xtic(1) title "{s}"'
                         for i, s in enumerate(systems))
        script = f"""set terminal pngcairo size 1200,500 noenhanced
set output "{os.path.join(out, name + '.png')}"
set datafile missing "-"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set logscale y
set key outside right top
set xtics rotate by -25 offset -2,0
set grid ytics
set ylabel "{ylabel}"
{extra}
plot {cols}
"""
        subprocess.run(["gnuplot"], input=script, text=True, check=True)

    plot("throughput", "requests/s (rt_fanout: deliveries/s), log scale", lambda sc, s: med(sc, s, "rps"), everyone)
    plot("p99", "p99 latency, ms, log scale", lambda sc, s: med(sc, s, "p99"), everyone)
    if not any(sy == "basalt" for (_, sy) in agg):  # no ratio without the embedded row
        return
    plot("ratio", "Basalt's throughput / the system's, log scale",
         lambda sc, s: med(sc, "basalt", "rps") / med(sc, s, "rps")
         if (sc, "basalt") in agg and med(sc, s, "rps") > 0 else float("nan"),
         [s for s in everyone if s != "basalt"], "set arrow from graph 0, first 1 to graph 1, first 1 nohead")


def medians(results):
    """--systems: the medians of what ran, one line per scenario and system."""
    agg = {}
    for r in results:
        agg.setdefault((r["scenario"], r["system"]), []).append(r)
    for (scen, name), rows in agg.items():
        rps = sorted(float(x["rps"]) for x in rows)
        cpu = sorted(float(x["cpu_us"]) for x in rows)
        log(f"median {scen:<16} {name:<12} {rps[len(rps) // 2]:>10,.0f} /s  {cpu[len(cpu) // 2]:8.1f} µs CPU/req  "
            f"(runs: {', '.join(f'{v:,.0f}' for v in rps)})")


# --- main -----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="about 2 minutes: fewer records, short runs, one round")
    ap.add_argument("--smoke", action="store_true",
                    help="seconds, for make test: every system and scenario once, tiny, then checked for errors")
    ap.add_argument("--out", help="result folder (default bench/results/<UTC date-time>)")
    ap.add_argument("--report", metavar="DIR", help="only write DIR/report.md and plots again from its results")
    ap.add_argument("--systems", help="comma-separated: only these systems (postgres: pgbench -S; redis; "
                    "node_ws: the realtime rows; basalt_cluster1/2 also run the fan-out across instances); the "
                    "medians are printed, and report.md written only with --out")
    ap.add_argument("--scenarios", help="comma-separated: only these HTTP scenarios (e.g. view,list30,create)")
    ap.add_argument("--rounds", type=int, help="rounds instead of the mode's default")
    ap.add_argument("--pg-args", default="", help="more arguments for basalt_pg (space-separated), to try options")
    cfg = ap.parse_args()
    if cfg.report:
        with open(os.path.join(cfg.report, "meta.json")) as f:
            meta = json.load(f)
        with open(os.path.join(cfg.report, "results.csv")) as f:
            results = list(csv.DictReader(f))
        print(report(argparse.Namespace(**meta["cfg"]), cfg.report, results, meta["descriptions"],
                     datetime.datetime.fromisoformat(meta["started"])))
        return
    if cfg.smoke:
        cfg.records, cfg.secs, cfg.repeat, cfg.pgscale = 600, 2, 1, 1
        cfg.idle, cfg.subs, cfg.events, cfg.event_rate = 100, 50, 5, 20
        cfg.command = "bench/harness.py --smoke"
    elif cfg.quick:
        cfg.records, cfg.secs, cfg.repeat, cfg.pgscale = 20000, 2, 1, 2
        cfg.idle, cfg.subs, cfg.events, cfg.event_rate = 2000, 2000, 50, 50
        cfg.command = "bench/run.sh --quick"
    else:
        cfg.records, cfg.secs, cfg.repeat, cfg.pgscale = 100000, 8, 3, 10
        cfg.idle, cfg.subs, cfg.events, cfg.event_rate = 15000, 10000, 100, 50
        cfg.command = "make bench"
    cfg.view_rate, cfg.list_rate, cfg.create_rate = 5000, 1000, 2000
    if cfg.rounds:
        cfg.repeat = cfg.rounds
    if cfg.systems:
        cfg.command += f" --systems {cfg.systems}"
    if cfg.scenarios:
        cfg.command += f" --scenarios {cfg.scenarios}"
    only = set(cfg.systems.split(",")) if cfg.systems else None
    only_scen = set(cfg.scenarios.split(",")) if cfg.scenarios else None

    def wanted(name):
        return only is None or name in only
    started = datetime.datetime.now(datetime.timezone.utc)
    if cfg.smoke and not cfg.out:
        cfg.out = tempfile.mkdtemp(prefix="basalt-bench-smoke-")
    out = cfg.out or os.path.join(ROOT, "bench", "results", f"{started:%Y-%m-%d-%H%M}")
    raw_dir = os.path.join(out, "raw")
    os.makedirs(raw_dir, exist_ok=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    lab = Lab()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    results, descriptions = Results(os.path.join(out, "results.csv")), {}

    def save_meta():
        with open(os.path.join(out, "meta.json"), "w") as f:
            json.dump(dict(cfg=vars(cfg), descriptions=descriptions, started=started.isoformat()), f, indent=1)
    try:
        log("starting the systems...")
        systems = {}
        if any(wanted(n) for n in ("basalt", "basalt_full", "basalt_nocache")):
            systems = {s.name: s for s in setup_basalt(lab, cfg.records) if wanted(s.name)}
        cfg.basalt_idle_rss_kib = rss_kib(systems["basalt"].roots[0]) if "basalt" in systems else 0
        pg, pgenv, owner = setup_postgres(lab, cfg.records, cfg.pgscale)
        lab.pg_pid = pg.pid
        on_pg = ("basalt_pg", "basalt_pg_nocache", "basalt_pg_redis", "basalt_pg_l2", "basalt_cluster1",
                 "basalt_cluster2")
        if any(wanted(n) for n in on_pg):
            for s in setup_basalt_pg(lab, cfg.records, pgenv, cfg.pg_args.split(), wanted("basalt_pg_nocache")):
                if wanted(s.name):
                    systems[s.name] = s
            if wanted("basalt_pg_redis") or wanted("basalt_pg_l2"):
                for s in setup_redis_systems(lab, wanted("basalt_pg_redis"), wanted("basalt_pg_l2")):
                    systems[s.name] = s
            if wanted("basalt_cluster1") or wanted("basalt_cluster2"):
                for s in setup_cluster(lab, wanted("basalt_cluster1"), wanted("basalt_cluster2")):
                    systems[s.name] = s
                log("  basalt_cluster1/2: HAProxy in front of 1 / 2 instances on the same database, with Redis")
        node = any(wanted(n) for n in ("express", "fastify", "node_ws"))
        token = node_token(owner) if node else None  # the Node peers' token (their npm packages)
        cfg.jwt_us = jwt_costs() if node else {}
        for name, js in (("express", "express.js"), ("fastify", "fastify.js")):
            if wanted(name):
                systems[name] = setup_node(lab, name, js, pg, pgenv, owner, token)
        if wanted("nginx"):
            systems["nginx"] = setup_nginx(lab)
        if wanted("bare_h2o"):
            systems["bare_h2o"] = setup_bare(lab)
        redis = setup_redis(lab) if wanted("redis") else None
        save_meta()
        verify(systems, cfg.records)
        log("  every system answers the scenarios alike")
        scenarios = http_scenarios(cfg, lab)
        for rnd in range(cfg.repeat):
            log(f"round {rnd + 1} of {cfg.repeat}")
            for scen, desc, names, fn in scenarios:
                if only_scen is not None and scen not in only_scen:
                    continue
                names = [n for n in names if n in systems and not (cfg.smoke and (scen, n) in SMOKE_SKIP)]
                if not names:
                    continue
                descriptions[scen] = desc
                order = names[rnd % len(names):] + names[:rnd % len(names)]  # alternate who goes first
                for name in order:
                    s = systems[name]
                    fig, raw = measure(s, lambda: fn(s))
                    results.append(dict(scenario=scen, system=name, run=rnd + 1, **{k: fig.get(k, "") for k in FIELDS[3:]}))
                    with open(os.path.join(raw_dir, f"{scen}-{name}-{rnd + 1}.txt"), "w") as f:
                        f.write(raw)
                    log(f"  {scen:<16} {name:<12} {fig['rps']:>10,.0f} req/s  p50 {fig['p50']:8.2f} ms  "
                        f"p99 {fig['p99']:8.2f} ms  {fig['cpu_us']:7.1f} µs CPU/req  errors {fig['errors']}"
                        + (f"  [{fig['parts']}]" if len(getattr(s, "parts", {})) > 1 else "")
                        + (f"  [{fig['note']}]" if fig.get("note") else ""))
            pgsys = System("postgres", [pg.pid], 0)
            descriptions["pgbench_select"] = "PostgreSQL's ceiling: pgbench -S (select-only, prepared), 16 clients (the Node peers' pool size)"
            pgbsys = System("postgres_pgb", [pg.pid, lab.pgb_pid], 0,
                            parts={"postgres": [pg.pid], "pgbouncer": [lab.pgb_pid]}) \
                if getattr(lab, "pgb_port", None) else None
            if pgbsys is not None:
                descriptions["pgbench_select_pgb"] = ("The same through the Basalt systems' PgBouncer with the simple "
                                                      "protocol (-M simple), as Basalt's reads go: no prepared "
                                                      "statements in transaction mode")
            descriptions["redis_get"] = "Redis's ceiling: redis-benchmark GET, 64 clients"
            descriptions["redis_set"] = "Redis's ceiling: redis-benchmark SET, 64 clients"
            for scen, s, fn in (("pgbench_select", pgsys, lambda: pgbench(pgenv, cfg.secs)),
                                ("pgbench_select_pgb", pgbsys,
                                 lambda: pgbench(pgenv, cfg.secs, "simple", getattr(lab, "pgb_port", None))),
                                ("redis_get", redis, lambda: redis_bench(redis.port, "get", cfg.secs * 50000)),
                                ("redis_set", redis, lambda: redis_bench(redis.port, "set", cfg.secs * 50000))):
                if scen == "pgbench_select_pgb" and (s is None or not wanted("postgres")):
                    continue  # no PgBouncer in this run
                if scen != "pgbench_select_pgb" and not wanted(s.name if s is not None else "redis"):
                    continue
                fig, raw = measure(s, fn)
                results.append(dict(scenario=scen, system=s.name, run=rnd + 1, **{k: fig.get(k, "") for k in FIELDS[3:]}))
                with open(os.path.join(raw_dir, f"{scen}-{rnd + 1}.txt"), "w") as f:
                    f.write(raw)
                log(f"  {scen:<16} {s.name:<12} {fig['rps']:>10,.0f} req/s  p50 {fig['p50']:8.2f} ms")
        if wanted("node_ws"):
            log("realtime...")
            port = free_port()
            wp = lab.start("node_ws", ["node", "ws_fanout.js", str(port)],
                           env=dict(pgenv, BENCH_JWT_SECRET=SECRET, NODE_ENV="production"), cwd=PEERS)
            wait_http(port, "/api/health")
            realtime(cfg, lab, results, raw_dir, System("node_ws", [wp.pid, pg.pid], port, token=token), pgenv)
        rt_names = [n for n in ("basalt_cluster1", "basalt_cluster2") if wanted(n)]
        if rt_names:
            log("realtime across instances...")
            rt_cluster(cfg, lab, results, raw_dir, pgenv, rt_names)
    finally:
        lab.stop()
        save_meta()
        if only is not None:
            medians(results)
    if only is not None and not cfg.out:  # a partial run writes its report only where asked (--out)
        return
    print(report(cfg, out, results, descriptions, started))
    log(f"report: {os.path.relpath(out, ROOT)}/report.md")
    if cfg.smoke:
        bad = [r for r in results if int(r["errors"]) != 0 or not float(r["rps"]) > 0]
        for r in bad:
            log(f"FAILED: {r['scenario']} on {r['system']}: {r['rps']} per s, {r['errors']} errors")
        log(f"{len(results) - len(bad)} passed, {len(bad)} failed")
        if not bad:
            shutil.rmtree(out, ignore_errors=True)
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
