"""Security battery, rules part 2 (issue 12 follow-up): a multi-valued field with no
values (multi relation, multi select,
back-relation; file fields are not supported by Basalt yet) must not satisfy an
"all items" comparison.

Basalt's semantics (docs/security-review-rules2.md), following PocketBase, whose
all-items form is "the comparison holds on the joined item AND no item fails it", so
that an empty list (whose joined item is NULL) fails it:
  - `=` `>` `>=` `<` `<=` `~` (and `:each`) without `?`: at least one item, and every
    item satisfies it. An empty list: false (also `= ''`/`= null`; emptiness is
    `:length = 0`).
  - `?=` ... `?~` and every `?` form: some item satisfies it. An empty list: false.
  - `!=` `!~`: no item equals / matches. An empty list: true (a deny list that is
    empty denies no one, as in PocketBase for `!= value`).
"""
import json
import os
import urllib.parse

import pytest

from conftest import Client, assert_error
from rtclient import SSE

PW = "password-123456"


def ids(r):
    assert r.status_code == 200, r.text
    return sorted(x["id"] for x in r.json()["items"])


@pytest.fixture(scope="module")
def w(shared_admin):
    a = shared_admin
    users = a.post("/api/collections", json={
        "name": "r2_users", "type": "auth", "listRule": "", "viewRule": "", "createRule": "",
        "fields": [{"name": "name", "type": "text"}]})
    assert users.status_code == 200, users.text
    users = users.json()
    anon = Client(a.url)
    uid = {}
    for n in ("u1", "u2"):
        r = anon.post("/api/collections/r2_users/records",
                      json={"email": f"{n}@example.com", "password": PW, "passwordConfirm": PW, "name": n})
        assert r.status_code == 200, r.text
        uid[n] = r.json()["id"]
    callers = {"anon": anon}
    for n in ("u1", "u2"):
        c = Client(a.url)
        c.token = c.login("r2_users", f"{n}@example.com", PW)
        callers[n] = c
    fields = [{"name": "title", "type": "text"},
              {"name": "editors", "type": "relation", "collectionId": users["id"], "maxSelect": 5},
              {"name": "kinds", "type": "select", "values": ["vip", "x", "y"], "maxSelect": 3}]
    r = a.post("/api/collections", json={"name": "r2_docs", "listRule": "", "viewRule": "", "fields": fields})
    assert r.status_code == 200, r.text
    docs = r.json()
    r = a.post("/api/collections", json={"name": "r2_notes", "listRule": "", "viewRule": "", "fields": [
        {"name": "doc", "type": "relation", "collectionId": docs["id"], "maxSelect": 1},
        {"name": "author", "type": "relation", "collectionId": users["id"], "maxSelect": 1},
        {"name": "body", "type": "text"}]})
    assert r.status_code == 200, r.text

    def doc(**kw):
        r = a.post("/api/collections/r2_docs/records", json=kw)
        assert r.status_code == 200, r.text
        return r.json()["id"]

    d = {"empty": doc(title="empty"),
         "u1": doc(title="u1", editors=[uid["u1"]], kinds=["vip"]),
         "both": doc(title="both", editors=[uid["u1"], uid["u2"]], kinds=["vip", "x"]),
         "u2": doc(title="u2", editors=[uid["u2"]], kinds=["x"])}
    # Notes: "u1" has one note by u1, "both" one by u1 and one by u2; the others none.
    for key, author in (("u1", "u1"), ("both", "u1"), ("both", "u2")):
        r = a.post("/api/collections/r2_notes/records",
                   json={"doc": d[key], "author": uid[author], "body": "n-" + author})
        assert r.status_code == 200, r.text
    return {"admin": a, "uid": uid, "callers": callers, "docs": d, "users": users}


# ---- access rules: an empty list grants nothing ----

# Each rule, and the docs (of empty/u1/both/u2) that anon, u1 and u2 may list.
RULES = {
    "editors = @request.auth.id": {"anon": [], "u1": ["u1"], "u2": ["u2"]},
    "editors.id = @request.auth.id": {"anon": [], "u1": ["u1"], "u2": ["u2"]},
    "editors:each = @request.auth.id": {"anon": [], "u1": ["u1"], "u2": ["u2"]},
    "editors ~ @request.auth.id": {"anon": [], "u1": ["u1"], "u2": ["u2"]},
    "editors.email = 'nobody@example.com'": {"anon": [], "u1": [], "u2": []},
    "editors.name >= ''": {"anon": ["both", "u1", "u2"], "u1": ["both", "u1", "u2"], "u2": ["both", "u1", "u2"]},
    "editors.id ?= @request.auth.id": {"anon": [], "u1": ["both", "u1"], "u2": ["both", "u2"]},
    "kinds = 'vip'": {"anon": ["u1"], "u1": ["u1"], "u2": ["u1"]},
    "kinds = ''": {"anon": [], "u1": [], "u2": []},
    "kinds = null": {"anon": [], "u1": [], "u2": []},
    "r2_notes_via_doc.author = @request.auth.id": {"anon": [], "u1": ["u1"], "u2": []},
    "r2_notes_via_doc.author.id = @request.auth.id": {"anon": [], "u1": ["u1"], "u2": []},
    "r2_notes_via_doc.body ~ 'n-'": {"anon": ["both", "u1"], "u1": ["both", "u1"], "u2": ["both", "u1"]},
    # Negations: no item equals / matches; an empty list holds none.
    "editors != @request.auth.id": {"anon": ["both", "empty", "u1", "u2"], "u1": ["empty", "u2"],
                                    "u2": ["empty", "u1"]},
    "editors.id !~ @request.auth.id": {"anon": ["empty"], "u1": ["empty", "u2"], "u2": ["empty", "u1"]},
    "kinds != 'vip'": {"anon": ["empty", "u2"], "u1": ["empty", "u2"], "u2": ["empty", "u2"]},
    "kinds:length = 0": {"anon": ["empty"], "u1": ["empty"], "u2": ["empty"]},
}


