"""Security battery, the write path (issue 12): body modifiers under @request.body
rules (single writes, batch items, sign-up), work kept off the single writer, expand
fan-out and response size bounds, e-mail changes, cache invalidation after cascades,
and the small ones (page overflow, non-finite numbers, multipart parameters, NUL in
select values)."""
import json
import os
import threading
import time

import pytest
import requests

from conftest import Client, Server, assert_error, instance_urls, make_superuser, ADMIN_EMAIL, ADMIN_PASSWORD

PW = "password-123"


# ---------------------------------------------------------------- the world

@pytest.fixture(scope="module")
def world(shared_admin):
    a = shared_admin
    users = a.post("/api/collections", json={
        "name": "sw_users", "type": "auth", "createRule": "@request.body.role:isset = false",
        "listRule": "id = @request.auth.id", "viewRule": "id = @request.auth.id",
        "updateRule": "id = @request.auth.id",
        "fields": [{"name": "role", "type": "select", "values": ["user", "admin"], "maxSelect": 1}]})
    assert users.status_code == 200, users.text
    users = users.json()
    anon = Client(a.url)
    r = anon.post("/api/collections/sw_users/records",
                  json={"email": "u1@example.com", "password": PW, "passwordConfirm": PW})
    assert r.status_code == 200, r.text
    uid = r.json()["id"]
    fields = [{"name": "balance", "type": "number"},
              {"name": "likes", "type": "number"},
              {"name": "tags", "type": "select", "values": ["a", "b", "c", "admin"], "maxSelect": 10},
              {"name": "role", "type": "select", "values": ["user", "admin"], "maxSelect": 1},
              {"name": "owner", "type": "relation", "collectionId": users["id"], "maxSelect": 1},
              {"name": "editors", "type": "relation", "collectionId": users["id"], "maxSelect": 10},
              {"name": "data", "type": "json"}]
    for name, rule in RULES.items():
        r = a.post("/api/collections", json={
            "name": f"sw_{name}", "fields": fields, "listRule": "", "viewRule": "",
            "createRule": rule, "updateRule": rule, "deleteRule": ""})
        assert r.status_code == 200, r.text
    return {"admin": a, "uid": uid, "users": users}


# Each @request.body rule form, on the field its attacks change.
RULES = {
    "isset_role": "@request.body.role:isset = false",
    "isset_editors": "@request.body.editors:isset = false",
    "isset_balance": "@request.body.balance:isset = false",
    "changed_balance": "@request.body.balance:changed = false",
    "changed_likes": "@request.body.likes:changed = false",
    "changed_editors": "@request.body.editors:changed = false",
    "length_tags": "@request.body.tags:length < 2",
    "each_tags": "@request.body.tags:each != 'admin'",
    "lower_role": "@request.body.role:lower != 'admin'",
    "plain_role": "@request.body.role != 'admin'",
    "plain_balance": "@request.body.balance < 100",
    "json_data": "@request.body.data != 'x'",
}

U = "__uid__"  # replaced by the signed-up user's id

# (rule, initial record, attack body, applies to create)
ATTACKS = [
    ("isset_role", {}, {"role+": "admin"}, True),
    ("isset_role", {}, {"+role": "admin"}, True),
    ("isset_editors", {}, {"editors+": U}, True),
    ("isset_editors", {}, {"+editors": [U]}, True),
    ("isset_editors", {"editors": [U]}, {"editors-": U}, False),
    ("isset_balance", {}, {"balance+": 5}, True),
    ("isset_balance", {}, {"balance-": 5}, True),
    ("changed_balance", {"balance": 10}, {"balance+": 999999}, False),
    ("changed_balance", {"balance": 10}, {"balance-": 3}, False),
    ("changed_likes", {"likes": 1}, {"likes+": 1}, False),
    ("changed_editors", {}, {"editors+": U}, False),
    ("changed_editors", {}, {"+editors": U}, False),
    ("changed_editors", {"editors": [U]}, {"editors-": [U]}, False),
    ("length_tags", {"tags": ["a"]}, {"tags+": "b"}, False),
    ("length_tags", {"tags": ["a"]}, {"+tags": ["b"]}, False),
    ("length_tags", {}, {"tags+": ["a", "b"]}, True),
    ("each_tags", {}, {"tags+": "admin"}, True),
    ("each_tags", {"tags": ["a"]}, {"+tags": "admin"}, True),
    ("lower_role", {}, {"role+": "admin"}, True),
    ("lower_role", {}, {"+role": "admin"}, True),
    ("plain_role", {}, {"role+": "admin"}, True),
    ("plain_role", {"role": "user"}, {"role-": "user", "role+": "admin"}, False),
    ("plain_balance", {"balance": 10}, {"balance+": 999999}, False),
    ("plain_balance", {}, {"balance+": 500}, True),
]

