"""Second, adversarial pass over issue 12 (security first): variants of the fixed
findings that the first pass did not try, and holes the fixes opened. See
docs/security-review-second-pass.md for what was tried and what held.
"""
import json
import socket
import time

import pytest

from conftest import Client, assert_error

PW = "password-123"


@pytest.fixture(scope="module")
def env(shared_admin):
    a = shared_admin
    r = a.post("/api/collections", json={
        "name": "rv_users", "type": "auth", "listRule": "", "viewRule": "", "createRule": "",
        "fields": [{"name": "role", "type": "select", "values": ["user", "admin"], "maxSelect": 1},
                   {"name": "balance", "type": "number"}]})
    assert r.status_code == 200, r.text
    ids = {}
    for name in ("alice", "bob"):
        r = a.post("/api/collections/rv_users/records", json={
            "email": f"{name}@rv.example", "password": PW, "passwordConfirm": PW,
            "role": "user", "balance": 10})
        assert r.status_code == 200, r.text
        ids[name] = r.json()["id"]
    r = a.post("/api/collections", json={
        "name": "rv_posts", "listRule": "", "viewRule": "",
        "fields": [{"name": "title", "type": "text"},
                   {"name": "owner", "type": "relation", "collectionId": "rv_users", "maxSelect": 1}]})
    assert r.status_code == 200, r.text
    r = a.post("/api/collections/rv_posts/records", json={"title": "a", "owner": ids["alice"]})
    assert r.status_code == 200, r.text
    anon = Client(a.url)
    return {"admin": a, "ids": ids, "anon": anon,
            "alice": Client(a.url, anon.login("rv_users", "alice@rv.example", PW)),
            "bob": Client(a.url, anon.login("rv_users", "bob@rv.example", PW))}


# ---- 11 (class: the cache serves what a change should have taken away) ----------------
#
# A list page or a view is cached when its rule, filter and sort depend only on the
# record and @request.auth.id; api_rule_cacheable decides that by scanning the text. The
# scan knew strings but not `//` comments, so a quote inside a comment made it skip the
# rest of the text as if it were a string: whatever that rest reads (the signed-in
# user's role, a related record) was not a dependency, and a user who lost access kept
# seeing cached pages and views for the cache's TTL (5 minutes by default).

COMMENTED_RULES = {
    "apostrophe": "// the owner's docs\n@request.auth.role = 'admin' || owner = @request.auth.id",
    "double_quote": "// say \"hi\n@request.auth.role = 'admin' || owner = @request.auth.id",
    "trailing": "owner = @request.auth.id || @request.auth.role = 'admin' // admins' too",
    "middle": "owner = @request.auth.id // owner's\n|| @request.auth.role = 'admin' // '",
}


@pytest.mark.parametrize("form", COMMENTED_RULES)
def test_comment_in_rule_does_not_hide_dependencies_from_the_cache(env, form):
    a, ids = env["admin"], env["ids"]
    rule = COMMENTED_RULES[form]
    name = f"rv_docs_{form}"
    r = a.post("/api/collections", json={
        "name": name, "listRule": rule, "viewRule": rule,
        "fields": [{"name": "owner", "type": "relation", "collectionId": "rv_users", "maxSelect": 1},
                   {"name": "t", "type": "text"}]})
    assert r.status_code == 200, r.text
    doc = a.post(f"/api/collections/{name}/records", json={"owner": ids["bob"], "t": "bob's"}).json()["id"]
    alice = env["alice"]
    try:
        assert a.patch(f"/api/collections/rv_users/records/{ids['alice']}", json={"role": "admin"}).status_code == 200
        r = alice.get(f"/api/collections/{name}/records")
        assert r.status_code == 200 and [x["id"] for x in r.json()["items"]] == [doc], r.text
        assert alice.get(f"/api/collections/{name}/records/{doc}").status_code == 200
        # Demoted: the next answers must not come from what the admin was shown.
        assert a.patch(f"/api/collections/rv_users/records/{ids['alice']}", json={"role": "user"}).status_code == 200
        r = alice.get(f"/api/collections/{name}/records")
        assert r.status_code == 200 and r.json()["items"] == [], r.text
        assert alice.get(f"/api/collections/{name}/records/{doc}").status_code == 404
    finally:
        a.patch(f"/api/collections/rv_users/records/{ids['alice']}", json={"role": "user"})


COMMENTED_FILTERS = {
    "apostrophe": "title != 'zz' // it's\n && owner.balance > 5",
    "quote_pair": "title != 'zz' // '\n && owner.balance > 5 // '",
    "sort_like": "owner.balance > 5 // \"",
}


