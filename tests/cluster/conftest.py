"""The chaos suite's cluster: deploy/local/cluster.sh up once per session (2 Basalt
instances behind HAProxy, Patroni primary + replica, PgBouncer, Redis), down at the end.

BASALT_CLUSTER_DIR=<folder of a running cluster> reuses one (it is left running).
CHAOS_SMOKE=1 shortens every load phase (make chaos-smoke)."""
import os
import secrets
import subprocess
import tempfile
import threading
import time

import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CLUSTER_SH = os.path.join(REPO, "deploy", "local", "cluster.sh")
BIN = os.environ.get("BASALT_BIN", os.path.join(REPO, "build", "basalt"))
SMOKE = os.environ.get("CHAOS_SMOKE", "0") == "1"
ADMIN = ("admin@example.com", "admin-password-1")
# One client address sends all the load: the limits would refuse it.
NO_LIMITS = ["--rate-limit-anon=0", "--rate-limit-user=0", "--rate-limit-burst=0", "--rate-limit-auth=0"]


def parse_env(text):
    env = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip()
    return env


class Cluster:
    def __init__(self, d, env):
        self.dir = d
        self.env = env
        self.url = env["BASALT_URL"]
        self.instance_urls = env["BASALT_INSTANCE_URLS"].split(",")
        self.patroni = env["PATRONI_URLS"].split(",")
        self.redis = env.get("BASALT_REDIS_FLAG") == "1"

    def sh(self, *args, timeout=120):
        out = subprocess.run([CLUSTER_SH, *args, "--dir", self.dir, "--bin", BIN], capture_output=True, text=True,
                             timeout=timeout)
        assert out.returncode == 0, f"cluster.sh {' '.join(args)}: {out.stderr}"
        return out.stdout

    def pid(self, name):
        with open(os.path.join(self.dir, "pids", name)) as f:
            return int(f.read())

    def role(self, n):
        """Patroni's role of node n (1 or 2): 'master'/'primary', 'replica', or '' when down."""
        try:
            return requests.get(self.patroni[n - 1] + "/patroni", timeout=2).json().get("role", "")
        except requests.RequestException:
            return ""

    def primary_node(self):
        for n in (1, 2):
            try:
                if requests.get(self.patroni[n - 1] + "/primary", timeout=2).status_code == 200:
                    return n
            except requests.RequestException:
                pass
        return None

    def wait_replica(self, n, secs=90):
        """Waits until node n streams as a replica again and is the synchronous standby
        (Patroni's /sync answers 200): with synchronous_mode only that node may be
        promoted, so the next test must not start before it is."""
        end = time.time() + secs
        while time.time() < end:
            try:
                if requests.get(self.patroni[n - 1] + "/sync", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise AssertionError(f"node{n} did not come back as a replica within {secs}s; see {self.dir}/logs")

    def token(self):
        r = requests.post(self.url + "/api/collections/_superusers/auth-with-password",
                          json={"identity": ADMIN[0], "password": ADMIN[1]}, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["token"]


@pytest.fixture(scope="session")
def cluster():
    reuse = os.environ.get("BASALT_CLUSTER_DIR")
    if reuse:
        out = subprocess.run([CLUSTER_SH, "status", "--dir", reuse], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        yield Cluster(reuse, parse_env(out.stdout))
        return
    d = tempfile.mkdtemp(prefix="basalt-chaos-")
    os.rmdir(d)  # cluster.sh makes it, owned by the user the servers run as
    args = [CLUSTER_SH, "up", "--dir", d, "--bin", BIN, "--instances", "2", "--admin", ":".join(ADMIN)]
    for a in NO_LIMITS:
        args += ["--basalt-arg", a]
    t0 = time.time()
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        subprocess.run([CLUSTER_SH, "down", "--dir", d], capture_output=True, timeout=120)
        pytest.fail(f"cluster.sh up failed:\n{out.stderr}")
    print(f"\ncluster up in {time.time() - t0:.1f}s")
    c = Cluster(d, parse_env(out.stdout))
    yield c
    if os.environ.get("BASALT_KEEP_CLUSTER"):
        print(f"cluster left running in {d}")
        return
    subprocess.run([CLUSTER_SH, "down", "--dir", d], capture_output=True, timeout=120)


class Load:
    """Bounded load through one URL: `readers` threads GET, `writers` threads POST records
    with unique ids; every outcome is kept (kind, status or error, seconds, when). Each
    request has a 20 s timeout: one that reaches it counts as hung."""

    def __init__(self, url, coll, read_ids, readers=3, writers=0, token=None, pause=0.005):
        self.url, self.coll, self.read_ids = url, coll, read_ids
        self.readers, self.writers, self.token, self.pause = readers, writers, token, pause
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.results = []  # (kind, status:int|str, seconds, t_start, id)
        self.threads = []

    def _record(self, *row):
        with self.lock:
            self.results.append(row)

    def _reader(self, n):
        s = requests.Session()
        i = n
        while not self.stop.is_set():
            rid = self.read_ids[i % len(self.read_ids)]
            i += 1
            path = (f"/api/collections/{self.coll}/records/{rid}" if i % 3 else
                    f"/api/collections/{self.coll}/records?perPage=5")
            t0 = time.time()
            try:
                r = s.get(self.url + path, timeout=20)
                self._record("read", r.status_code, time.time() - t0, t0, rid)
            except requests.RequestException as e:
                self._record("read", type(e).__name__, time.time() - t0, t0, rid)
                s = requests.Session()
            time.sleep(self.pause)

    def _writer(self, n):
        s = requests.Session()
        i = 0
        while not self.stop.is_set():
            rid = f"w{n:02d}{secrets.token_hex(6)}"  # 15 characters of [a-z0-9], as ids are
            i += 1
            t0 = time.time()
            try:
                r = s.post(self.url + f"/api/collections/{self.coll}/records", json={"id": rid, "n": n},
                           headers={"Authorization": self.token} if self.token else {}, timeout=20)
                self._record("write", r.status_code, time.time() - t0, t0, rid,
                             r.text[:200] if r.status_code != 200 else "")
            except requests.RequestException as e:
                self._record("write", type(e).__name__, time.time() - t0, t0, rid, str(e)[:200])
                s = requests.Session()
            time.sleep(self.pause)

    def __enter__(self):
        for n in range(self.readers):
            self.threads.append(threading.Thread(target=self._reader, args=(n,), daemon=True))
        for n in range(self.writers):
            self.threads.append(threading.Thread(target=self._writer, args=(n,), daemon=True))
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def rows(self, kind):
        with self.lock:
            return [r for r in self.results if r[0] == kind]

    def failures(self, kind):
        return [r for r in self.rows(kind) if r[1] != 200]

    def summary(self):
        out = {}
        for kind in ("read", "write"):
            rows = self.rows(kind)
            if not rows:
                continue
            bad = {}
            for r in rows:
                if r[1] != 200:
                    bad[str(r[1])] = bad.get(str(r[1]), 0) + 1
            out[kind] = {"total": len(rows), "failed": sum(bad.values()), "by_status": bad,
                         "max_seconds": round(max(r[2] for r in rows), 3)}
        return out


def stored_ids(url, coll, token):
    ids = []
    page = 1
    while True:
        r = requests.get(url + f"/api/collections/{coll}/records",
                         params={"page": page, "perPage": 500, "fields": "id", "skipTotal": "0"},
                         headers={"Authorization": token}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        ids += [x["id"] for x in body["items"]]
        if page >= body["totalPages"]:
            break
        page += 1
    return ids
