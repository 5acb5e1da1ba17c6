"""View collections (PocketBase's "view" type): read-only records from a SELECT over
other collections, fields inferred from the query, list/view rules, a dry run, and
queries that could do anything but read refused. Both backends."""
import pytest

from conftest import Client, assert_error


@pytest.fixture(scope="module")
def shop(shared_admin):
    a = shared_admin
    users = a.post("/api/collections", json={"name": "vusers", "type": "auth", "listRule": "", "viewRule": "",
                                             "fields": [{"name": "name", "type": "text"}]}).json()
    r = a.post("/api/collections", json={
        "name": "vorders", "listRule": "", "viewRule": "",
        "fields": [{"name": "total", "type": "number"},
                   {"name": "status", "type": "select", "maxSelect": 1, "values": ["new", "paid"]},
                   {"name": "note", "type": "text", "hidden": True},
                   {"name": "buyer", "type": "relation", "collectionId": users["id"], "maxSelect": 1}]})
    assert r.status_code == 200, r.text
    ids = {}
    for name in ("ann", "bob"):
        r = a.post("/api/collections/vusers/records", json={"email": f"{name}@v.io", "password": "secret123",
                                                            "passwordConfirm": "secret123", "name": name})
        ids[name] = r.json()["id"]
    for buyer, total, status in [("ann", 10, "paid"), ("ann", 5, "new"), ("bob", 7, "paid")]:
        r = a.post("/api/collections/vorders/records", json={"total": total, "status": status, "note": "n",
                                                             "buyer": ids[buyer]})
        assert r.status_code == 200, r.text
    return ids


VIEW = {"name": "paid_orders", "type": "view", "listRule": "", "viewRule": "",
        "viewQuery": "SELECT id, total, status, buyer, note FROM vorders WHERE status = 'paid'"}


def test_a_view_infers_fields_and_serves_read_only_records(shop, shared_admin):
    a = shared_admin
    r = a.post("/api/collections", json=VIEW)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "view" and body["viewQuery"] == VIEW["viewQuery"]
    fields = {f["name"]: f for f in body["fields"]}
    assert fields["total"]["type"] == "number" and fields["status"]["type"] == "select"
    assert fields["status"]["values"] == ["new", "paid"]
    assert fields["buyer"]["type"] == "relation" and fields["note"]["hidden"] is True
    anon = Client(a.url)
    items = anon.get("/api/collections/paid_orders/records", params={"sort": "-total",
                                                                     "expand": "buyer"}).json()["items"]
    assert [i["total"] for i in items] == [10, 7]
    assert items[0]["expand"]["buyer"]["name"] == "ann"
    assert "note" not in items[0]  # hidden stays hidden
    one = anon.get(f"/api/collections/paid_orders/records/{items[1]['id']}")
    assert one.status_code == 200 and one.json()["total"] == 7
    # Filters, counts and statistics work on it as on any collection.
    r = anon.get("/api/collections/paid_orders/records", params={"filter": "total > 8"})
    assert r.json()["totalItems"] == 1
    stats = a.get("/api/basalt/collections/paid_orders/stats", params={"aggregates": "sum(total)"}).json()
    assert stats["items"][0]["sum"]["total"] == 17
    # It follows the collections it reads (no stale cache).
    first = anon.get("/api/collections/paid_orders/records").json()["totalItems"]
    a.post("/api/collections/vorders/records", json={"total": 1, "status": "paid", "buyer": shop["bob"]})
    assert anon.get("/api/collections/paid_orders/records").json()["totalItems"] == first + 1
    # Read-only, for superusers too.
    for r in (a.post("/api/collections/paid_orders/records", json={"total": 1}),
              a.patch(f"/api/collections/paid_orders/records/{items[0]['id']}", json={"total": 2}),
              a.delete(f"/api/collections/paid_orders/records/{items[0]['id']}")):
        assert r.status_code in (400, 403), r.text
    assert anon.get("/api/collections/paid_orders/records").json()["totalItems"] == first + 1


