"""The writer's connection cut at chosen points of the wire protocol (pgcut.py, a
proxy between Basalt and PostgreSQL): before a statement reaches the server, after
it did but before any answer, and after each message of the answer, for a lone
create (BEGIN, INSERT ... RETURNING, the outbox statement sent later, COMMIT) and
for a group commit (RELEASE/SAVEPOINT pipelined with the next job's INSERT).

Whatever the point, every answer is 200 (and then the record is there: acknowledged
means committed) or 503 with a message about the database, never 500 and never a
dropped HTTP connection; and the next write succeeds (Basalt reconnects by itself).
Deterministic: the cut is placed by the protocol, not by timing; the holds only
shape the batches (a held answer lets other creates queue behind it).
"""
import os
import subprocess
import tempfile
import threading
import time
from urllib.parse import urlparse

import pytest
import requests

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, BACKEND, BIN, Client, Server
from pgcut import CutProxy

pytestmark = pytest.mark.skipif(BACKEND != "postgres", reason="PostgreSQL write-path faults (make integration-pg)")


@pytest.fixture(scope="module")
def cut_server():
    direct = os.environ["BASALT_TEST_PG_URL"]
    u = urlparse(direct)
    d = tempfile.mkdtemp(prefix="basalt-pgcut-")
    name = "bt_cut_" + os.path.basename(d).replace("-", "_").lower()
    out = subprocess.run(["psql", direct, "-qAt", "-c", f"CREATE DATABASE {name}"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    proxy = CutProxy(u.hostname, u.port)
    base = f"{u.scheme}://{u.username}@127.0.0.1"
    db = [f"--db={base}:{proxy.port}/{name}?sslmode=disable", f"--db-listen={base}:{u.port}/{name}",
          "--db-statement-timeout-ms=2000", "--db-connect-timeout-ms=2000", "--db-pool-size=2",
          "--cache-budget-mb=0"]  # every read reaches the database (and the proxy)
    out = subprocess.run([BIN, "superuser", "upsert", ADMIN_EMAIL, ADMIN_PASSWORD, f"--dir={d}",
                          f"--db={base}:{u.port}/{name}"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    srv = Server(d, db, db=[], topology="single").start()
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    r = admin.post("/api/collections", json={"name": "cuts", "listRule": "", "viewRule": "", "createRule": "",
                                             "fields": [{"name": "title", "type": "text"}]})
    assert r.status_code == 200, r.text
    yield srv, admin, proxy
    proxy.close()
    assert srv.stop() == 0


def create(url, title, codes):
    try:
        r = requests.post(url + "/api/collections/cuts/records", json={"title": title}, timeout=30)
        codes.append((title, r.status_code, r.json() if r.headers.get("content-type", "").startswith(
            "application/json") else r.text))
    except requests.RequestException as e:
        codes.append((title, "conn", str(e)))


def check(srv, admin, proxy, codes):
    proxy.disarm()
    bad = [c for c in codes if c[1] not in (200, 503)]
    assert not bad, bad
    for title, code, body in codes:
        if code == 503:
            assert "database" in body["message"].lower(), body
    # Service comes back by itself (a reconnect waits at most its backoff).
    deadline = time.time() + 10
    after = None
    while time.time() < deadline:
        after = requests.post(srv.url + "/api/collections/cuts/records", json={"title": "after"}, timeout=30)
        if after.status_code == 200:
            break
        assert after.status_code == 503, after.text
        time.sleep(0.2)
    assert after is not None and after.status_code == 200, after.text
    # Acknowledged means committed.
    for title, code, body in codes:
        if code == 200:
            r = admin.get(f"/api/collections/cuts/records/{body['id']}")
            assert r.status_code == 200, (title, r.text)


# The statements of a lone create, and where each is recognised on the wire.
LONE = [(b"BEGIN", "begin"), (b"INSERT INTO \"cuts\"", "insert"), (b"_events_seq", "outbox"),
        (b"COMMIT", "commit")]


@pytest.mark.parametrize("trigger,label", LONE, ids=[l for _, l in LONE])
def test_lone_create_cut_anywhere_gives_503_never_500(cut_server, trigger, label):
    srv, admin, proxy = cut_server
    for cut in range(-1, 14):
        codes = []
        a = proxy.arm(trigger, cut=cut)
        create(srv.url, f"{label}-{cut}", codes)
        assert a.fired.is_set() or codes[0][1] == 200, (label, cut, codes)
        check(srv, admin, proxy, codes)


# In a group commit: the savepoint between jobs rides with the next job's INSERT, and
# the previous job's outbox statement with it (one pipeline).
GROUP = [(b"RELEASE SAVEPOINT", "savepoint"), (b"_events_seq", "outbox"), (b"COMMIT", "commit")]


@pytest.mark.parametrize("trigger,label", GROUP, ids=[l for _, l in GROUP])
def test_group_commit_cut_anywhere_gives_503_never_500(cut_server, trigger, label):
    srv, admin, proxy = cut_server
    for cut in range(-1, 12):
        codes = []
        # The first create's INSERT is held: the next four queue behind it and run as
        # one group commit, whose pipelines are cut.
        hold = proxy.arm(b"INSERT INTO \"cuts\"", hold=0.5)
        first = threading.Thread(target=create, args=(srv.url, f"g{label}-{cut}-0", codes))
        first.start()
        assert hold.fired.wait(10)
        proxy.arm(trigger, cut=cut)
        rest = [threading.Thread(target=create, args=(srv.url, f"g{label}-{cut}-{i}", codes)) for i in range(1, 5)]
        for t in rest:
            t.start()
        for t in [first] + rest:
            t.join(60)
        check(srv, admin, proxy, codes)


def test_read_cut_anywhere_gives_200_or_503_never_500(cut_server):
    """A read's connection cut at each message of its answer: the pool runs it again
    once on a new connection (200) or answers 503; never 500."""
    srv, admin, proxy = cut_server
    r = requests.post(srv.url + "/api/collections/cuts/records", json={"title": "to read"}, timeout=30)
    assert r.status_code == 200, r.text
    rid = r.json()["id"]
    for path in ("/api/collections/cuts/records?perPage=5", f"/api/collections/cuts/records/{rid}"):
        for cut in range(-1, 8):
            a = proxy.arm(b'"cuts"', cut=cut)
            r = requests.get(srv.url + path, timeout=30)
            proxy.disarm()
            assert a.fired.is_set(), (path, cut)
            assert r.status_code in (200, 503), (path, cut, r.status_code, r.text)
            if r.status_code == 503:
                assert "database" in r.json()["message"].lower(), r.text
        r = requests.get(srv.url + path, timeout=30)
        assert r.status_code == 200, r.text
