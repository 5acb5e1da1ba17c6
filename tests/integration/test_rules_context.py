"""Rule context: @collection, relations of @request.auth, :changed, :isset, :length,
authRule, manageRule, token revocation."""
from conftest import Client, assert_error


def signup(c, coll, email, **extra):
    r = c.post(f"/api/collections/{coll}/records",
               json={"email": email, "password": "password-123", "passwordConfirm": "password-123", **extra})
    assert r.status_code == 200, r.text
    return r.json()


def test_collection_reference_and_auth_relations(admin):
    teams = admin.post("/api/collections", json={"name": "teams", "fields": [{"name": "name", "type": "text"}]}).json()
    admin.post("/api/collections", json={
        "name": "members", "type": "auth", "createRule": "", "fields": [
            {"name": "team", "type": "relation", "collectionId": teams["id"]},
            {"name": "role", "type": "select", "values": ["user", "admin"]}]})
    t1 = admin.post("/api/collections/teams/records", json={"name": "red"}).json()
    t2 = admin.post("/api/collections/teams/records", json={"name": "blue"}).json()
    # docs: visible to members of the same team (a path through @request.auth)
    r = admin.post("/api/collections", json={
        "name": "docs", "listRule": "team = @request.auth.team && @request.auth.team.name != ''",
        "viewRule": "team = @request.auth.team",
        "fields": [{"name": "title", "type": "text"}, {"name": "team", "type": "relation", "collectionId": teams["id"]}]})
    assert r.status_code == 200, r.text
    # banned: a doc is listed only while no 'bans' record names its title (@collection)
    admin.post("/api/collections", json={"name": "bans", "fields": [{"name": "word", "type": "text"}]})
    r = admin.post("/api/collections", json={
        "name": "open_docs", "listRule": "@collection.bans.word ?!= title || @collection.bans:b.word:length = 0",
        "fields": [{"name": "title", "type": "text"}]})
    assert r.status_code == 200, r.text
    admin.post("/api/collections/docs/records", json={"title": "r1", "team": t1["id"]})
    admin.post("/api/collections/docs/records", json={"title": "b1", "team": t2["id"]})
    anon = Client(admin.url)
    m = admin.post("/api/collections/members/records", json={
        "email": "red@example.com", "password": "password-123", "passwordConfirm": "password-123",
        "team": t1["id"], "role": "user"}).json()
    red = Client(admin.url, anon.login("members", "red@example.com", "password-123"))
    assert [x["title"] for x in red.get("/api/collections/docs/records").json()["items"]] == ["r1"]
    assert anon.get("/api/collections/docs/records").json()["items"] == []
    for t in ["alpha", "beta"]:
        admin.post("/api/collections/open_docs/records", json={"title": t})
    assert sorted(x["title"] for x in anon.get("/api/collections/open_docs/records").json()["items"]) == ["alpha", "beta"]
    admin.post("/api/collections/bans/records", json={"word": "beta"})
    admin.post("/api/collections/bans/records", json={"word": "gamma"})
    # "?!=": some ban word differs from the title -> both still listed; so use the strict form too
    r = admin.patch("/api/collections/open_docs", json={"listRule": "@collection.bans.word != title"})
    assert r.status_code == 200, r.text
    assert [x["title"] for x in anon.get("/api/collections/open_docs/records").json()["items"]] == ["alpha"]
    # users may not use @collection in their own filters
    assert_error(red.get("/api/collections/docs/records", params={"filter": "@collection.bans.word = 'x'"}), 400)
    assert m["id"]


def test_changed_and_isset(admin):
    admin.post("/api/collections", json={
        "name": "profiles", "type": "auth", "createRule": "", "viewRule": "id = @request.auth.id",
        "updateRule": "id = @request.auth.id && @request.body.role:changed = false && @request.body.bio:isset = false || id = @request.auth.id && @request.body.role:isset = false",
        "fields": [{"name": "role", "type": "text"}, {"name": "bio", "type": "text"}]})
    c = Client(admin.url)
    u = signup(c, "profiles", "p@example.com", role="user")
    me = Client(admin.url, c.login("profiles", "p@example.com", "password-123"))
    url = f"/api/collections/profiles/records/{u['id']}"
    assert me.patch(url, json={"bio": "hi"}).status_code == 200          # role not sent
    assert me.patch(url, json={"role": "user"}).status_code == 200       # sent but unchanged
    assert_error(me.patch(url, json={"role": "admin"}), 404)             # changed: refused
    assert admin.get(url).json()["role"] == "user"