@pytest.mark.parametrize("rule", list(RULES))
def test_empty_lists_in_rules(w, rule):
    a = w["admin"]
    if "r2_notes_via_doc" in rule:
        # The back-relation points at r2_docs: the rule goes on r2_docs itself.
        r = a.patch("/api/collections/r2_docs", json={"listRule": rule, "viewRule": rule})
        assert r.status_code == 200, r.text
        name, recs = "r2_docs", dict(w["docs"])
    else:
        name = "r2_rule_" + os.urandom(3).hex()
        fields = [f for f in a.get("/api/collections/r2_docs").json()["fields"] if not f.get("system")]
        r = a.post("/api/collections", json={"name": name, "listRule": rule, "viewRule": rule, "fields": [
            {k: v for k, v in f.items() if k != "id"} for f in fields]})
        assert r.status_code == 200, r.text
        recs = {}
        for s in a.get("/api/collections/r2_docs/records?perPage=50").json()["items"]:
            body = {k: s[k] for k in ("title", "editors", "kinds")}
            recs[s["title"]] = a.post(f"/api/collections/{name}/records", json=body).json()["id"]
    try:
        for who, want in RULES[rule].items():
            c = w["callers"][who]
            got = ids(c.get(f"/api/collections/{name}/records?perPage=50"))
            assert got == sorted(recs[t] for t in want), (who, got)
            for t, rid in recs.items():
                v = c.get(f"/api/collections/{name}/records/{rid}")
                assert v.status_code == (200 if t in want else 404), (who, t, v.text)
    finally:
        if name == "r2_docs":
            a.patch("/api/collections/r2_docs", json={"listRule": "", "viewRule": ""})


def test_empty_multi_rule_on_create_and_update(w):
    """A create/update rule over the stored or submitted list: an empty one is no pass."""
    a = w["admin"]
    name = "r2_write_" + os.urandom(3).hex()
    rule = "@request.body.editors = @request.auth.id"
    r = a.post("/api/collections", json={
        "name": name, "listRule": "", "viewRule": "", "createRule": rule,
        "updateRule": "editors.id = @request.auth.id", "fields": [
            {"name": "title", "type": "text"},
            {"name": "editors", "type": "relation", "collectionId": w["users"]["id"], "maxSelect": 5}]})
    assert r.status_code == 200, r.text
    anon, u1 = w["callers"]["anon"], w["callers"]["u1"]
    # An empty list in the body does not satisfy the create rule, for anyone.
    for c in (anon, u1):
        assert c.post(f"/api/collections/{name}/records", json={"title": "t", "editors": []}).status_code == 400
    ok = u1.post(f"/api/collections/{name}/records", json={"title": "t", "editors": [w["uid"]["u1"]]})
    assert ok.status_code == 200, ok.text
    # A stored record with no editors cannot be updated by an anonymous caller.
    rid = a.post(f"/api/collections/{name}/records", json={"title": "t"}).json()["id"]
    assert anon.patch(f"/api/collections/{name}/records/{rid}", json={"title": "x"}).status_code in (400, 403, 404)
    assert a.get(f"/api/collections/{name}/records/{rid}").json()["title"] == "t"


# ---- client filters ----

FILTERS = {
    "kinds = 'vip'": ["u1"],
    "kinds:each = 'vip'": ["u1"],
    "kinds ?= 'vip'": ["both", "u1"],
    "kinds ~ 'v'": ["u1"],
    "kinds > ''": ["both", "u1", "u2"],
    "kinds = ''": [],
    "kinds = null": [],
    "kinds != 'vip'": ["empty", "u2"],
    "kinds !~ 'vi'": ["empty", "u2"],
    "kinds ?!= 'vip'": ["both", "u2"],
    "kinds:length = 0": ["empty"],
    "editors.name = 'u1'": ["u1"],
    "editors.name ?= 'u1'": ["both", "u1"],
    "editors.name != 'u1'": ["empty", "u2"],
    "editors.id = ''": [],
    "r2_notes_via_doc.body = 'n-u1'": ["u1"],
    "r2_notes_via_doc.body != 'n-u1'": ["empty", "u2"],
    "kinds = editors.name": [],
    "@request.query.nothing = kinds": [],
}