OPS = ["create", "update", "batch_create", "batch_update", "batch_upsert_create", "batch_upsert_update"]


def subst(v, uid):
    if v == U:
        return uid
    if isinstance(v, list):
        return [subst(x, uid) for x in v]
    if isinstance(v, dict):
        return {k: subst(x, uid) for k, x in v.items()}
    return v


def seed(world, coll, initial):
    r = world["admin"].post(f"/api/collections/{coll}/records", json=subst(initial, world["uid"]))
    assert r.status_code == 200, r.text
    return r.json()


def attack(c, coll, op, rec, body):
    url = f"/api/collections/{coll}/records"
    if op == "create":
        return c.post(url, json=body)
    if op == "update":
        return c.patch(f"{url}/{rec['id']}", json=body)
    if op == "batch_create":
        item = {"method": "POST", "url": url, "body": body}
    elif op == "batch_update":
        item = {"method": "PATCH", "url": f"{url}/{rec['id']}", "body": body}
    elif op == "batch_upsert_create":
        item = {"method": "PUT", "url": url, "body": {**body, "id": "upsertnew" + os.urandom(3).hex()}}
    else:
        item = {"method": "PUT", "url": url, "body": {**body, "id": rec["id"]}}
    return c.post("/api/batch", json={"requests": [item]})


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("rule,initial,body,on_create", ATTACKS,
                         ids=[f"{a[0]}:{'/'.join(a[2])}" for a in ATTACKS])
def test_modifiers_cannot_get_past_body_rules(world, rule, initial, body, on_create, op):
    creating = op in ("create", "batch_create", "batch_upsert_create")
    if creating and not on_create:
        pytest.skip("the attack needs an existing record")
    coll = f"sw_{rule}"
    rec = seed(world, coll, initial)
    before = world["admin"].get(f"/api/collections/{coll}/records", params={"perPage": 1000}).json()
    c = Client(world["admin"].url)
    r = attack(c, coll, op, rec, subst(body, world["uid"]))
    # Refused: 400 for creates and batches, 404 for an update the rule does not admit.
    assert r.status_code in (400, 404), f"{r.status_code} {r.text}"
    after = world["admin"].get(f"/api/collections/{coll}/records", params={"perPage": 1000}).json()
    assert after["totalItems"] == before["totalItems"]
    now = world["admin"].get(f"/api/collections/{coll}/records/{rec['id']}").json()
    assert now == rec, "the record changed although the rule refused the write"


@pytest.mark.parametrize("op", ["create", "update", "batch_create", "batch_update"])
def test_modifiers_the_rule_admits_still_work(world, op):
    """The rules see the merged value, and a merged value the rule admits is written."""
    rec = seed(world, "sw_length_tags", {})
    c = Client(world["admin"].url)
    r = attack(c, "sw_length_tags", op, rec, {"tags+": "b"})
    assert r.status_code == 200, r.text
    body = r.json() if not op.startswith("batch") else r.json()[0]["body"]
    assert body["tags"] == ["b"]
    rec = seed(world, "sw_plain_balance", {"balance": 10})
    r = attack(c, "sw_plain_balance", op, rec, {"balance+": 5})
    assert r.status_code == 200, r.text
    body = r.json() if not op.startswith("batch") else r.json()[0]["body"]
    assert body["balance"] == (5 if "create" in op else 15)


@pytest.mark.parametrize("body", [{"role+": "admin"}, {"+role": "admin"}, {"role": "admin"},
                                  {"role+": ["admin"]}, {"role": ["admin"]}])