def test_auth_rule_blocks_login(admin):
    admin.post("/api/collections", json={"name": "gated", "type": "auth", "createRule": "", "authRule": "verified = true"})
    c = Client(admin.url)
    u = signup(c, "gated", "g@example.com")
    r = c.post("/api/collections/gated/auth-with-password", json={"identity": "g@example.com", "password": "password-123"})
    assert_error(r, 400)
    admin.patch(f"/api/collections/gated/records/{u['id']}", json={"verified": True})
    assert c.login("gated", "g@example.com", "password-123")
    admin.patch("/api/collections/gated", json={"authRule": None})
    r = c.post("/api/collections/gated/auth-with-password", json={"identity": "g@example.com", "password": "password-123"})
    assert_error(r, 400)


def test_manage_rule(admin):
    admin.post("/api/collections", json={
        "name": "staff", "type": "auth", "createRule": "", "viewRule": "",
        "updateRule": "id = @request.auth.id || @request.auth.boss = true",
        "manageRule": "@request.auth.boss = true",
        "fields": [{"name": "boss", "type": "bool"}]})
    c = Client(admin.url)
    boss = signup(c, "staff", "boss@example.com")
    worker = signup(c, "staff", "worker@example.com")
    admin.patch(f"/api/collections/staff/records/{boss['id']}", json={"boss": True})
    b = Client(admin.url, c.login("staff", "boss@example.com", "password-123"))
    w = Client(admin.url, c.login("staff", "worker@example.com", "password-123"))
    # the boss resets the worker's password without the old one and may verify it
    r = b.patch(f"/api/collections/staff/records/{worker['id']}",
                json={"password": "reset-pass-1", "passwordConfirm": "reset-pass-1", "verified": True})
    assert r.status_code == 200, r.text
    assert r.json()["verified"] is True
    assert c.login("staff", "worker@example.com", "reset-pass-1")
    # the worker may not do the same to the boss
    assert_error(w.patch(f"/api/collections/staff/records/{boss['id']}",
                         json={"password": "x-pass-123", "passwordConfirm": "x-pass-123"}), 404)


def test_revoke_tokens_logs_out_everywhere(admin):
    admin.post("/api/collections", json={"name": "rv", "type": "auth", "createRule": ""})
    c = Client(admin.url)
    u = signup(c, "rv", "rv@example.com")
    t1 = c.login("rv", "rv@example.com", "password-123")
    t2 = c.login("rv", "rv@example.com", "password-123")
    other = signup(c, "rv", "rv2@example.com")
    o = Client(admin.url, c.login("rv", "rv2@example.com", "password-123"))
    assert_error(o.post(f"/api/basalt/collections/rv/revoke-tokens/{u['id']}"), 403)
    assert_error(c.post(f"/api/basalt/collections/rv/revoke-tokens/{u['id']}"), 401)
    r = Client(admin.url, t1).post(f"/api/basalt/collections/rv/revoke-tokens/{u['id']}")
    assert r.status_code == 204, r.text
    for t in (t1, t2):
        assert_error(Client(admin.url, t).post("/api/collections/rv/auth-refresh"), 401)
    assert admin.post(f"/api/basalt/collections/rv/revoke-tokens/{other['id']}").status_code == 204
    assert_error(o.post("/api/collections/rv/auth-refresh"), 401)


def test_collection_alias_is_one_row(admin):
    """With an alias, both conditions must hold for the same record of the other collection."""
    admin.post("/api/collections", json={"name": "grants", "fields": [
        {"name": "user", "type": "text"}, {"name": "level", "type": "number"}]})
    r = admin.post("/api/collections", json={
        "name": "vault", "listRule": "@collection.grants:g.user = @request.query.who && @collection.grants:g.level >= 5",
        "fields": [{"name": "t", "type": "text"}]})
    assert r.status_code == 200, r.text
    admin.post("/api/collections/vault/records", json={"t": "gold"})
    # ann has level 1, bob has level 9: without a shared row "ann" would pass via bob's level.
    admin.post("/api/collections/grants/records", json={"user": "ann", "level": 1})
    admin.post("/api/collections/grants/records", json={"user": "bob", "level": 9})
    c = Client(admin.url)
    assert c.get("/api/collections/vault/records", params={"who": "ann"}).json()["items"] == []
    assert len(c.get("/api/collections/vault/records", params={"who": "bob"}).json()["items"]) == 1
    assert c.get("/api/collections/vault/records", params={"who": "zed"}).json()["items"] == []