@pytest.mark.parametrize("flt", list(FILTERS))
def test_empty_lists_in_client_filters(w, flt):
    for who in ("anon", "u1"):
        c = w["callers"][who]
        got = ids(c.get("/api/collections/r2_docs/records", params={"filter": flt, "perPage": 50}))
        assert got == sorted(w["docs"][t] for t in FILTERS[flt]), (who, flt, got)


def test_empty_request_list_operand(w):
    """A list from the request with no items (a query parameter holding []) is no match
    for the all-form either; the ?-form needs an item too."""
    a = w["admin"]
    name = "r2_body_" + os.urandom(3).hex()
    r = a.post("/api/collections", json={
        "name": name, "listRule": "", "viewRule": "",
        "createRule": "@request.body.tags = 'ok'", "fields": [
            {"name": "title", "type": "text"}, {"name": "tags", "type": "json"}]})
    assert r.status_code == 200, r.text
    anon = w["callers"]["anon"]
    assert anon.post(f"/api/collections/{name}/records", json={"title": "t", "tags": []}).status_code == 400
    assert anon.post(f"/api/collections/{name}/records", json={"title": "t", "tags": ["ok", "no"]}).status_code == 400
    assert anon.post(f"/api/collections/{name}/records", json={"title": "t", "tags": ["ok"]}).status_code == 200


# ---- realtime: the rule and the subscription filter ----

def _opts(flt):
    return urllib.parse.quote(json.dumps({"query": {"filter": flt}}))


def test_empty_lists_in_realtime(w):
    a = w["admin"]
    name = "r2_rt_" + os.urandom(3).hex()
    r = a.post("/api/collections", json={
        "name": name, "listRule": "editors.id = @request.auth.id", "viewRule": "editors.id = @request.auth.id",
        "fields": [{"name": "title", "type": "text"},
                   {"name": "editors", "type": "relation", "collectionId": w["users"]["id"], "maxSelect": 5}]})
    assert r.status_code == 200, r.text
    anon, u1 = w["callers"]["anon"], w["callers"]["u1"]
    conns = []
    try:
        s_anon = SSE(a.url)
        conns.append(s_anon)
        assert anon.post("/api/realtime", json={"clientId": s_anon.client_id,
                                                "subscriptions": [f"{name}/*"]}).status_code == 204
        s_u1 = SSE(a.url)
        conns.append(s_u1)
        assert u1.post("/api/realtime", json={"clientId": s_u1.client_id,
                                              "subscriptions": [f"{name}/*"]}).status_code == 204
        # The subscription filter on a public collection.
        t_flt = "r2_docs/*?options=" + _opts("kinds = 'vip'")
        t_neg = "r2_docs/*?options=" + _opts("kinds != 'vip'")
        s_flt = SSE(a.url)
        conns.append(s_flt)
        assert anon.post("/api/realtime", json={"clientId": s_flt.client_id,
                                                "subscriptions": [t_flt, t_neg]}).status_code == 204
        # Created (checked in memory), updated and deleted (checked against the row and
        # against its last values).
        e = a.post(f"/api/collections/{name}/records", json={"title": "empty"}).json()["id"]
        a.patch(f"/api/collections/{name}/records/{e}", json={"title": "empty2"})
        a.delete(f"/api/collections/{name}/records/{e}")
        mine = a.post(f"/api/collections/{name}/records",
                      json={"title": "mine", "editors": [w["uid"]["u1"]]}).json()["id"]
        d_empty = a.post("/api/collections/r2_docs/records", json={"title": "rt-empty"}).json()["id"]
        a.patch(f"/api/collections/r2_docs/records/{d_empty}", json={"title": "rt-empty2"})
        a.delete(f"/api/collections/r2_docs/records/{d_empty}")
        d_vip = a.post("/api/collections/r2_docs/records", json={"title": "rt-vip", "kinds": ["vip"]}).json()["id"]
        a.delete(f"/api/collections/r2_docs/records/{d_vip}")
        assert s_anon.collect(quiet=1.5) == []
        got = [json.loads(ev["data"])["record"]["id"] for ev in s_u1.collect(quiet=0.5)]
        assert got == [mine], got
        flt = [(ev["event"], json.loads(ev["data"])["action"], json.loads(ev["data"])["record"]["id"])
               for ev in s_flt.collect(quiet=0.5)]
        assert flt == [(t_neg, "create", d_empty), (t_neg, "update", d_empty), (t_neg, "delete", d_empty),
                       (t_flt, "create", d_vip), (t_flt, "delete", d_vip)], flt
    finally:
        for c in conns:
            c.close()
