"""Starts real basalt servers on free loopback ports, each in a temporary folder.

With BASALT_TEST_BACKEND=postgres every server (and every CLI call on its folder)
gets a PostgreSQL database of its own, created on BASALT_TEST_PG_URL's server and
reached through BASALT_TEST_PGB_URL's PgBouncer (scripts/pg-env.sh starts both);
otherwise each uses the embedded SQLite file in its folder."""
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests

BIN = os.environ.get("BASALT_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "build", "basalt"))
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-password-1"


BACKEND = os.environ.get("BASALT_TEST_BACKEND", "sqlite")
_databases = set()


def _db_name(data_dir):
    return "bt_" + hashlib.sha1(os.path.abspath(data_dir).encode()).hexdigest()[:20]


def _create_database(name, template=None):
    sql = f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else "")
    out = subprocess.run(["psql", os.environ["BASALT_TEST_PG_URL"], "-qAt", "-c", sql],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 or "already exists" in out.stderr, out.stderr
    _databases.add(name)
    return out.returncode == 0


def db_args(data_dir):
    """The --db flag for the server or CLI that uses data_dir: [] on SQLite; on
    PostgreSQL a database named after the folder, created on first use."""
    if BACKEND != "postgres":
        return []
    name = _db_name(data_dir)
    if name not in _databases:
        _create_database(name)
    base = os.environ["BASALT_TEST_PGB_URL"].rsplit("/", 1)[0]
    direct = os.environ["BASALT_TEST_PG_URL"].rsplit("/", 1)[0]
    return [f"--db={base}/{name}", f"--db-listen={direct}/{name}"]


TOPOLOGY = os.environ.get("BASALT_TEST_TOPOLOGY", "single")
_cluster_procs = []
_redis_flag = []
_direct = {}  # cluster mode: a load balancer's URL -> instance A's own URL
_instances = {}  # cluster mode: a load balancer's URL -> every instance's own URL


def instance_urls(url):
    """Every instance's own URL for a server's url (per-instance state such as
    /metrics counters is summed over them): [url] on one instance."""
    return _instances.get(url, [url])


# The address Basalt sees as the peer of a request: HAProxy's in cluster mode (it
# connects from 127.0.0.3, see below), the client's own otherwise. The client's address
# (X-Forwarded-For from that trusted proxy) is 127.0.0.1 either way.
PEER_IP = "127.0.0.3" if TOPOLOGY == "cluster" else "127.0.0.1"


def direct_url(url):
    """The URL of one Basalt instance itself for a server's url: in cluster mode
    instance A's, not HAProxy's, for the tests about Basalt's own HTTP connection
    handling (raw bytes, framing, keep-alive, caps, timeouts), which HAProxy would
    answer or rewrite instead; the cluster topology is about behaviour across
    instances, not about HAProxy's parser. Otherwise url itself."""
    return _direct.get(url, url)

# HAProxy of a cluster-mode test server: round-robin, so that consecutive requests of one
# client land on different instances; readiness checks; safe retries as in
# deploy/haproxy/haproxy.cfg. X-Basalt-Instance tells the tests which instance answered.
# It connects from 127.0.0.3, the one proxy the instances trust (beside any a test names):
# a test's client on 127.0.0.1 is an untrusted client, as on the internet.
_TEST_HAPROXY_CFG = """global
    maxconn 2000
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout tunnel 1h
    retries 3
    option redispatch 1
frontend f
    bind 127.0.0.1:{port}
    option forwardfor
    default_backend b
backend b
    balance roundrobin
    retry-on conn-failure empty-response response-timeout
    http-request disable-l7-retry if !METH_GET !METH_OPTIONS
    option httpchk GET /api/health?ready=1
    http-check expect status 200
    http-response set-header X-Basalt-Instance %s
    default-server inter 1s fall 2 rise 1
    source 127.0.0.3
    server a 127.0.0.1:{a} check
    server b 127.0.0.1:{b} check
"""


def _redis_supported():
    """Does this basalt have a --redis setting (the Redis work has landed)?"""
    if not _redis_flag:
        out = subprocess.run([BIN, "config-doc"], capture_output=True, text=True, timeout=30)
        _redis_flag.append("`--redis`" in out.stdout)
    return _redis_flag[0]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    """Cluster mode: whatever a test left running (an instance B, HAProxy, Redis) stops."""
    for p in _cluster_procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
    for t in _template.values():
        shutil.rmtree(t["dir"], ignore_errors=True)


# ---- what the cluster run does not cover (make integration-pg-complement) ----
# make test runs the suite on PostgreSQL once, on the cluster topology (2 instances through
# PgBouncer, Redis, HAProxy), and on one instance only the tests that the cluster run
# skips or expects to fail: the set difference of the two runs' static skips, generated
# at collection (BASALT_TEST_LIST_SKIPPED writes this run's, BASALT_TEST_ONLY keeps only
# the node ids listed in a file), so that a new cluster skip or xfail needs no list kept
# by hand. Skips decided inside a test's body are not seen: mark them instead.

def _skipped_by_marker(item):
    """Whether a skip, skipif or xfail marker with a true condition applies to item
    (conditions are the module's constants, TOPOLOGY and BACKEND, evaluated at import)."""
    if any(True for _ in item.iter_markers("skip")):
        return True
    for name in ("skipif", "xfail"):
        for m in item.iter_markers(name):
            cond = m.args[0] if m.args else m.kwargs.get("condition", name == "xfail")
            if not isinstance(cond, str) and bool(cond):
                return True
    return False


def pytest_collection_modifyitems(config, items):
    listed = os.environ.get("BASALT_TEST_LIST_SKIPPED")
    if listed:
        with open(listed, "w") as f:
            f.writelines(i.nodeid + "\n" for i in items if _skipped_by_marker(i))
    only = os.environ.get("BASALT_TEST_ONLY")
    if only:
        with open(only) as f:
            keep = {line.strip() for line in f if line.strip()}
        deselected = [i for i in items if i.nodeid not in keep]
        items[:] = [i for i in items if i.nodeid in keep]
        config.hook.pytest_deselected(items=deselected)


def sqlite_only(reason):
    """Marks a test that is about the embedded file itself (its crash recovery, its
    disk-full handling, another process writing it)."""
    return pytest.mark.skipif(BACKEND != "sqlite", reason=f"SQLite only: {reason}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The suites make many requests from one address: rate limits are off unless a test
# turns them on (test_ratelimit.py).
NO_LIMITS = ["--rate-limit-anon=0", "--rate-limit-user=0", "--rate-limit-burst=0", "--rate-limit-auth=0"]


def _health_ok(port):
    """Does GET /api/health on 127.0.0.1:port answer 200? One plain socket: the start-up
    wait polls it every 20 ms, and a requests.get per poll cost the test process about
    60 ms of CPU per server start (on a loaded machine, taken from the server starting)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.settimeout(2)
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = b""
            while len(head) < 12:
                chunk = s.recv(64)
                if not chunk:
                    break
                head += chunk
            return head.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


class Server:
    """One basalt process; stop() sends SIGTERM and waits, kill() sends SIGKILL."""

    def __init__(self, data_dir, extra_args=(), db=None, topology=None):
        self.dir = data_dir
        self.db = db  # the --db flags to use instead of db_args(data_dir) (shared_db_args)
        # "single": one process whatever BASALT_TEST_TOPOLOGY says, for the tests that
        # build a topology of their own (instances side by side, their own Redis).
        self.topology = topology or TOPOLOGY
        self.extra_args = list(extra_args) if any("rate-limit" in a for a in extra_args) else NO_LIMITS + list(extra_args)
        self.proc = None
        self.port = None
        self.killed = False

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def instance_dirs(self):
        """The data folder of every instance (each writes its own logs there, as
        separate machines would): [dir] on one instance, A's and B's in cluster mode."""
        return [self.dir, os.path.join(self.dir, "instance-b")] if self.topology == "cluster" else [self.dir]

    def log_text(self):
        """Everything the server logged: every instance's log in cluster mode."""
        names = ["server.log", "server-b.log"] if self.topology == "cluster" else ["server.log"]
        out = ""
        for n in names:
            p = os.path.join(self.dir, n)
            if os.path.exists(p):
                with open(p, errors="replace") as f:
                    out += f.read()
        return out

    def start(self):
        if self.topology == "cluster":
            return self._start_cluster()
        self.port = free_port()
        self.log = open(os.path.join(self.dir, "server.log"), "ab")
        self.proc = subprocess.Popen(
            [BIN, "serve", f"--http=127.0.0.1:{self.port}", f"--dir={self.dir}", "--threads=2",
             *(self.db if self.db is not None else db_args(self.dir)),
             *self.extra_args],
            stdout=self.log, stderr=self.log)
        deadline = time.time() + float(os.environ.get("BASALT_START_TIMEOUT", "10"))
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"basalt exited with {self.proc.returncode}")
            if _health_ok(self.port):
                return self
            time.sleep(0.02)
        raise RuntimeError("basalt did not become healthy")

    def stop(self, timeout=15):
        if self.topology == "cluster":
            return self._stop_cluster(timeout)
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        rc = self.proc.returncode if self.proc else None
        self.log.close()
        return rc

    def kill(self):
        self.killed = True
        if self.topology == "cluster":
            for p in self.procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGKILL)
                    p.wait(timeout=10)
            self._stop_helpers()
            return
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.log.close()

    # ---- BASALT_TEST_TOPOLOGY=cluster: 2 instances on one database behind HAProxy ----
    # Instance A is self.proc (its log server.log, its folder self.dir); instance B has
    # its own folder (self.dir/instance-b) and log, as separate machines would; url is
    # HAProxy's, which sends the requests round-robin to both. With a binary that has
    # --redis, both use one Redis of their own.

    def _spawn_instance(self, d, port, log):
        trusted = [a.split("=", 1)[1] for a in self.extra_args if a.startswith("--trusted-proxies=")]
        extra = [a for a in self.extra_args if not a.startswith("--trusted-proxies=")]
        if d != self.dir:
            # A process's own files are its own (as on separate machines): B's pid file
            # in its folder; a test's `basalt upgrade --pid-file` upgrades instance A.
            extra = [f"--pid-file={os.path.join(d, 'basalt.pid')}" if a.startswith("--pid-file=") else a
                     for a in extra]
        args = [BIN, "serve", f"--http=127.0.0.1:{port}", f"--dir={d}", "--threads=2",
                *(self.db if self.db is not None else db_args(self.dir)),
                "--trusted-proxies=" + ",".join([t for t in trusted if t] + ["127.0.0.3"])]
        if not any(a.startswith(("--storage-dir", "--s3-bucket")) for a in self.extra_args):
            # One deployment's files are in one place (a shared folder here, S3 in
            # production): A's folder, where the tests look for them.
            args.append(f"--storage-dir={os.path.join(self.dir, 'storage')}")
        if self.redis_url:
            args.append(f"--redis={self.redis_url}")
            if not any(a.startswith("--redis-timeout-ms") for a in self.extra_args):
                # Redis's own answer time on a machine that runs other suites beside
                # this one is no behaviour under test here: past the default 50 ms a
                # decision falls back to local limits (test_redis_ratelimit's degraded
                # mode), and an exact count through the cluster would not hold.
                args.append("--redis-timeout-ms=2000")
        p = subprocess.Popen(args + extra, stdout=log, stderr=log)
        _cluster_procs.append(p)
        return p

    def _wait_ready(self, url, procs, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a cluster process exited with {p.returncode}; see {self.dir}")
            try:
                if requests.get(url + "/api/health?ready=1", timeout=0.5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{url} did not become ready; see {self.dir}")

    def _start_cluster(self):
        # Two instances, Redis and HAProxy start at once on a machine that runs other
        # suites beside this one: 10 s (one process's default) was seen to pass at a load
        # of 20 on one core. How long a start takes is no behaviour under test here.
        timeout = float(os.environ.get("BASALT_START_TIMEOUT", "30"))
        self.helpers = []
        self.redis_url = None
        if _redis_supported():
            rport = free_port()
            rlog = open(os.path.join(self.dir, "redis.log"), "ab")
            rp = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(rport), "--save", "",
                                   "--appendonly", "no", "--dir", self.dir], stdout=rlog, stderr=rlog)
            _cluster_procs.append(rp)
            self.helpers.append((rp, rlog))
            self.redis_url = f"redis://127.0.0.1:{rport}"
            deadline = time.time() + timeout
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", rport), timeout=0.5):
                        break
                except OSError:
                    assert time.time() < deadline, "redis-server did not start"
                    time.sleep(0.05)
        bdir = os.path.join(self.dir, "instance-b")
        os.makedirs(bdir, exist_ok=True)
        # One deployment's migration files are in one place (its repository), and so
        # are its backup archives (shared storage): B's folders are A's, where the
        # tests read and put them.
        for sub in ("migrations", "backups"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
            if not os.path.lexists(os.path.join(bdir, sub)):
                os.symlink(os.path.join(self.dir, sub), os.path.join(bdir, sub))
        self.ports = [free_port(), free_port()]
        self.log = open(os.path.join(self.dir, "server.log"), "ab")
        self.log_b = open(os.path.join(self.dir, "server-b.log"), "ab")
        # Both at once, as a deployment's instances start: the first to reach an empty
        # database prepares it under the first-start lock, the other waits for it
        # (test_collections.py checks that); starting them one after the other cost
        # one instance's start-up per test.
        self.proc = self._spawn_instance(self.dir, self.ports[0], self.log)
        self.procs = [self.proc, self._spawn_instance(bdir, self.ports[1], self.log_b)]
        for p in self.ports:
            self._wait_ready(f"http://127.0.0.1:{p}", self.procs, timeout)
        self.port = free_port()
        _direct[self.url] = f"http://127.0.0.1:{self.ports[0]}"
        _instances[self.url] = [f"http://127.0.0.1:{p}" for p in self.ports]
        cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(_TEST_HAPROXY_CFG.format(port=self.port, a=self.ports[0], b=self.ports[1]))
        hlog = open(os.path.join(self.dir, "haproxy.log"), "ab")
        hp = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=hlog, stderr=hlog)
        _cluster_procs.append(hp)
        self.helpers.append((hp, hlog))
        self._wait_ready(self.url, self.procs + [hp], timeout)
        # Both instances in HAProxy's rotation before the test starts.
        deadline = time.time() + timeout
        while time.time() < deadline:
            seen = set()
            for _ in range(6):
                try:
                    seen.add(requests.get(self.url + "/api/health", timeout=1).headers.get("X-Basalt-Instance"))
                except requests.RequestException:
                    pass
            if len(seen) == 2:
                break
            time.sleep(0.1)
        return self

    def _stop_helpers(self):
        for p, log in getattr(self, "helpers", []):
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=10)
            log.close()
        self.helpers = []

    def _stop_cluster(self, timeout):
        rcs = []
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            p.wait(timeout=timeout)
            rcs.append(p.returncode)
        self._stop_helpers()
        self.log.close()
        self.log_b.close()
        return next((rc for rc in rcs if rc != 0), 0)