@pytest.mark.parametrize("form", COMMENTED_FILTERS)
def test_comment_in_filter_does_not_hide_dependencies_from_the_cache(env, form):
    a, anon, ids = env["admin"], env["anon"], env["ids"]
    flt = COMMENTED_FILTERS[form]
    try:
        assert a.patch(f"/api/collections/rv_users/records/{ids['alice']}", json={"balance": 10}).status_code == 200
        r = anon.get("/api/collections/rv_posts/records", params={"filter": flt})
        assert r.status_code == 200 and len(r.json()["items"]) == 1, r.text
        assert a.patch(f"/api/collections/rv_users/records/{ids['alice']}", json={"balance": 1}).status_code == 200
        r = anon.get("/api/collections/rv_posts/records", params={"filter": flt})
        assert r.status_code == 200 and r.json()["items"] == [], r.text
    finally:
        a.patch(f"/api/collections/rv_users/records/{ids['alice']}", json={"balance": 10})


def test_comments_without_dependencies_are_still_cached(env):
    """The fix keeps comments usable: a commented rule that depends only on the record
    and @request.auth.id is still answered (and cacheable)."""
    a, ids = env["admin"], env["ids"]
    rule = "// the owner's own\nowner = @request.auth.id"
    r = a.post("/api/collections", json={
        "name": "rv_docs_plain", "listRule": rule, "viewRule": rule,
        "fields": [{"name": "owner", "type": "relation", "collectionId": "rv_users", "maxSelect": 1}]})
    assert r.status_code == 200, r.text
    doc = a.post("/api/collections/rv_docs_plain/records", json={"owner": ids["alice"]}).json()["id"]
    for _ in range(2):
        r = env["alice"].get("/api/collections/rv_docs_plain/records")
        assert [x["id"] for x in r.json()["items"]] == [doc]
        assert env["bob"].get("/api/collections/rv_docs_plain/records").json()["items"] == []


# ---- 4 (class: authorization decided once and kept past its validity) --------------------
#
# The authRule decides who may sign in. It was checked by auth-with-password only, so an
# account it no longer admits (banned, unverified again) renewed its token through
# auth-refresh for ever. PocketBase checks the authRule for every auth response,
# refresh included (403).

AUTH_RULES = {
    "bool_field": ("banned = false", {"banned": True}, {"banned": False}),
    "verified": ("verified = true", {"verified": False}, {"verified": True}),
    "select": ("status != 'blocked'", {"status": "blocked"}, {"status": "ok"}),
}


@pytest.mark.parametrize("shape", AUTH_RULES)
def test_auth_refresh_applies_the_auth_rule(shared_admin, shape):
    a = shared_admin
    rule, deny, allow = AUTH_RULES[shape]
    name = f"rv_auth_{shape}"
    r = a.post("/api/collections", json={
        "name": name, "type": "auth", "authRule": rule, "listRule": "", "viewRule": "",
        "fields": [{"name": "banned", "type": "bool"},
                   {"name": "status", "type": "select", "values": ["ok", "blocked"], "maxSelect": 1}]})
    assert r.status_code == 200, r.text
    r = a.post(f"/api/collections/{name}/records", json={
        "email": "eve@rv.example", "password": PW, "passwordConfirm": PW, "verified": True, "status": "ok"})
    assert r.status_code == 200, r.text
    rid = r.json()["id"]
    anon = Client(a.url)
    tok = anon.login(name, "eve@rv.example", PW)
    r = anon.post(f"/api/collections/{name}/auth-refresh", token=tok)
    assert r.status_code == 200, r.text
    tok = r.json()["token"]
    assert a.patch(f"/api/collections/{name}/records/{rid}", json=deny).status_code == 200
    r = anon.post(f"/api/collections/{name}/auth-refresh", token=tok)
    body = assert_error(r, 403)
    assert "requirements to authenticate" in body["message"]
    assert "token" not in r.json()
    # A new sign-in is refused too (unchanged: 400, whether the password was right or not).
    r = anon.post(f"/api/collections/{name}/auth-with-password",
                  json={"identity": "eve@rv.example", "password": PW}, token="")
    assert_error(r, 400)
    # Admitted again: refresh works with the same token.
    assert a.patch(f"/api/collections/{name}/records/{rid}", json=allow).status_code == 200
    r = anon.post(f"/api/collections/{name}/auth-refresh", token=tok)
    assert r.status_code == 200, r.text


def test_superuser_refresh_still_works(shared_admin):
    r = shared_admin.post("/api/collections/_superusers/auth-refresh")
    assert r.status_code == 200, r.text
    assert r.json()["token"]
