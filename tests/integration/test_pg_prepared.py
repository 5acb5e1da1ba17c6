"""Named prepared statements on a direct connection (--db-prepared=1) survive schema
changes (ADR 0014): PostgreSQL refuses to run a prepared `SELECT *` whose result
columns changed ("cached plan must not change result type"); the reader prepares the
statement again and retries, and the writer drops its statements after its own DDL.
Before the fix, every view of a collection that gained a field answered 500 until
the server restarted.

PostgreSQL only (BASALT_TEST_BACKEND=postgres, make integration-pg).
"""
import pytest

from conftest import BACKEND, Client, Server, db_args, make_superuser, ADMIN_EMAIL, ADMIN_PASSWORD

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
