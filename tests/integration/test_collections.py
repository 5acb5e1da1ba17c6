"""Collections API: superusers create, view, list, change and drop collections."""
import os
import shutil
import tempfile
import threading

import pytest

from conftest import (ADMIN_EMAIL, ADMIN_PASSWORD, Client, Server, assert_error, make_superuser, pg_required,
                      shared_db_args)


def fields_of(coll):
    return {f["name"]: f for f in coll["fields"]}


def test_requires_superuser(server):
    c = Client(server.url)
    assert_error(c.get("/api/collections"), 401)
    assert_error(c.post("/api/collections", json={"name": "x"}), 401)
    assert_error(c.get("/api/collections", token="not.a.token"), 401)


def test_create_view_list(admin):
    r = admin.post("/api/collections", json={
        "name": "notes",
        "fields": [{"name": "title", "type": "text", "required": True, "max": 20},
                   {"name": "n", "type": "number", "onlyInt": True, "min": 0},
                   {"name": "created", "type": "autodate", "onCreate": True}],
        "indexes": ["CREATE UNIQUE INDEX idx_notes_title ON notes (title)"],
        "listRule": "", "viewRule": None})
    assert r.status_code == 200, r.text
    coll = r.json()
    assert coll["id"].startswith("pbc_")
    assert coll["type"] == "base"
    assert coll["listRule"] == "" and coll["viewRule"] is None and coll["createRule"] is None
    f = fields_of(coll)
    assert f["id"]["system"] and f["id"]["primaryKey"]
    assert f["title"]["max"] == 20 and f["title"]["required"]
    assert coll["indexes"] == ['CREATE UNIQUE INDEX "idx_notes_title" ON "notes" ("title")']
    assert admin.get("/api/collections/notes").json()["id"] == coll["id"]
    assert admin.get(f"/api/collections/{coll['id']}").json()["name"] == "notes"
    lst = admin.get("/api/collections").json()
    assert {"page", "perPage", "totalItems", "totalPages", "items"} <= lst.keys()
    assert {"_superusers", "notes"} <= {c["name"] for c in lst["items"]}


def test_only_id_when_no_fields(admin):
    coll = admin.post("/api/collections", json={"name": "bare"}).json()
    assert [f["name"] for f in coll["fields"]] == ["id"]


@pytest.mark.parametrize("body,field", [
    ({"name": ""}, "name"),
    ({"name": "1abc"}, "name"),
    ({"name": "has space"}, "name"),
    ({"name": "_hidden"}, "name"),
    ({"name": "_superusers"}, "name"),
    ({"name": "x", "type": "nope"}, "type"),
    ({"name": "x", "type": "view"}, "viewQuery"),
    ({"name": "x", "type": "table"}, "type"),
    ({"name": "x", "fields": [{"name": "f", "type": "file", "thumbs": ["0x0"]}]}, "fields.0"),
    ({"name": "x", "fields": [{"name": "f", "type": "wat"}]}, "fields.0"),
    ({"name": "x", "fields": [{"name": "bad name", "type": "text"}]}, "fields.0"),
    ({"name": "x", "fields": [{"name": "a", "type": "text"}, {"name": "a", "type": "bool"}]}, "fields.1"),
    ({"name": "x", "fields": [{"name": "s", "type": "select"}]}, "fields.0"),
    ({"name": "x", "fields": [{"name": "r", "type": "relation", "collectionId": "missing"}]}, "fields.0"),
    ({"name": "x", "fields": [{"name": "t", "type": "text", "pattern": "("}]}, "fields.0"),
    ({"name": "x", "indexes": ["DROP TABLE _superusers"]}, "indexes.0"),
    ({"name": "x", "indexes": ["CREATE INDEX i ON x (nofield)"]}, "indexes.0"),
    ({"name": "x", "listRule": "title = "}, "listRule"),
    ({"name": "x", "listRule": "unknownfield = 1"}, "listRule"),
])
def test_create_validation(admin, body, field):
    assert_error(admin.post("/api/collections", json=body), 400, field)
    names = {c["name"] for c in admin.get("/api/collections").json()["items"]}
    assert "x" not in names


def test_duplicate_name(admin):
    assert admin.post("/api/collections", json={"name": "dup"}).status_code == 200
    assert_error(admin.post("/api/collections", json={"name": "DUP"}), 400, "name", "validation_not_unique")


def test_malformed_body(admin):
    assert_error(admin.post("/api/collections", data="{nope", headers={"Content-Type": "application/json"}), 400)
    assert_error(admin.post("/api/collections", data="[1]", headers={"Content-Type": "application/json"}), 400)
    assert_error(admin.post("/api/collections", data="x", headers={"Content-Type": "text/csv"}), 415)