class Client:
    def __init__(self, url, token=None):
        self.url = url
        self.token = token
        self.s = requests.Session()

    def req(self, method, path, token=None, **kw):
        headers = kw.pop("headers", {})
        tok = token if token is not None else self.token
        if tok:
            headers["Authorization"] = tok
        return self.s.request(method, self.url + path, headers=headers, timeout=30, **kw)

    def get(self, path, **kw):
        return self.req("GET", path, **kw)

    def post(self, path, **kw):
        return self.req("POST", path, **kw)

    def patch(self, path, **kw):
        return self.req("PATCH", path, **kw)

    def delete(self, path, **kw):
        return self.req("DELETE", path, **kw)

    def login(self, collection, identity, password):
        r = self.post(f"/api/collections/{collection}/auth-with-password",
                      json={"identity": identity, "password": password}, token="")
        assert r.status_code == 200, r.text
        return r.json()["token"]


def raw_http(url, payload, source=None, timeout=5):
    """Sends raw bytes to the server at url (from the loopback address source, if
    given) and returns all it answers until it closes the connection or goes quiet.
    In cluster mode it talks to one instance directly (direct_url)."""
    port = int(direct_url(url).rsplit(":", 1)[1])
    addr = (source, 0) if source else None
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=addr) as s:
        s.sendall(payload)
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
    return data


