"""Schema changes follow across instances: two instances on one PostgreSQL database,
a collection created, changed and deleted through A is seen as such by B without a
restart (A's NOTIFY wakes B, which compares the collections' fingerprint and reloads
them). Found by the cluster mode of the integration suite."""
import os
import subprocess
import tempfile

import pytest

from conftest import (ADMIN_EMAIL, ADMIN_PASSWORD, Client, Server, assert_error, make_superuser, pg_required,
                      shared_db_args, wait_until)

pytestmark = pg_required


@pytest.fixture
def pair():
    folder = tempfile.mkdtemp(prefix="basalt-schema-")
    db = shared_db_args(folder)
    da, dbb = os.path.join(folder, "a"), os.path.join(folder, "b")
    os.mkdir(da)
    os.mkdir(dbb)
    make_superuser(da, db=db)
    a = Server(da, db=db).start()
    b = Server(dbb, db=db).start()
    yield a, b
    assert a.stop() == 0 and b.stop() == 0


def test_collections_made_on_a_are_served_by_b(pair):
    a, b = pair
    admin_a, admin_b = Client(a.url), Client(b.url)
    admin_a.token = admin_a.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    admin_b.token = admin_b.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    anon_b = Client(b.url)
    r = admin_a.post("/api/collections", json={"name": "spread", "listRule": "", "createRule": "",
                                               "fields": [{"name": "title", "type": "text"}]})
    assert r.status_code == 200, r.text
    wait_until(lambda: anon_b.get("/api/collections/spread/records").status_code == 200, timeout=20,
               what="B serving the collection made on A")
    assert anon_b.post("/api/collections/spread/records", json={"title": "from b"}).status_code == 200
    assert Client(a.url).get("/api/collections/spread/records").json()["totalItems"] == 1
    # A rule changed on A holds on B.
    assert admin_a.patch("/api/collections/spread", json={"listRule": None}).status_code == 200
    wait_until(lambda: anon_b.get("/api/collections/spread/records").status_code == 403, timeout=20,
               what="B applying the rule changed on A")
    # A new field made on A is accepted by B.
    r = admin_a.patch("/api/collections/spread", json={"fields": [{"name": "title", "type": "text"},
                                                                   {"name": "n", "type": "number"}]})
    assert r.status_code == 200, r.text
    wait_until(lambda: "n" in [f["name"] for f in admin_b.get("/api/collections/spread").json()["fields"]],
               timeout=20, what="B knowing the field added on A")
    assert admin_b.post("/api/collections/spread/records", json={"title": "t", "n": 3}).json()["n"] == 3
    # Deleted on A: gone on B.
    assert admin_a.delete("/api/collections/spread").status_code == 204
    wait_until(lambda: anon_b.get("/api/collections/spread/records").status_code == 404, timeout=20,
               what="B forgetting the collection deleted on A")


def test_schema_changes_on_a_hold_on_b_at_once(pair):
    """Read-your-writes for the schema (ADR 0013): once A has answered a schema change,
    B's next request sees it with no waiting wherever B can tell it might be stale: a
    collection it does not know (made on A), a rule that refuses (opened, or the
    collection deleted, on A). A change B cannot suspect (a rule locked on A) holds as
    soon as A's notification arrives: waited for, with a bound."""
    a, b = pair
    admin_a, admin_b = Client(a.url), Client(b.url)
    admin_a.token = admin_a.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    admin_b.token = admin_b.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    anon_b = Client(b.url)
    for round_ in range(5):
        name = f"atonce{round_}"
        r = admin_a.post("/api/collections", json={"name": name, "listRule": "", "createRule": "",
                                                   "fields": [{"name": "title", "type": "text"}]})
        assert r.status_code == 200, r.text
        # Made on A: at once B lists it, creates in it, and shows the superuser its definition.
        r = anon_b.get(f"/api/collections/{name}/records")
        assert r.status_code == 200, (round_, r.text)
        assert anon_b.post(f"/api/collections/{name}/records", json={"title": "b"}).status_code == 200
        assert admin_b.get(f"/api/collections/{name}").status_code == 200
        # Locked on A: B refuses once the notification is in.
        assert admin_a.patch(f"/api/collections/{name}", json={"listRule": None}).status_code == 200
        wait_until(lambda: anon_b.get(f"/api/collections/{name}/records").status_code == 403, timeout=20,
                   what="B applying the rule locked on A")
        # Opened again on A: B's refusal is checked first, so B serves it at once.
        assert admin_a.patch(f"/api/collections/{name}", json={"listRule": ""}).status_code == 200
        assert anon_b.get(f"/api/collections/{name}/records").status_code == 200, round_
        assert admin_a.patch(f"/api/collections/{name}", json={"listRule": None}).status_code == 200
        wait_until(lambda: anon_b.get(f"/api/collections/{name}/records").status_code == 403, timeout=20,
                   what="B applying the rule locked on A")
        # Deleted on A: B's locked rule is checked first, so B says 404 at once.
        assert admin_a.delete(f"/api/collections/{name}").status_code == 204
        assert anon_b.get(f"/api/collections/{name}/records").status_code == 404, round_
        wait_until(lambda: admin_b.get(f"/api/collections/{name}").status_code == 404, timeout=20,
                   what="B forgetting the collection deleted on A")


def test_a_write_that_overtakes_a_change_made_elsewhere_answers_503(tmpdir_path):
    """A write built from definitions that another instance has just changed (its
    notification not yet here) meets a column that is gone: 503 "please retry", the
    transaction rolled back, the instance reloads; never a 500. The other instance is
    played by psql renaming the column away without a notification, which makes it
    deterministic; renamed back, the same write succeeds."""
    db = shared_db_args(tmpdir_path)
    direct = [a for a in db if a.startswith("--db-listen=")][0].split("=", 1)[1]

    def psql(sql):
        out = subprocess.run(["psql", direct, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    make_superuser(tmpdir_path, db=db)
    srv = Server(tmpdir_path, db=db, topology="single").start()
    try:
        admin = Client(srv.url)
        admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        r = admin.post("/api/collections", json={"name": "overtaken", "createRule": "", "updateRule": "",
                                                 "fields": [{"name": "title", "type": "text"},
                                                            {"name": "extra", "type": "text"}]})
        assert r.status_code == 200, r.text
        rid = admin.post("/api/collections/overtaken/records", json={"title": "kept", "extra": "e"}).json()["id"]
        psql('ALTER TABLE overtaken RENAME COLUMN extra TO extra_elsewhere')
        for r in (admin.post("/api/collections/overtaken/records", json={"title": "new", "extra": "x"}),
                  admin.patch(f"/api/collections/overtaken/records/{rid}", json={"title": "changed", "extra": "y"})):
            assert_error(r, 503)
            assert "please retry" in r.json()["message"], r.text
        # Nothing of the refused writes stayed; the instance is still up.
        assert psql("SELECT count(*) FROM overtaken") == "1"
        assert psql(f"SELECT title FROM overtaken WHERE id = '{rid}'") == "kept"
        assert admin.get("/api/health").status_code == 200
        psql('ALTER TABLE overtaken RENAME COLUMN extra_elsewhere TO extra')
        r = admin.post("/api/collections/overtaken/records", json={"title": "new", "extra": "x"})
        assert r.status_code == 200, r.text
        assert "postgres error 42703" not in srv.log_text()
    finally:
        assert srv.stop() == 0