def test_signup_modifiers_cannot_set_a_refused_field(world, body):
    c = Client(world["admin"].url)
    email = f"s{os.urandom(4).hex()}@example.com"
    r = c.post("/api/collections/sw_users/records",
               json={"email": email, "password": PW, "passwordConfirm": PW, **body})
    assert r.status_code == 400, r.text
    r = c.post("/api/batch", json={"requests": [{
        "method": "POST", "url": "/api/collections/sw_users/records",
        "body": {"email": email, "password": PW, "passwordConfirm": PW, **body}}]})
    assert r.status_code == 400, r.text
    found = world["admin"].get("/api/collections/sw_users/records",
                               params={"filter": f"email = '{email}'"}).json()
    assert found["totalItems"] == 0
    # A plain sign-up still works.
    r = c.post("/api/collections/sw_users/records", json={"email": email, "password": PW, "passwordConfirm": PW})
    assert r.status_code == 200, r.text
    assert r.json()["role"] == ""


# ---------------------------------------------------------------- the writer stays free

def writer_jobs(url):
    """Writer jobs run so far, on every instance (each counts its own)."""
    total = 0
    for u in instance_urls(url):
        text = requests.get(u + "/metrics", timeout=30).text
        total += sum(float(line.split()[-1]) for line in text.splitlines()
                     if line.startswith("basalt_store_jobs_total"))
    return total


def big_ids(n):
    return [f"{i:015d}" for i in range(n)]


@pytest.mark.parametrize("case", ["missing_single", "existing_single", "create_single", "multi_max",
                                  "json_create", "json_update", "modifier_multi", "batch"])
def test_huge_body_arrays_are_refused_before_the_writer(world, case):
    a = world["admin"]
    col = "sw_isset_editors"
    rec = seed(world, col, {})
    ids = big_ids(60000)
    jrec = seed(world, "sw_json_data", {})
    c = Client(a.url)
    url = f"/api/collections/{col}/records"
    sends = {
        "missing_single": lambda: c.patch(f"{url}/doesnotexist123", json={"owner": ids}),
        "existing_single": lambda: c.patch(f"{url}/{rec['id']}", json={"owner": ids}),
        "create_single": lambda: c.post(url, json={"owner": ids}),
        "multi_max": lambda: c.post(url, json={"editors": ids}),
        "json_create": lambda: c.post("/api/collections/sw_json_data/records", json={"data": ids}),
        "json_update": lambda: c.patch(f"/api/collections/sw_json_data/records/{jrec['id']}", json={"data": ids}),
        "modifier_multi": lambda: c.patch(f"{url}/{rec['id']}", json={"editors+": ids}),
        "batch": lambda: c.post("/api/batch", json={"requests": [{"method": "POST", "url": url,
                                                                  "body": {"owner": ids}}]}),
    }
    result = {}

    def bad():
        result["bad"] = sends[case]()

    jobs = writer_jobs(a.url)
    t = threading.Thread(target=bad)
    t.start()
    # A normal write meanwhile is answered.
    ok = Client(a.url).post("/api/collections/sw_plain_role/records", json={"balance": 1})
    t.join(timeout=120)
    assert not t.is_alive()
    assert ok.status_code == 200, ok.text
    assert result["bad"].status_code in (400, 404), result["bad"].text
    assert_error(result["bad"], result["bad"].status_code)
    # The bad request never became a writer job: only the normal write did.
    assert writer_jobs(a.url) - jobs == 1


def test_missing_record_is_404_without_the_writer(world):
    c = Client(world["admin"].url)
    jobs = writer_jobs(c.url)
    r = c.patch("/api/collections/sw_isset_role/records/nosuchrecord001", json={"owner": world["uid"]})
    assert_error(r, 404)
    r = c.delete("/api/collections/sw_isset_role/records/nosuchrecord001")
    assert_error(r, 404)
    r = world["admin"].patch("/api/collections/sw_isset_role/records/nosuchrecord001", json={"likes": 1})
    assert_error(r, 404)
    assert writer_jobs(c.url) == jobs


# ---------------------------------------------------------------- expand bounds