# A fresh data folder (or database) with the superuser, made once per session by the
# CLI and copied for each new one: `basalt superuser upsert` on an empty folder is a
# process start, the migrations and an Argon2id hash, about as much CPU as the server's
# own start, and a test server of its own used to pay it each time. The copy is what
# the CLI makes (the same migrations and record); only the random parts (the record's
# id and tokenKey, the collections' token secrets) are the same in every copy.
_template = {}


def _superuser_cli(data_dir, db):
    out = subprocess.run([BIN, "superuser", "upsert", ADMIN_EMAIL, ADMIN_PASSWORD, f"--dir={data_dir}", *db],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def _template_made():
    """The session's template for the backend in use: a data folder (SQLite) or a
    database on BASALT_TEST_PG_URL's server, reached directly (PgBouncer would keep a
    connection to it open, and PostgreSQL copies only a database nobody is connected to)."""
    t = _template.get(BACKEND)
    if t is None:
        t = {"dir": tempfile.mkdtemp(prefix="basalt-template-")}
        if BACKEND == "postgres":
            name = f"bt_template_{os.getpid()}_{int(time.time())}"
            _create_database(name)
            direct = os.environ["BASALT_TEST_PG_URL"].rsplit("/", 1)[0]
            _superuser_cli(t["dir"], [f"--db={direct}/{name}", f"--db-listen={direct}/{name}"])
            t["db"] = name
        else:
            _superuser_cli(t["dir"], [])
        _template[BACKEND] = t
    return t


def make_superuser(data_dir, db=None):
    """The superuser ADMIN_EMAIL / ADMIN_PASSWORD in data_dir's database: on a new folder
    a copy of the session's template, otherwise `basalt superuser upsert`."""
    if db is None and not os.environ.get("BASALT_TEST_NO_TEMPLATE"):
        if BACKEND == "postgres" and _db_name(data_dir) not in _databases:
            if _create_database(_db_name(data_dir), _template_made()["db"]):
                return
        if BACKEND != "postgres" and os.path.isdir(data_dir) and not os.listdir(data_dir):
            shutil.copyfile(os.path.join(_template_made()["dir"], "data.db"), os.path.join(data_dir, "data.db"))
            return
    _superuser_cli(data_dir, db if db is not None else db_args(data_dir))


@pytest.fixture
def tmpdir_path():
    d = tempfile.mkdtemp(prefix="basalt-it-")
    yield d
    if not os.environ.get("BASALT_KEEP_TMP"):  # set it to keep server logs for debugging
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def server(tmpdir_path):
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path).start()
    yield srv
    rc = srv.stop()
    # A clean exit: under ASan or valgrind a memory error or leak makes it non-zero.
    assert srv.killed or rc == 0, f"basalt exited with {rc}; see {tmpdir_path}/server.log"


