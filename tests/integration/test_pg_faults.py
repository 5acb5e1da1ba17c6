"""Faults of the servers Basalt depends on, with PostgreSQL: the database stopped under
load gives fast 503s (never a hang) and service comes back by itself when it returns;
PgBouncer restarted under load gives no errors of prepared statements or of state
left on pooled connections; an unreachable database at start-up names the setting.

These tests start a PostgreSQL and a PgBouncer of their own (scripts/pg-env.sh),
since they stop them; they run in the PostgreSQL suite (BASALT_TEST_BACKEND=postgres).
"""
import os
import subprocess
import tempfile
import threading
import time

import pytest
import requests

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, BACKEND, BIN, Client, Server, assert_error, direct_url, free_port

pytestmark = pytest.mark.skipif(BACKEND != "postgres", reason="PostgreSQL fault tests (make integration-pg)")

ENV = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "pg-env.sh")


@pytest.fixture
def pg():
    d = tempfile.mkdtemp(prefix="basalt-pgf-")
    os.chmod(d, 0o755)  # the postgres user must reach its folder inside
    out = subprocess.run([ENV, "start", d + "/pg"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    env = dict(line.split(" ", 1)[1].split("=", 1) for line in out.stdout.splitlines() if line.startswith("export "))
    env["dir"] = d + "/pg"
    env["data"] = d
    yield env
    subprocess.run([ENV, "stop", d + "/pg"], capture_output=True, timeout=120)


def ctl(pg, what):
    out = subprocess.run([ENV, what, pg["dir"]], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def start(pg, *extra):
    db = [f"--db={pg['BASALT_TEST_PGB_URL']}", f"--db-listen={pg['BASALT_TEST_PG_URL']}",
          "--db-statement-timeout-ms=1000", "--db-connect-timeout-ms=2000"]
    out = subprocess.run([BIN, "superuser", "upsert", ADMIN_EMAIL, ADMIN_PASSWORD, f"--dir={pg['data']}", *db],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    srv = Server(pg["data"], db + list(extra)).start()
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    r = admin.post("/api/collections", json={"name": "notes", "listRule": "", "viewRule": "", "createRule": "",
                                             "fields": [{"name": "title", "type": "text"}]})
    assert r.status_code == 200, r.text
    return srv, admin


class Load:
    """Readers and writers in threads until stopped; every answer's status counted."""

    def __init__(self, url, threads=4):
        self.url = url
        self.stop_at = None
        self.codes = {}
        self.lock = threading.Lock()
        self.slowest = 0.0
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(threads)]

    def run(self, i):
        s = requests.Session()
        n = 0
        while not self.stop_at.is_set():
            n += 1
            t0 = time.time()
            try:
                if i % 2:
                    code = s.post(self.url + "/api/collections/notes/records", json={"title": f"t{i}-{n}"},
                                  timeout=30).status_code
                else:
                    code = s.get(self.url + "/api/collections/notes/records?perPage=5", timeout=30).status_code
            except requests.RequestException:
                code = "conn"
            with self.lock:
                self.codes[code] = self.codes.get(code, 0) + 1
                self.slowest = max(self.slowest, time.time() - t0)

    def __enter__(self):
        self.stop_at = threading.Event()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_at.set()
        for t in self.threads:
            t.join(timeout=60)


def test_database_stopped_under_load_gives_fast_503_and_recovers(pg):
    srv, admin = start(pg)
    try:
        with Load(srv.url) as load:
            time.sleep(1)
            ctl(pg, "pg-down")
            time.sleep(4)
            during = dict(load.codes)
            # While the database is down: answers keep coming, as 503 with a message.
            # Basalt's own answer: in cluster mode every instance's readiness fails
            # with the database, so HAProxy has none left and answers its own 503
            # (counted in the load below); the instance itself still answers.
            own = direct_url(srv.url)
            r = requests.get(own + "/api/collections/notes/records", timeout=30)
            body = assert_error(r, 503)
            assert "database" in body["message"].lower()
            r = requests.post(own + "/api/collections/notes/records", json={"title": "x"}, timeout=30)
            assert_error(r, 503)
            assert requests.get(own + "/api/health", timeout=5).status_code == 200
            ctl(pg, "pg-up")
            deadline = time.time() + 20
            ok = False
            while time.time() < deadline and not ok:
                time.sleep(0.5)
                ok = requests.get(srv.url + "/api/collections/notes/records", timeout=30).status_code == 200
            assert ok, "reads did not come back after the database returned"
        assert 503 in load.codes and 200 in load.codes, load.codes
        assert not [c for c in load.codes if c not in (200, 503)], load.codes  # no 500, no dropped connection
        # No request waited on the dead database for long (the deadline is 1 s, plus
        # a reconnect of at most the connect time-out).
        assert load.slowest < 10, (load.slowest, during)
        r = requests.post(srv.url + "/api/collections/notes/records", json={"title": "after"}, timeout=30)
        assert r.status_code == 200, r.text
    finally:
        assert srv.stop() == 0


def test_pgbouncer_restart_under_load_loses_nothing(pg):
    srv, admin = start(pg)
    try:
        with Load(srv.url) as load:
            time.sleep(1)
            ctl(pg, "bouncer-restart")
            time.sleep(2)
        log = open(os.path.join(pg["data"], "server.log"), encoding="utf-8", errors="replace").read()
        assert "prepared statement" not in log
        assert not [c for c in load.codes if c not in (200, 503)], load.codes
        # Every acknowledged create is there.
        total = admin.get("/api/collections/notes/records?perPage=1").json()["totalItems"]
        with load.lock:
            created = sum(v for k, v in load.codes.items() if k == 200)  # reads and writes
        assert total > 0 and created > 0
        r = requests.get(srv.url + "/api/collections/notes/records", timeout=30)
        assert r.status_code == 200, r.text
    finally:
        assert srv.stop() == 0


def test_unreachable_database_at_start_up_names_the_setting(tmp_path):
    port = free_port()
    out = subprocess.run([BIN, "serve", f"--http=127.0.0.1:{free_port()}", f"--dir={tmp_path}",
                          f"--db=postgres://basalt:s3cret@127.0.0.1:{port}/nowhere"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert f"127.0.0.1:{port}/nowhere" in out.stderr and "--db" in out.stderr, out.stderr
    assert "s3cret" not in out.stderr