# Under ASan, freed memory waits in its quarantine (256 MB by default) before reuse.
RSS_MARGIN_KIB = (150 + (300 if os.environ.get("ASAN_OPTIONS") else 0)) * 1024


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_expand_fan_out_is_bounded(admin, server):
    r = admin.post("/api/collections", json={"name": "accts", "listRule": "", "viewRule": "",
                                             "fields": [{"name": "name", "type": "text"}]})
    assert r.status_code == 200, r.text
    cid = r.json()["id"]
    r = admin.patch(f"/api/collections/{cid}", json={"fields": [
        {"name": "name", "type": "text"},
        {"name": "friends", "type": "relation", "collectionId": cid, "maxSelect": 10}]})
    assert r.status_code == 200, r.text
    ids = [admin.post("/api/collections/accts/records", json={"name": "x" * 200}).json()["id"] for _ in range(6)]
    for i in ids:
        r = admin.patch(f"/api/collections/accts/records/{i}", json={"friends": [j for j in ids if j != i]})
        assert r.status_code == 200, r.text
    base = rss_kib(server.proc.pid)
    deep = ".".join(["friends"] * 6)
    c = Client(server.url)
    for path in ["/api/collections/accts/records", f"/api/collections/accts/records/{ids[0]}"]:
        for who in (c, admin):
            r = who.get(path, params={"expand": deep})
            body = assert_error(r, 400)
            assert "expand" in body["message"].lower(), body
    # Memory stayed bounded (the unbounded case took it to 500 MB).
    assert rss_kib(server.proc.pid) - base < RSS_MARGIN_KIB
    # A modest expand still works.
    r = c.get(f"/api/collections/accts/records/{ids[0]}", params={"expand": "friends.friends"})
    assert r.status_code == 200, r.text
    assert len(r.json()["expand"]["friends"]) == 5


def test_response_size_is_bounded(admin, server):
    r = admin.post("/api/collections", json={"name": "bulky", "listRule": "", "viewRule": "", "createRule": "",
                                             "fields": [{"name": "body", "type": "editor"}]})
    assert r.status_code == 200, r.text
    blob = "y" * (4 << 20)
    c = Client(server.url)
    for _ in range(6):
        assert c.post("/api/collections/bulky/records", json={"body": blob}).status_code == 200
    base = rss_kib(server.proc.pid)
    r = c.get("/api/collections/bulky/records", params={"perPage": 100})
    body = assert_error(r, 400)
    assert "perPage" in body["message"] or "fields" in body["message"], body
    assert rss_kib(server.proc.pid) - base < RSS_MARGIN_KIB + 50 * 1024
    r = c.get("/api/collections/bulky/records", params={"perPage": 2})
    assert r.status_code == 200 and len(r.json()["items"]) == 2


# ---------------------------------------------------------------- e-mail changes

@pytest.fixture(scope="module")
def mail(shared_admin):
    a = shared_admin
    r = a.post("/api/collections", json={
        "name": "sw_mail", "type": "auth", "createRule": "", "listRule": "id = @request.auth.id",
        "viewRule": "id = @request.auth.id", "updateRule": "id = @request.auth.id || @request.auth.boss = true",
        "manageRule": "@request.auth.boss = true",
        "fields": [{"name": "boss", "type": "bool"}, {"name": "nick", "type": "text"}]})
    assert r.status_code == 200, r.text
    return a


def mk_user(a, verified=True, boss=False):
    email = f"m{os.urandom(4).hex()}@example.com"
    r = a.post("/api/collections/sw_mail/records", json={"email": email, "password": PW, "passwordConfirm": PW,
                                                         "verified": verified, "boss": boss})
    assert r.status_code == 200, r.text
    c = Client(a.url)
    c.token = c.login("sw_mail", email, PW)
    return r.json(), c


def test_own_email_change_is_refused(mail):
    u, c = mk_user(mail)
    for body in [{"email": "ceo@corp.example"}, {"email": "ceo@corp.example", "nick": "x"},
                 {"email": u["email"].upper()}, {"email": ""}]:
        r = c.patch(f"/api/collections/sw_mail/records/{u['id']}", json=body)
        assert_error(r, 400, "email", "validation_values_mismatch")
        r = c.post("/api/batch", json={"requests": [{"method": "PATCH",
                                                      "url": f"/api/collections/sw_mail/records/{u['id']}",
                                                      "body": body}]})
        assert r.status_code == 400, r.text
    now = mail.get(f"/api/collections/sw_mail/records/{u['id']}").json()
    assert now["email"] == u["email"] and now["verified"] is True
    # The same e-mail, or other fields, are fine.
    r = c.patch(f"/api/collections/sw_mail/records/{u['id']}", json={"email": u["email"], "nick": "n"})
    assert r.status_code == 200, r.text