@pytest.fixture(scope="module")
def shared_server():
    d = tempfile.mkdtemp(prefix="basalt-it-")
    make_superuser(d)
    srv = Server(d).start()
    yield srv
    rc = srv.stop()
    assert rc == 0, f"basalt exited with {rc}"
    if not os.environ.get("BASALT_KEEP_TMP"):
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def admin(server):
    c = Client(server.url)
    c.token = c.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    return c


@pytest.fixture(scope="module")
def shared_admin(shared_server):
    c = Client(shared_server.url)
    c.token = c.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    return c


def define_collection(client, body):
    """Creates body's collection, or redefines it with PATCH where one of that name
    exists already (a fresh data folder has PocketBase's default `users`)."""
    r = client.post("/api/collections", json=body)
    if r.status_code == 400 and "validation_not_unique" in r.text:
        r = client.patch(f"/api/collections/{body['name']}", json=body)
    return r


def assert_error(r, status, field=None, code=None):
    """PocketBase's error shape: status, message, data (an object)."""
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == status
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["data"], dict)
    if field is not None:
        assert field in body["data"], body
        if code is not None:
            assert body["data"][field]["code"] == code, body
    return body


# ---- several instances, Redis ----

def shared_db_args(key):
    """The --db flags of a PostgreSQL database that several instances share (one
    per key, created on first use), whatever BASALT_TEST_BACKEND says: instances of
    one deployment share one database. Needs BASALT_TEST_PG_URL (see pg_required)."""
    name = "bt_shared_" + hashlib.sha1(key.encode()).hexdigest()[:16]
    if name not in _databases:
        out = subprocess.run(["psql", os.environ["BASALT_TEST_PG_URL"], "-qAt", "-c", f"CREATE DATABASE {name}"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 or "already exists" in out.stderr, out.stderr
        _databases.add(name)
    direct = os.environ["BASALT_TEST_PG_URL"].rsplit("/", 1)[0]
    base = os.environ.get("BASALT_TEST_PGB_URL", os.environ["BASALT_TEST_PG_URL"]).rsplit("/", 1)[0]
    return [f"--db={base}/{name}", f"--db-listen={direct}/{name}"]


pg_required = pytest.mark.skipif(
    not os.environ.get("BASALT_TEST_PG_URL"),
    reason="several instances share one PostgreSQL database: set BASALT_TEST_PG_URL "
           "(eval \"$(scripts/pg-env.sh start /tmp/pg)\")")


class RedisServer:
    """A redis-server on 127.0.0.1 on a free port (or the given one), no
    persistence, in its own folder; stopped by PID."""

    def __init__(self, folder, port=None, args=()):
        self.dir = folder
        self.port = port or free_port()
        self.proc = None
        self.args = list(args)  # more redis-server options (e.g. --requirepass)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        self.log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, *self.args],
            stdout=self.log, stderr=self.log)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    answer = s.recv(64)
                    if answer.startswith(b"+PONG") or answer.startswith(b"-NOAUTH"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def cli(self, *args):
        """One command through redis-cli; its output, stripped."""
        auth = ["-a", self.args[self.args.index("--requirepass") + 1], "--no-auth-warning"] \
            if "--requirepass" in self.args else []
        out = subprocess.run(["redis-cli", "-p", str(self.port), *auth, *args], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.log.close()

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)


@pytest.fixture
def redis_server():
    d = tempfile.mkdtemp(prefix="basalt-redis-")
    r = RedisServer(d).start()
    yield r
    r.stop()
    shutil.rmtree(d, ignore_errors=True)


def metric(url, name):
    """A metric's value from /metrics (loopback may read it), or None."""
    for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def metrics_text(url, token=None):
    """/metrics of the server at url as one instance would answer it: in cluster mode
    each instance counts its own requests and jobs (as Prometheus would scrape them
    one by one), so counters (..._total, ..._sum, ..._count, ..._bucket) are summed
    over the instances; gauges, which mostly read shared state (the queue in the
    database), are the largest of theirs. Text in the exposition format, comments
    dropped."""
    urls = instance_urls(url)
    headers = {"Authorization": token} if token else {}
    if len(urls) == 1:
        return requests.get(url + "/metrics", headers=headers, timeout=10).text
    vals, order = {}, []
    for u in urls:
        for line in requests.get(u + "/metrics", headers=headers, timeout=10).text.splitlines():
            if not line or line.startswith("#"):
                continue
            name, v = line.rsplit(" ", 1)
            v = float(v)
            base = name.split("{", 1)[0]
            counter = base.endswith(("_total", "_sum", "_count", "_bucket"))
            if name not in vals:
                order.append(name)
                vals[name] = v
            else:
                vals[name] = vals[name] + v if counter else max(vals[name], v)
    def fmt(v):
        return str(int(v)) if v == v and abs(v) != float("inf") and v == int(v) else repr(v)
    return "".join(f"{n} {fmt(vals[n])}\n" for n in order)


def wait_until(cond, timeout=10, what="the condition"):
    """Polls cond() until it is true (returns its value) or fails after timeout s."""
    deadline = time.time() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        time.sleep(0.05)
