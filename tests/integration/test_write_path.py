"""The write path with fewer statements (ADR 0017): a create's rule decided in memory
when it reads only the record and the request, by a query otherwise (seeing the new
row, as before); the answer to a create or update rendered from the row the write
stored instead of a read after the commit; concurrent writes that fail in every way
inside one group commit leave exactly the others. Runs on both backends."""
import concurrent.futures
import uuid

from conftest import Client, assert_error

PW = "password-123"


def member(admin, email):
    r = admin.post("/api/collections/members/records",
                   json={"email": email, "password": PW, "passwordConfirm": PW, "name": email.split("@")[0]})
    assert r.status_code == 200, r.text
    c = Client(admin.url)
    c.token = c.login("members", email, PW)
    return r.json(), c


def setup_members(admin):
    r = admin.post("/api/collections", json={
        "name": "members", "type": "auth", "createRule": "", "viewRule": "",
        "fields": [{"name": "name", "type": "text"}]})
    assert r.status_code == 200, r.text
    return r.json()


def test_create_rules_in_memory_and_by_query(admin):
    members = setup_members(admin)
    a, ca = member(admin, "wa@example.com")
    b, _ = member(admin, "wb@example.com")
    rel = {"name": "owner", "type": "relation", "collectionId": members["id"], "maxSelect": 1}
    # Decided in memory: the record's own fields and request values only.
    r = admin.post("/api/collections", json={
        "name": "wnotes", "viewRule": "owner = @request.auth.id",
        "createRule": "@request.auth.id != '' && owner = @request.auth.id && @request.body.title != 'forbidden' "
                      "&& n >= 0",
        "fields": [{"name": "title", "type": "text"}, {"name": "n", "type": "number"}, rel]})
    assert r.status_code == 200, r.text
    ok = ca.post("/api/collections/wnotes/records", json={"title": "mine", "owner": a["id"], "n": 1})
    assert ok.status_code == 200, ok.text
    assert_error(ca.post("/api/collections/wnotes/records", json={"title": "x", "owner": b["id"]}), 400)
    assert_error(ca.post("/api/collections/wnotes/records", json={"title": "forbidden", "owner": a["id"]}), 400)
    assert_error(ca.post("/api/collections/wnotes/records", json={"title": "neg", "owner": a["id"], "n": -1}), 400)
    # Through a relation and @collection: decided by a query that sees the new row.
    r = admin.post("/api/collections", json={
        "name": "wrel", "createRule": "owner.name = 'wa'", "fields": [{"name": "title", "type": "text"}, rel]})
    assert r.status_code == 200, r.text
    r = admin.patch("/api/collections/wrel", json={"createRule": "owner.name = 'wa' && @collection.wrel.id ?= id"})
    assert r.status_code == 200, r.text
    assert ca.post("/api/collections/wrel/records", json={"title": "t", "owner": a["id"]}).status_code == 200
    assert_error(ca.post("/api/collections/wrel/records", json={"title": "t", "owner": b["id"]}), 400)
    # A related record that does not exist: the field's error (the INSERT's own check
    # inserted nothing), with several relation values too.
    ghost = "x" * 15
    r = ca.post("/api/collections/wnotes/records", json={"title": "g", "owner": ghost})
    assert_error(r, 400, "owner", "validation_missing_rel_records")
    r = admin.post("/api/collections", json={
        "name": "wmulti", "fields": [{"name": "who", "type": "relation", "collectionId": members["id"],
                                      "maxSelect": 5}, {"name": "lead", "type": "relation",
                                                        "collectionId": members["id"], "maxSelect": 1}]})
    assert r.status_code == 200, r.text
    assert admin.post("/api/collections/wmulti/records", json={"who": [a["id"], b["id"]], "lead": b["id"]}
                      ).status_code == 200
    assert_error(admin.post("/api/collections/wmulti/records", json={"who": [a["id"], ghost], "lead": b["id"]}),
                 400, "who", "validation_missing_rel_records")
    assert_error(admin.post("/api/collections/wmulti/records", json={"who": [a["id"]], "lead": ghost}),
                 400, "lead", "validation_missing_rel_records")
    assert admin.get("/api/collections/wmulti/records").json()["totalItems"] == 1
    # Refused creates left nothing behind.
    titles = sorted(x["title"] for x in admin.get("/api/collections/wnotes/records").json()["items"])
    assert titles == ["mine"]
    assert admin.get("/api/collections/wrel/records").json()["totalItems"] == 1