def test_schema_changes_migrate_records(admin):
    coll = admin.post("/api/collections", json={
        "name": "items", "listRule": "", "viewRule": "", "createRule": "",
        "fields": [{"name": "title", "type": "text"}, {"name": "old", "type": "number"},
                   {"name": "tag", "type": "select", "values": ["a", "b"]}]}).json()
    rec = admin.post("/api/collections/items/records", json={"title": "t1", "old": 5, "tag": "a"}).json()
    fields = coll["fields"]
    for f in fields:
        if f["name"] == "title":
            f["name"] = "heading"
        if f["name"] == "tag":
            f["maxSelect"] = 2
    fields = [f for f in fields if f["name"] != "old"] + [{"name": "extra", "type": "bool"}]
    r = admin.patch("/api/collections/items", json={"name": "things", "fields": fields})
    assert r.status_code == 200, r.text
    got = admin.get(f"/api/collections/things/records/{rec['id']}").json()
    assert got["heading"] == "t1"
    assert "title" not in got and "old" not in got
    assert got["extra"] is False
    assert got["tag"] == ["a"]  # single became multi: the value migrated into a list
    assert_error(admin.get("/api/collections/items/records"), 404)


def test_type_change_refused(admin):
    coll = admin.post("/api/collections", json={"name": "tc", "fields": [{"name": "a", "type": "text"}]}).json()
    f = coll["fields"]
    f[1]["type"] = "number"
    assert_error(admin.patch("/api/collections/tc", json={"fields": f}), 400, "fields.1", "validation_type_change")


def test_delete_and_references(admin):
    a = admin.post("/api/collections", json={"name": "parents"}).json()
    admin.post("/api/collections", json={
        "name": "kids", "fields": [{"name": "p", "type": "relation", "collectionId": a["id"]}]})
    assert_error(admin.delete("/api/collections/parents"), 400)
    assert admin.delete("/api/collections/kids").status_code == 204
    assert admin.delete("/api/collections/parents").status_code == 204
    assert_error(admin.get("/api/collections/parents"), 404)
    assert_error(admin.delete("/api/collections/_superusers"), 400)


def test_import(admin):
    r = admin.req("PUT", "/api/collections/import", json={"collections": [
        {"name": "imp_a", "fields": [{"name": "t", "type": "text"}]},
        {"name": "imp_b", "type": "auth"}]})
    assert r.status_code == 204, r.text
    names = {c["name"] for c in admin.get("/api/collections").json()["items"]}
    assert {"imp_a", "imp_b"} <= names
    # A failing item rolls the whole import back.
    r = admin.req("PUT", "/api/collections/import", json={"collections": [
        {"name": "imp_c"}, {"name": "bad name"}]})
    assert_error(r, 400)
    names = {c["name"] for c in admin.get("/api/collections").json()["items"]}
    assert "imp_c" not in names


def test_auth_collection_shape(admin):
    coll = admin.post("/api/collections", json={"name": "members", "type": "auth"}).json()
    names = [f["name"] for f in coll["fields"]]
    for n in ["id", "password", "tokenKey", "email", "emailVisibility", "verified"]:
        assert n in names
    assert coll["passwordAuth"]["identityFields"] == ["email"]
    assert "secret" not in coll["authToken"]


def test_unique_index_violation_names_the_field(admin):
    """A unique index refuses a duplicate with PocketBase's field error, on every
    backend (the store reports the conflict typed, not as message text)."""
    r = admin.post("/api/collections", json={
        "name": "uniq", "createRule": "", "updateRule": "", "listRule": "",
        "fields": [{"name": "slug", "type": "text"}, {"name": "code", "type": "text"}],
        "indexes": ["CREATE UNIQUE INDEX idx_uniq_slug ON uniq (slug COLLATE NOCASE)",
                    "CREATE UNIQUE INDEX idx_uniq_code ON uniq (code)"]})
    assert r.status_code == 200, r.text
    url = "/api/collections/uniq/records"
    first = admin.post(url, json={"slug": "Hello", "code": "a1"})
    assert first.status_code == 200, first.text
    assert_error(admin.post(url, json={"slug": "hello", "code": "b2"}), 400, "slug", "validation_not_unique")
    assert_error(admin.post(url, json={"slug": "other", "code": "a1"}), 400, "code", "validation_not_unique")
    other = admin.post(url, json={"slug": "other", "code": "c3"}).json()
    assert_error(admin.patch(f"{url}/{other['id']}", json={"code": "a1"}), 400, "code", "validation_not_unique")
    assert_error(admin.post(url, json={"id": first.json()["id"], "slug": "x", "code": "y"}), 400, "id",
                 "validation_not_unique")
    assert admin.get(url).json()["totalItems"] == 2