def test_managed_email_change_resets_verified(mail):
    u, _ = mk_user(mail)
    new = f"n{os.urandom(4).hex()}@example.com"
    r = mail.patch(f"/api/collections/sw_mail/records/{u['id']}", json={"email": new})
    assert r.status_code == 200, r.text
    assert r.json()["email"] == new and r.json()["verified"] is False
    new2 = f"n{os.urandom(4).hex()}@example.com"
    r = mail.patch(f"/api/collections/sw_mail/records/{u['id']}", json={"email": new2, "verified": True})
    assert r.status_code == 200 and r.json()["verified"] is True
    # In a batch too.
    new3 = f"n{os.urandom(4).hex()}@example.com"
    r = mail.post("/api/batch", json={"requests": [{"method": "PATCH",
                                                     "url": f"/api/collections/sw_mail/records/{u['id']}",
                                                     "body": {"email": new3}}]})
    assert r.status_code == 200, r.text
    assert r.json()[0]["body"]["verified"] is False
    # A manager (manageRule) may change it; verified resets.
    u2, _ = mk_user(mail)
    _, boss = mk_user(mail, boss=True)
    new4 = f"n{os.urandom(4).hex()}@example.com"
    r = boss.patch(f"/api/collections/sw_mail/records/{u2['id']}", json={"email": new4})
    assert r.status_code == 200, r.text
    now = mail.get(f"/api/collections/sw_mail/records/{u2['id']}").json()
    assert now["email"] == new4 and now["verified"] is False


# ---------------------------------------------------------------- cache after cascades

def test_cache_forgets_records_a_deep_cascade_deleted(admin, server):
    a = admin
    ca = a.post("/api/collections", json={"name": "ca", "listRule": "", "viewRule": "",
                                          "fields": [{"name": "t", "type": "text"}]}).json()
    cb = a.post("/api/collections", json={"name": "cb", "listRule": "", "viewRule": "", "fields": [
        {"name": "a", "type": "relation", "collectionId": ca["id"], "cascadeDelete": True}]}).json()
    cc = a.post("/api/collections", json={"name": "cc", "listRule": "", "viewRule": "", "fields": [
        {"name": "b", "type": "relation", "collectionId": cb["id"], "cascadeDelete": True}]}).json()
    cd = a.post("/api/collections", json={"name": "cd", "listRule": "", "viewRule": "", "fields": [
        {"name": "b", "type": "relation", "collectionId": cb["id"]}]}).json()
    assert "id" in cc and "id" in cd, (cc, cd)
    ra = a.post("/api/collections/ca/records", json={"t": "x"}).json()
    rb = a.post("/api/collections/cb/records", json={"a": ra["id"]}).json()
    rc = a.post("/api/collections/cc/records", json={"b": rb["id"]}).json()
    rd = a.post("/api/collections/cd/records", json={"b": rb["id"]}).json()
    anon = Client(server.url)
    for _ in range(2):  # the second answer comes from the cache
        assert anon.get("/api/collections/cc/records").json()["totalItems"] == 1
        assert anon.get(f"/api/collections/cc/records/{rc['id']}").status_code == 200
        assert anon.get(f"/api/collections/cd/records/{rd['id']}").json()["b"] == rb["id"]
    assert a.delete(f"/api/collections/ca/records/{ra['id']}").status_code == 204
    assert anon.get("/api/collections/cc/records").json()["totalItems"] == 0
    assert anon.get(f"/api/collections/cc/records/{rc['id']}").status_code == 404
    assert anon.get(f"/api/collections/cd/records/{rd['id']}").json()["b"] == ""
    # The same through a batch.
    ra = a.post("/api/collections/ca/records", json={"t": "y"}).json()
    rb = a.post("/api/collections/cb/records", json={"a": ra["id"]}).json()
    rc = a.post("/api/collections/cc/records", json={"b": rb["id"]}).json()
    assert anon.get(f"/api/collections/cc/records/{rc['id']}").status_code == 200
    assert anon.get(f"/api/collections/cc/records/{rc['id']}").status_code == 200
    r = a.post("/api/batch", json={"requests": [{"method": "DELETE", "url": f"/api/collections/ca/records/{ra['id']}"}]})
    assert r.status_code == 200, r.text
    assert anon.get(f"/api/collections/cc/records/{rc['id']}").status_code == 404