def test_view_rules_and_changes(shop, shared_admin):
    a = shared_admin
    r = a.post("/api/collections", json={
        "name": "order_sums", "type": "view", "listRule": "@request.auth.id != ''", "viewRule": None,
        "viewQuery": "SELECT buyer AS id, SUM(total) AS spent, COUNT(*) AS n FROM vorders GROUP BY buyer"})
    assert r.status_code == 200, r.text
    assert {f["name"]: f["type"] for f in r.json()["fields"]} == {"id": "text", "spent": "number", "n": "number"}
    anon = Client(a.url)
    assert anon.get("/api/collections/order_sums/records").json()["items"] == []
    ann = Client(a.url)
    ann.token = ann.login("vusers", "ann@v.io", "secret123")
    got = {i["id"]: i["spent"] for i in ann.get("/api/collections/order_sums/records").json()["items"]}
    assert got[shop["ann"]] == 15
    assert_error(ann.get(f"/api/collections/order_sums/records/{shop['ann']}"), 403)
    # A rule on a field the view does not have is refused.
    assert_error(a.patch("/api/collections/order_sums", json={"listRule": "nope = 1"}), 400, "listRule")
    # A new query changes the fields.
    r = a.patch("/api/collections/order_sums",
                json={"viewQuery": "SELECT buyer AS id, MAX(total) AS biggest FROM vorders GROUP BY buyer"})
    assert r.status_code == 200, r.text
    assert [f["name"] for f in r.json()["fields"]] == ["id", "biggest"]
    # A collection a view reads cannot be deleted or renamed under it.
    assert_error(a.delete("/api/collections/vorders"), 400)
    assert_error(a.patch("/api/collections/vorders", json={"name": "vorders2"}), 400)
    assert a.delete("/api/collections/order_sums").status_code == 204
    assert a.get("/api/collections/order_sums/records").status_code == 404


def test_dry_run_view(shop, shared_admin):
    r = shared_admin.post("/api/basalt/collections/dry-run-view",
                          json={"viewQuery": "SELECT id, total FROM vorders"})
    assert r.status_code == 200, r.text
    assert [f["name"] for f in r.json()["fields"]] == ["id", "total"]
    assert shared_admin.get("/api/collections/dry_run_view").status_code == 404
    assert_error(shared_admin.post("/api/basalt/collections/dry-run-view", json={"viewQuery": "SELECT 1 AS x"}),
                 400, "viewQuery")
    assert_error(Client(shared_admin.url).post("/api/basalt/collections/dry-run-view",
                                               json={"viewQuery": "SELECT id FROM vorders"}), 401)


@pytest.mark.parametrize("query", [
    "DELETE FROM vorders",
    "SELECT id FROM vorders; DROP TABLE vorders",
    "SELECT id FROM vorders -- hidden",
    "SELECT id FROM vorders /* x */",
    "SELECT id, password FROM vusers",
    "SELECT id, tokenKey FROM vusers",
    "SELECT id, email FROM _superusers",
    "SELECT id FROM \"_collections\"",
    "SELECT id, pg_read_file('/etc/passwd') AS f FROM vorders",
    "SELECT id, load_extension('x') AS f FROM vorders",
    "WITH d AS (DELETE FROM vorders RETURNING id) SELECT id FROM d",
    "SELECT id INTO t2 FROM vorders",
    "SELECT id FROM vorders WHERE note = E'\\\\'';' ",
    "SELECT id, $$x$$ AS s FROM vorders",
    "''",
    "[select] id FROM vorders",
    "SELECT id FROM sqlite_master",
    "SELECT id FROM pg_catalog.pg_authid",
    "SELECT id, total AS \"bad name\" FROM vorders",
    "SELECT id, total, total FROM vorders",
    "SELECT total FROM vorders",
    "SELECT id FROM nowhere",
    "SELECT id FROM vorders WHERE note = 'unclosed",
    "",
    "   ",
])
def test_unsafe_or_broken_queries_are_refused(shop, shared_admin, query):
    r = shared_admin.post("/api/collections", json={"name": "bad_view", "type": "view", "viewQuery": query})
    assert_error(r, 400, "viewQuery")
    assert shared_admin.get("/api/collections/bad_view").status_code == 404
    # The data is untouched.
    assert shared_admin.get("/api/collections/vorders/records").json()["totalItems"] >= 3


def test_views_take_no_write_rules_or_indexes(shop, shared_admin):
    assert_error(shared_admin.post("/api/collections", json=dict(VIEW, name="v2", createRule="")), 400,
                 "createRule")
    assert_error(shared_admin.post("/api/collections", json=dict(
        VIEW, name="v3", indexes=["CREATE INDEX idx_v3 ON v3 (total)"])), 400, "indexes")
    # A base collection cannot become a view, nor a view a base collection.
    assert_error(shared_admin.patch("/api/collections/vorders", json={"type": "view"}), 400, "type")
