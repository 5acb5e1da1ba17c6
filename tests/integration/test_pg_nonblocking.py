"""A read that waits on PostgreSQL does not stop its worker (ADR 0004): with one worker
thread, while a record view waits for a table lock another session holds, the same
worker still answers the health check, a view of another collection, the readiness
probe and a realtime connection's ping; once the lock is released the waiting view
completes with 200. Reads are jobs on the read pool (--db-pool-size), never on the
worker's loop.

PostgreSQL only (BASALT_TEST_BACKEND=postgres, make integration-pg).
"""
import subprocess
import threading
import time

import pytest
import requests

from conftest import BACKEND, Client, Server, db_args, make_superuser, ADMIN_EMAIL, ADMIN_PASSWORD
from rtclient import WS

pytestmark = pytest.mark.skipif(BACKEND != "postgres", reason="PostgreSQL only (make integration-pg)")


class Locker:
    """A psql session that holds ACCESS EXCLUSIVE on a table in an open transaction."""

    def __init__(self, url, table):
        self.p = subprocess.Popen(["psql", url, "-qAt", "-v", "ON_ERROR_STOP=1"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.p.stdin.write(f'BEGIN; LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE; SELECT \'locked\';\n')
        self.p.stdin.flush()
        line = self.p.stdout.readline().strip()
        assert line == "locked", self.p.stderr.read()

    def release(self):
        if self.p.poll() is None:
            self.p.stdin.write("COMMIT;\n")
            self.p.stdin.close()
            self.p.wait(timeout=30)


@pytest.fixture
def setup(tmpdir_path):
    make_superuser(tmpdir_path)
    # One worker, no cache (every view reads the database), reads on the pool.
    srv = Server(tmpdir_path, ["--threads=1", "--cache-budget-mb=0", "--db-pool-size=4"]).start()
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    ids = {}
    for name in ("locked_notes", "free_notes"):
        r = admin.post("/api/collections", json={"name": name, "listRule": "", "viewRule": "",
                                                 "fields": [{"name": "title", "type": "text"}]})
        assert r.status_code == 200, r.text
        r = admin.post(f"/api/collections/{name}/records", json={"title": name})
        assert r.status_code == 200, r.text
        ids[name] = r.json()["id"]
    direct = [a for a in db_args(tmpdir_path) if a.startswith("--db-listen=")][0].split("=", 1)[1]
    yield srv, ids, direct
    rc = srv.stop()
    assert srv.killed or rc == 0, f"basalt exited with {rc}; see {tmpdir_path}/server.log"


def test_a_read_waiting_on_a_lock_does_not_stop_the_worker(setup):
    srv, ids, direct = setup
    locker = Locker(direct, "locked_notes")
    waiting = {}

    def view_locked():
        try:
            waiting["r"] = requests.get(f"{srv.url}/api/collections/locked_notes/records/{ids['locked_notes']}",
                                        timeout=30)
        except Exception as e:  # reported by the assertions below
            waiting["e"] = e

    t = threading.Thread(target=view_locked)
    try:
        t.start()
        # The view reaches the database and waits on the lock (psql sees it waiting).
        deadline = time.time() + 10
        while time.time() < deadline:
            out = subprocess.run(["psql", direct, "-qAt", "-c",
                                  "SELECT count(*) FROM pg_locks WHERE NOT granted"],
                                 capture_output=True, text=True, timeout=10)
            if out.stdout.strip() not in ("", "0"):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the view never waited on the lock")
        assert t.is_alive() and "r" not in waiting

        # The same (only) worker answers meanwhile.
        r = requests.get(f"{srv.url}/api/health", timeout=5)
        assert r.status_code == 200, r.text
        r = requests.get(f"{srv.url}/api/collections/free_notes/records/{ids['free_notes']}", timeout=5)
        assert r.status_code == 200 and r.json()["title"] == "free_notes", r.text
        r = requests.get(f"{srv.url}/api/health?ready=1", timeout=5)
        assert r.status_code == 200, r.text
        ws = WS(srv.url)
        try:
            pong = ws.request({"type": "ping", "requestId": "p1"}, timeout=5)
            assert pong["type"] == "pong", pong
        finally:
            ws.close()
        # A token check that must read its record (a new login's token, not memoised).
        admin = Client(srv.url)
        admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        r = admin.get(f"/api/collections/free_notes/records/{ids['free_notes']}")
        assert r.status_code == 200, r.text
        assert t.is_alive() and "r" not in waiting, "the locked view answered while the lock was held"
    finally:
        locker.release()
        t.join(timeout=30)
    assert "e" not in waiting, waiting.get("e")
    assert waiting["r"].status_code == 200, waiting["r"].text
    assert waiting["r"].json()["title"] == "locked_notes"