# ---------------------------------------------------------------- small ones

def test_huge_page_is_refused_or_empty(world):
    c = Client(world["admin"].url)
    seed(world, "sw_isset_role", {})
    for page, per in [("9223372036854775807", None), ("9223372036854775807", "1000"),
                      ("4611686018427387904", "30"), ("9223372036854775806", "2")]:
        params = {"page": page}
        if per:
            params["perPage"] = per
        r = c.get("/api/collections/sw_isset_role/records", params=params)
        if r.status_code == 200:
            assert r.json()["items"] == [], r.text
        else:
            assert_error(r, 400)
    r = c.get("/api/collections/sw_isset_role/records", params={"page": "99999999999999999999"})
    assert_error(r, 400)


@pytest.mark.parametrize("start,body", [(1.5e308, {"balance+": 1.5e308}), (-1.5e308, {"balance-": 1.5e308}),
                                        (1e308, {"balance+": 1e308, "likes": 1})])
def test_number_modifier_overflow_is_400(world, start, body):
    a = world["admin"]
    rec = seed(world, "sw_plain_role", {"balance": start})
    r = a.patch(f"/api/collections/sw_plain_role/records/{rec['id']}", json=body)
    assert_error(r, 400, "balance")
    r = a.post("/api/batch", json={"requests": [{"method": "PATCH",
                                                  "url": f"/api/collections/sw_plain_role/records/{rec['id']}",
                                                  "body": body}]})
    assert r.status_code == 400, r.text
    assert a.get(f"/api/collections/sw_plain_role/records/{rec['id']}").json() == rec


def multipart(parts, boundary="XyZ"):
    out = b""
    for headers, value in parts:
        out += b"--" + boundary.encode() + b"\r\n" + headers + b"\r\n\r\n" + value + b"\r\n"
    return out + b"--" + boundary.encode() + b"--\r\n", f"multipart/form-data; boundary={boundary}"


@pytest.fixture(scope="module")
def posts(shared_admin):
    r = shared_admin.post("/api/collections", json={
        "name": "sw_posts", "listRule": "", "viewRule": "", "createRule": "",
        "fields": [{"name": "title", "type": "text"}, {"name": "t", "type": "text"},
                   {"name": "x", "type": "text"},
                   {"name": "kind", "type": "select", "values": ["vip", "std"], "maxSelect": 1},
                   {"name": "kinds", "type": "select", "values": ["vip", "std"], "maxSelect": 2}]})
    assert r.status_code == 200, r.text
    return shared_admin


def post_raw(url, body, ctype):
    return requests.post(url + "/api/collections/sw_posts/records", data=body,
                         headers={"Content-Type": ctype}, timeout=30)


@pytest.mark.parametrize("disp", [
    b'form-data; filename="t"; name="x"',
    b'form-data; name="x"; filename="t"',
    b'form-data; FILENAME="t"; name="x"',
    b'form-data; name="x"; filename*=UTF-8\'\'t.txt',
    b'form-data; filename=t; name=x',
])
def test_multipart_file_parts_are_not_fields(posts, disp):
    body, ctype = multipart([(b"Content-Disposition: " + disp, b"hello")])
    r = post_raw(posts.url, body, ctype)
    assert_error(r, 400)
    assert "upload" in r.json()["message"].lower()


@pytest.mark.parametrize("headers,field", [
    (b'Content-Disposition: form-data; name="title"', "title"),
    (b'Content-Disposition: form-data; NAME="title"', "title"),
    (b'Content-Disposition: form-data; name=title', "title"),
    (b'Content-Disposition: form-data; xname="t"; name="title"', "title"),
    (b'Content-Type: text/plain; name="t"\r\nContent-Disposition: form-data; name="title"', "title"),
    (b'Content-Disposition: form-data; name="title"\r\nContent-Type: text/plain; name="t"', "title"),
    (b'Content-Disposition: form-data; name="ti\\"tle"; x="y"', None),
])
def test_multipart_names_are_parsed_as_parameters(posts, headers, field):
    body, ctype = multipart([(headers, b"hello")])
    r = post_raw(posts.url, body, ctype)
    if field is None:  # a name that is no field of the collection: ignored, as PocketBase does
        assert r.status_code == 200, r.text
        assert "hello" not in r.text
        return
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec[field] == "hello" and rec["t"] == "" and rec["x"] == ""


