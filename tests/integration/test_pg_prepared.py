"""Named prepared statements on a direct connection (--db-prepared=1) survive schema
changes (ADR 0014): PostgreSQL refuses to run a prepared `SELECT *` whose result
columns changed ("cached plan must not change result type"); the reader prepares the
statement again and retries, and the writer drops its statements after its own DDL.
Before the fix, every view of a collection that gained a field answered 500 until
the server restarted.

PostgreSQL only (BASALT_TEST_BACKEND=postgres, make integration-pg).
"""
import os

import pytest

from conftest import BACKEND, Client, Server, db_args, make_superuser, wait_until, ADMIN_EMAIL, ADMIN_PASSWORD

pytestmark = pytest.mark.skipif(BACKEND != "postgres", reason="PostgreSQL only (make integration-pg)")


def test_prepared_statements_survive_a_field_added_and_removed(tmpdir_path):
    make_superuser(tmpdir_path)
    direct = [a for a in db_args(tmpdir_path) if a.startswith("--db-listen=")][0].split("=", 1)[1]
    srv = Server(tmpdir_path, ["--threads=1", "--cache-budget-mb=0", "--db-pool-size=2", "--db-prepared=1"],
                 db=[f"--db={direct}", f"--db-listen={direct}"]).start()
    try:
        admin = Client(srv.url)
        admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        r = admin.post("/api/collections", json={"name": "prep_notes", "listRule": "", "viewRule": "",
                                                 "updateRule": "", "fields": [{"name": "title", "type": "text"}]})
        assert r.status_code == 200, r.text
        fields = r.json()["fields"]
        rid = admin.post("/api/collections/prep_notes/records", json={"title": "one"}).json()["id"]
        guest = Client(srv.url)
        for _ in range(6):  # every pool connection has prepared the view's statement
            assert guest.get(f"/api/collections/prep_notes/records/{rid}").status_code == 200
        r = admin.patch("/api/collections/prep_notes", json={"fields": fields + [{"name": "body", "type": "text"}]})
        assert r.status_code == 200, r.text
        for _ in range(6):
            r = guest.get(f"/api/collections/prep_notes/records/{rid}")
            assert r.status_code == 200, r.text
            assert r.json()["body"] == "" and r.json()["title"] == "one"
        # The writer's own statements after its DDL: an update reads the record back.
        r = admin.patch(f"/api/collections/prep_notes/records/{rid}", json={"body": "two"})
        assert r.status_code == 200, r.text
        assert r.json()["body"] == "two"
        r = admin.patch("/api/collections/prep_notes", json={"fields": fields})
        assert r.status_code == 200, r.text
        for _ in range(6):
            r = guest.get(f"/api/collections/prep_notes/records/{rid}")
            assert r.status_code == 200, r.text
            assert "body" not in r.json()
        r = admin.patch(f"/api/collections/prep_notes/records/{rid}", json={"title": "three"})
        assert r.status_code == 200, r.text
        assert r.json()["title"] == "three"
    finally:
        rc = srv.stop()
        assert srv.killed or rc == 0, f"basalt exited with {rc}; see {tmpdir_path}/server.log"


def test_another_instances_schema_change_drops_the_prepared_statements(tmpdir_path):
    """Two instances on one database (whatever the topology: each is one process, so
    that the test decides which one serves each request). B's writer and readers have
    prepared their statements over prep_shared; A adds, then removes, a field. Every
    write and read through B afterwards must succeed: B drops what it prepared over the
    old columns once it has reloaded the definitions, before its next job (the writer
    cannot retry a refused statement inside its transaction: a 500 before the fix)."""
    shared = db_args(tmpdir_path)
    direct = [a for a in shared if a.startswith("--db-listen=")][0].split("=", 1)[1]
    make_superuser(tmpdir_path)
    flags = ["--threads=1", "--cache-budget-mb=0", "--db-pool-size=2", "--db-prepared=1"]
    db = [f"--db={direct}", f"--db-listen={direct}"]
    bdir = os.path.join(tmpdir_path, "b")
    os.makedirs(bdir)
    a = Server(tmpdir_path, flags, db=db, topology="single").start()
    b = None
    try:
        b = Server(bdir, flags, db=db, topology="single").start()
        admin_a, admin_b = Client(a.url), Client(b.url)
        for c in (admin_a, admin_b):
            c.token = c.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        r = admin_a.post("/api/collections", json={"name": "prep_shared", "listRule": "", "viewRule": "",
                                                   "updateRule": "", "createRule": "",
                                                   "fields": [{"name": "title", "type": "text"}]})
        assert r.status_code == 200, r.text
        fields = r.json()["fields"]
        guest_b = Client(b.url)

        def use_b(title):
            """B's writer (create, update: each reads its record back) and readers."""
            r = guest_b.post("/api/collections/prep_shared/records", json={"title": title})
            assert r.status_code == 200, r.text
            rid = r.json()["id"]
            r = guest_b.patch(f"/api/collections/prep_shared/records/{rid}", json={"title": title + "!"})
            assert r.status_code == 200, r.text
            for _ in range(4):  # both pool connections
                r = guest_b.get(f"/api/collections/prep_shared/records/{rid}")
                assert r.status_code == 200, r.text
            return r.json()

        def b_sees(test):
            wait_until(lambda: test([x["name"] for x in admin_b.get("/api/collections/prep_shared").json()["fields"]]),
                       what="B has A's change of prep_shared")

        # B learns of A's collection (its notification), then prepares over it.
        wait_until(lambda: guest_b.get("/api/collections/prep_shared/records").status_code == 200,
                   what="B sees A's new collection")
        assert use_b("one")["title"] == "one!"
        r = admin_a.patch("/api/collections/prep_shared",
                          json={"fields": fields + [{"name": "body", "type": "text"}]})
        assert r.status_code == 200, r.text
        # A's change is answered once its notification came back, which in practice
        # reached B too (ADR 0013; a request that overtakes it on a loaded machine is
        # answered 503 "please retry"). B serves the new definitions
        # once it has them: the prepared statements are what is under test here.
        b_sees(lambda f: "body" in f)
        rec = use_b("two")
        assert rec["title"] == "two!" and rec["body"] == ""
        r = admin_a.patch("/api/collections/prep_shared", json={"fields": fields})
        assert r.status_code == 200, r.text
        b_sees(lambda f: "body" not in f)
        rec = use_b("three")
        assert rec["title"] == "three!" and "body" not in rec
        log = b.log_text()
        assert "cached plan must not change result type" not in log, log[-3000:]
    finally:
        rcs = [s.stop() for s in (b, a) if s is not None]
        assert all(rc == 0 for rc in rcs), f"an instance exited with {rcs}; see {tmpdir_path}"