def test_answer_is_the_stored_record(admin):
    members = setup_members(admin)
    a, ca = member(admin, "sa@example.com")
    r = admin.post("/api/collections", json={
        "name": "wrecs", "listRule": "owner = @request.auth.id", "viewRule": "owner = @request.auth.id",
        "createRule": "owner = @request.auth.id", "updateRule": "owner = @request.auth.id",
        "fields": [{"name": "title", "type": "text"}, {"name": "n", "type": "number"},
                   {"name": "ok", "type": "bool"}, {"name": "meta", "type": "json"},
                   {"name": "tags", "type": "select", "values": ["a", "b", "c"], "maxSelect": 3},
                   {"name": "secret", "type": "text", "hidden": True},
                   {"name": "owner", "type": "relation", "collectionId": members["id"], "maxSelect": 1},
                   {"name": "created", "type": "autodate", "onCreate": True},
                   {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True}]})
    assert r.status_code == 200, r.text
    body = {"title": "t\u00e9 \"q\"", "n": 2.5, "ok": True, "meta": {"k": [1, "x"], "z": None}, "tags": ["b", "a"],
            "secret": "s3", "owner": a["id"]}
    for who in (ca, admin):
        created = who.post("/api/collections/wrecs/records", json=body)
        assert created.status_code == 200, created.text
        c = created.json()
        assert "secret" not in c or who is admin
        view = who.get(f"/api/collections/wrecs/records/{c['id']}").json()
        assert c == view
        upd = who.patch(f"/api/collections/wrecs/records/{c['id']}", json={"n": 7, "tags+": "c"})
        assert upd.status_code == 200, upd.text
        assert upd.json() == who.get(f"/api/collections/wrecs/records/{c['id']}").json()
        assert upd.json()["n"] == 7 and upd.json()["tags"] == ["b", "a", "c"]
        # fields= applies to the answer; expand= takes the read after the commit.
        f = who.post("/api/collections/wrecs/records", json=body, params={"fields": "id,title"})
        assert f.status_code == 200 and set(f.json()) == {"id", "title"}, f.text
        e = who.post("/api/collections/wrecs/records", json=body, params={"expand": "owner"})
        assert e.status_code == 200, e.text
        assert e.json()["expand"]["owner"]["id"] == a["id"]
    # An auth record's create answers without its secrets.
    u = admin.post("/api/collections/members/records",
                   json={"email": "sb@example.com", "password": PW, "passwordConfirm": PW}).json()
    assert "password" not in u and "tokenKey" not in u
    assert u == admin.get(f"/api/collections/members/records/{u['id']}").json()


def test_failures_inside_a_group_commit_lose_nothing_else(admin):
    r = admin.post("/api/collections", json={
        "name": "wbusy", "createRule": "title != 'refused'",
        "fields": [{"name": "title", "type": "text"}, {"name": "code", "type": "text", "required": True}],
        "indexes": ["CREATE UNIQUE INDEX idx_wbusy_code ON wbusy (code)"]})
    assert r.status_code == 200, r.text
    anon = Client(admin.url)
    tag = uuid.uuid4().hex[:6]

    def one(i):
        kind = i % 4
        if kind == 0:
            body = {"title": f"ok{i}", "code": f"{tag}-{i}"}
        elif kind == 1:
            body = {"title": f"dup{i}", "code": f"{tag}-dup"}  # all but one: unique violation
        elif kind == 2:
            body = {"title": "refused", "code": f"{tag}-r{i}"}  # the rule refuses it
        else:
            body = {"title": f"bad{i}"}  # the required code missing: refused before any statement
        r = anon.post("/api/collections/wbusy/records", json=body)
        return i, kind, r.status_code, (r.json().get("id") if r.status_code == 200 else None)

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        results = list(ex.map(one, range(160)))
    ok = {rid for _, kind, st, rid in results if st == 200}
    for i, kind, st, _ in results:
        if kind == 0:
            assert st == 200, (i, st)
        elif kind in (2, 3):
            assert st == 400, (i, st)
    assert sum(1 for _, kind, st, _ in results if kind == 1 and st == 200) == 1
    stored = set()
    page = 1
    while True:
        r = admin.get("/api/collections/wbusy/records", params={"perPage": 500, "page": page}).json()
        stored |= {x["id"] for x in r["items"]}
        if page >= r["totalPages"]:
            break
        page += 1
    assert stored == ok
    assert len(ok) == 40 + 1


def test_sort_orders_unchanged_by_the_index_friendly_form(admin):
    """A record's own NOT NULL column sorts in the index's own order on PostgreSQL
    (ASC / DESC without NULLS FIRST/LAST), which may only change nothing: NULLs (a
    single JSON field, a missing relation) still sort first ascending and last
    descending, as on SQLite."""
    r = admin.post("/api/collections", json={"name": "wtags", "listRule": "", "fields": [{"name": "label", "type": "text"}]})
    assert r.status_code == 200, r.text
    tag = admin.post("/api/collections/wtags/records", json={"label": "m"}).json()
    r = admin.post("/api/collections", json={
        "name": "wsorted", "listRule": "",
        "fields": [{"name": "n", "type": "number"}, {"name": "title", "type": "text"},
                   {"name": "meta", "type": "json"},
                   {"name": "tag", "type": "relation", "collectionId": r.json()["id"], "maxSelect": 1}],
        "indexes": ["CREATE INDEX idx_wsorted_n ON wsorted (n)"]})
    assert r.status_code == 200, r.text
    rows = [{"n": 3, "title": "b", "meta": 2, "tag": tag["id"]}, {"n": -1, "title": "", "meta": None},
            {"n": 10, "title": "a", "meta": 1, "tag": tag["id"]}, {"n": 0, "title": "c"}]
    for x in rows:
        assert admin.post("/api/collections/wsorted/records", json=x).status_code == 200
    anon = Client(admin.url)

    def order(sort):
        r = anon.get("/api/collections/wsorted/records", params={"sort": sort, "perPage": 10})
        assert r.status_code == 200, r.text
        return [x["n"] for x in r.json()["items"]]

    assert order("n") == [-1, 0, 3, 10]
    assert order("-n") == [10, 3, 0, -1]
    assert order("title,n") == [-1, 10, 3, 0]
    assert order("-title") == [0, 3, 10, -1]
    assert order("meta,n")[:2] == [-1, 0]  # NULLs first ascending
    assert order("-meta,n")[2:] == [-1, 0]  # and last descending
    assert order("tag.label,n") == [-1, 0, 3, 10]  # no relation: NULL, first
    assert order("-tag.label,-n") == [10, 3, 0, -1]
    # A filter and a sort an index serves.
    r = anon.get("/api/collections/wsorted/records", params={"filter": "n >= 0", "sort": "-n", "perPage": 2})
    assert [x["n"] for x in r.json()["items"]] == [10, 3]