@pytest.mark.parametrize("headers", [
    b'Content-Disposition: form-data; name="title',
    b'Content-Disposition: form-data; name=',
    b'Content-Disposition: form-data',
    b'Content-Disposition: attachment; name="title"',
    b'Content-Disposition: form-data; name="title"; name="t"',
])
def test_multipart_bad_dispositions_are_400(posts, headers):
    body, ctype = multipart([(headers, b"hello")])
    assert_error(post_raw(posts.url, body, ctype), 400)


@pytest.mark.parametrize("field,value", [("kind", b"vip\x00junk"), ("kinds", b"vip\x00junk"), ("kind", b"\x00"),
                                         ("kind", b"vip\x00")])
def test_select_values_with_nul_are_refused(posts, field, value):
    body, ctype = multipart([(f'Content-Disposition: form-data; name="{field}"'.encode(), value)])
    r = post_raw(posts.url, body, ctype)
    assert_error(r, 400, field)
    r = requests.post(posts.url + "/api/collections/sw_posts/records",
                      data=f"{field}=" + value.decode().replace("\x00", "%00"),
                      headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=30)
    # A form pair holding a NUL is refused with the whole body (http/body.c), not per field.
    assert_error(r, 400)
    r = requests.post(posts.url + "/api/collections/sw_posts/records",
                      data=json.dumps({field: value.decode()}), headers={"Content-Type": "application/json"},
                      timeout=30)
    assert_error(r, 400)
    items = posts.get("/api/collections/sw_posts/records", params={"perPage": 1000}).json()["items"]
    assert not [i for i in items if i["kind"] or i["kinds"]], items


def test_nul_in_passwords_and_numbers_is_refused(world):
    """A NUL byte cuts a C string short: "ab\\0xxxxxxx" would pass the length check
    and set the password "ab"; "5\\0junk" would be the number 5."""
    url = world["admin"].url
    email = f"z{os.urandom(4).hex()}@example.com"
    pw = "ab\x00xxxxxxxx"
    body, ctype = multipart([(b'Content-Disposition: form-data; name="email"', email.encode()),
                             (b'Content-Disposition: form-data; name="password"', pw.encode()),
                             (b'Content-Disposition: form-data; name="passwordConfirm"', pw.encode())])
    r = requests.post(url + "/api/collections/sw_users/records", data=body, headers={"Content-Type": ctype},
                      timeout=30)
    assert_error(r, 400, "password")
    # Logging in with a NUL-suffixed password of a real account fails.
    body, ctype = multipart([(b'Content-Disposition: form-data; name="identity"', b"u1@example.com"),
                             (b'Content-Disposition: form-data; name="password"', PW.encode() + b"\x00junk")])
    r = requests.post(url + "/api/collections/sw_users/auth-with-password", data=body,
                      headers={"Content-Type": ctype}, timeout=30)
    assert_error(r, 400, "password")
    body, ctype = multipart([(b'Content-Disposition: form-data; name="balance"', b"5\x00junk")])
    r = requests.post(url + "/api/collections/sw_isset_role/records", data=body, headers={"Content-Type": ctype},
                      timeout=30)
    assert_error(r, 400, "balance")


@pytest.mark.parametrize("rule", ["editors = @request.auth.id", "editors.id = @request.auth.id",
                                  "editors ~ @request.auth.id", "editors.email = 'nobody@example.com'"])
def test_empty_multi_relation_does_not_satisfy_a_rule(shared_admin, world, rule):
    """PocketBase: an empty list has no item equal to the value, so the rule fails;
    here the NOT EXISTS (an item that differs) form is vacuously true."""
    a = shared_admin
    name = "sw_empty_" + os.urandom(3).hex()
    r = a.post("/api/collections", json={"name": name, "listRule": rule, "viewRule": rule, "fields": [
        {"name": "editors", "type": "relation", "collectionId": world["users"]["id"], "maxSelect": 5}]})
    assert r.status_code == 200, r.text
    rec = a.post(f"/api/collections/{name}/records", json={}).json()
    anon = Client(a.url)
    assert anon.get(f"/api/collections/{name}/records").json()["totalItems"] == 0
    assert anon.get(f"/api/collections/{name}/records/{rec['id']}").status_code == 404