def test_collections_list_filter_and_sort(shared_admin):
    """PocketBase's filter and sort on GET /api/collections (the dashboard's search)."""
    a = shared_admin
    for name, typ in [("zeta_list", "base"), ("alpha_list", "base"), ("mid_list", "auth")]:
        body = {"name": name, "type": typ}
        if typ == "base":
            body["listRule"] = "" if name == "zeta_list" else None
        assert a.post("/api/collections", json=body).status_code == 200
    r = a.get("/api/collections", params={"filter": "name ~ '_list'", "sort": "-name"})
    assert r.status_code == 200, r.text
    assert [c["name"] for c in r.json()["items"]] == ["zeta_list", "mid_list", "alpha_list"]
    assert r.json()["totalItems"] == 3
    r = a.get("/api/collections", params={"filter": "name ~ '_list' && type = 'auth'"}).json()
    assert [c["name"] for c in r["items"]] == ["mid_list"]
    r = a.get("/api/collections", params={"filter": "name = 'alpha_list' || name = 'zeta_list'",
                                          "sort": "-type,name"}).json()
    assert [c["name"] for c in r["items"]] == ["alpha_list", "zeta_list"]
    r = a.get("/api/collections", params={"filter": "system = true", "sort": "name"}).json()
    assert "_superusers" in [c["name"] for c in r["items"]] and all(c["system"] for c in r["items"])
    r = a.get("/api/collections", params={"filter": "name ~ '_list'", "sort": "name", "perPage": 2, "page": 2})
    assert [c["name"] for c in r.json()["items"]] == ["zeta_list"] and r.json()["totalPages"] == 2
    assert_error(a.get("/api/collections", params={"filter": "fields ~ 'x'"}), 400)
    assert_error(a.get("/api/collections", params={"filter": "name ="}), 400)
    assert_error(a.get("/api/collections", params={"sort": "fields"}), 400)


def test_fresh_data_folder_has_pocketbase_default_users(admin, server):
    """As on a fresh PocketBase: an auth collection `users` with its id, its name and
    avatar fields and owner-only rules; anyone may sign up, each sees only themselves."""
    coll = admin.get("/api/collections/users").json()
    assert coll["id"] == "_pb_users_auth_" and coll["type"] == "auth" and not coll["system"]
    fields = {f["name"]: f for f in coll["fields"]}
    assert fields["name"]["type"] == "text" and fields["name"]["max"] == 255
    assert fields["avatar"]["type"] == "file" and fields["avatar"]["maxSelect"] == 1
    assert "image/png" in fields["avatar"]["mimeTypes"]
    owner = "id = @request.auth.id"
    assert (coll["listRule"], coll["viewRule"], coll["createRule"], coll["updateRule"], coll["deleteRule"]) == \
        (owner, owner, "", owner, owner)

    anon = Client(server.url)
    ids = []
    for who in ("ann", "bob"):
        r = anon.post("/api/collections/users/records", json={
            "email": f"{who}@example.com", "password": "password-123", "passwordConfirm": "password-123",
            "name": who})
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    ann = Client(server.url, anon.login("users", "ann@example.com", "password-123"))
    listed = ann.get("/api/collections/users/records").json()
    assert [i["id"] for i in listed["items"]] == [ids[0]]
    assert ann.get(f"/api/collections/users/records/{ids[1]}").status_code == 404
    assert anon.get("/api/collections/users/records").json()["items"] == []


def test_a_deleted_users_collection_stays_deleted(admin, server):
    """The default is made once, on a fresh database, not at every start."""
    assert admin.delete("/api/collections/users").status_code == 204
    server.stop()
    server.start()
    again = Client(server.url)
    again.token = again.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    assert again.get("/api/collections/users").status_code == 404


@pg_required
def test_instances_starting_together_on_an_empty_database_make_the_defaults_once():
    """Several instances of one deployment first started at the same moment on an empty
    PostgreSQL database: all start, and `users` and `_superusers` exist once each."""
    folder = tempfile.mkdtemp(prefix="basalt-boot-")
    db = shared_db_args(folder)
    servers = []
    for i in range(3):
        d = os.path.join(folder, str(i))
        os.mkdir(d)
        # One process each whatever the topology: the test is about instances starting
        # together already (in cluster mode each Server would be 2 more, 6 at once).
        servers.append(Server(d, db=db, topology="single"))
    errors = []

    def start(s):
        try:
            s.start()
        except Exception as e:  # reported below, with the server's log
            with open(os.path.join(s.dir, "server.log"), errors="replace") as log:
                errors.append(f"{s.dir}: {e}: {log.read()[-600:]}")

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == [], errors
        make_superuser(servers[0].dir, db=db)
        admin = Client(servers[1].url)
        admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        names = [c["name"] for c in admin.get("/api/collections", params={"perPage": 200}).json()["items"]]
        assert names.count("users") == 1 and names.count("_superusers") == 1, names
    finally:
        for s in servers:
            if s.proc is not None:
                s.stop()
        shutil.rmtree(folder, ignore_errors=True)
