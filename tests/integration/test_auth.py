"""Superuser and user authentication, tokens, refresh, revocation."""
import base64
import json
import time

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Client, assert_error, define_collection


def b64(obj):
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()


def test_superuser_login_and_refresh(server):
    c = Client(server.url)
    r = c.post("/api/collections/_superusers/auth-with-password",
               json={"identity": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert r.status_code == 200
    body = r.json()
    assert body["record"]["email"] == ADMIN_EMAIL
    assert "password" not in body["record"] and "tokenKey" not in body["record"]
    header, payload, sig = body["token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    assert claims["type"] == "auth" and claims["refreshable"] is True
    assert claims["collectionId"] == body["record"]["collectionId"] and claims["id"] == body["record"]["id"]
    assert claims["exp"] > time.time()
    r2 = c.post("/api/collections/_superusers/auth-refresh", token=body["token"])
    assert r2.status_code == 200 and r2.json()["record"]["id"] == body["record"]["id"]
    r3 = c.post("/api/collections/_superusers/auth-refresh", token="Bearer " + body["token"])
    assert r3.status_code == 200


def test_login_failures(server):
    c = Client(server.url)
    url = "/api/collections/_superusers/auth-with-password"
    assert_error(c.post(url, json={"identity": ADMIN_EMAIL, "password": "wrong-password"}), 400)
    assert_error(c.post(url, json={"identity": "nobody@example.com", "password": "whatever1"}), 400)
    assert_error(c.post(url, json={"identity": "", "password": ""}), 400, "identity")
    assert_error(c.post("/api/collections/nope/auth-with-password", json={}), 404)
    assert_error(c.post("/api/collections/_superusers/auth-refresh"), 401)


def test_token_tampering(server):
    c = Client(server.url)
    tok = c.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    h, p, s = tok.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=="))
    forged_payload = b64({**claims, "exp": claims["exp"] + 1000})
    none_header = b64({"alg": "none", "typ": "JWT"})
    hs512_header = b64({"alg": "HS512", "typ": "JWT"})
    bad = [f"{h}.{forged_payload}.{s}", f"{h}.{p}.{s[:-2]}xx", f"{none_header}.{p}.", f"{hs512_header}.{p}.{s}",
           "garbage", f"{h}.{b64({**claims, 'type': 'file'})}.{s}"]
    for t in bad:
        assert_error(c.get("/api/collections", token=t), 401)
    assert c.get("/api/collections", token=tok).status_code == 200


def test_users_signup_login_and_visibility(admin):
    coll = define_collection(admin, {
        "name": "users", "type": "auth", "createRule": "", "listRule": "id = @request.auth.id",
        "viewRule": "id = @request.auth.id", "updateRule": "id = @request.auth.id",
        "fields": [{"name": "name", "type": "text"}]})
    assert coll.status_code == 200, coll.text
    anon = Client(admin.url)
    # sign-up needs matching passwordConfirm and a valid, unique email
    assert_error(anon.post("/api/collections/users/records",
                           json={"email": "u1@example.com", "password": "password123", "passwordConfirm": "nope"}),
                 400, "passwordConfirm")
    assert_error(anon.post("/api/collections/users/records",
                           json={"email": "u1@example.com", "password": "short", "passwordConfirm": "short"}),
                 400, "password")
    assert_error(anon.post("/api/collections/users/records", json={"email": "u1@example.com"}), 400, "password")
    r = anon.post("/api/collections/users/records", json={
        "email": "u1@example.com", "password": "password123", "passwordConfirm": "password123", "name": "U1"})
    assert r.status_code == 200, r.text
    u1 = r.json()
    assert "password" not in u1 and "tokenKey" not in u1
    assert_error(anon.post("/api/collections/users/records", json={
        "email": "u1@example.com", "password": "password123", "passwordConfirm": "password123"}),
        400, "email", "validation_not_unique")
    assert_error(anon.post("/api/collections/users/records", json={
        "email": "u3@example.com", "password": "password123", "passwordConfirm": "password123", "verified": True}),
        400, "verified")
    anon.post("/api/collections/users/records", json={
        "email": "u2@example.com", "password": "password123", "passwordConfirm": "password123", "name": "U2"})
    t1 = anon.login("users", "u1@example.com", "password123")
    me = Client(admin.url, t1)
    # the owner rule: u1 sees only itself, with its own email
    lst = me.get("/api/collections/users/records").json()
    assert [x["email"] for x in lst["items"]] == ["u1@example.com"]
    assert anon.get("/api/collections/users/records").json()["items"] == []
    # a user token is not a superuser token
    assert_error(me.get("/api/collections"), 403)
    # superusers see every user but emails stay as they are stored
    assert admin.get("/api/collections/users/records").json()["totalItems"] == 2
    # changing the password needs the old one, and revokes old tokens
    url = f"/api/collections/users/records/{u1['id']}"
    assert_error(me.patch(url, json={"password": "newpassword1", "passwordConfirm": "newpassword1"}), 400,
                 "oldPassword")
    assert_error(me.patch(url, json={"password": "newpassword1", "passwordConfirm": "newpassword1",
                                     "oldPassword": "wrong-old-pw"}), 400, "oldPassword")
    r = me.patch(url, json={"password": "newpassword1", "passwordConfirm": "newpassword1",
                            "oldPassword": "password123"})
    assert r.status_code == 200, r.text
    assert_error(me.post("/api/collections/users/auth-refresh"), 401)
    t1b = anon.login("users", "u1@example.com", "newpassword1")
    assert Client(admin.url, t1b).post("/api/collections/users/auth-refresh").status_code == 200
    # deleting the user invalidates its token at once
    assert admin.delete(url).status_code == 204
    assert_error(Client(admin.url, t1b).post("/api/collections/users/auth-refresh"), 401)


def test_auth_methods_and_mail_flows(admin):
    admin.post("/api/collections", json={"name": "members", "type": "auth"})
    c = Client(admin.url)
    m = c.get("/api/collections/members/auth-methods").json()
    assert m["password"] == {"enabled": True, "identityFields": ["email"]}
    assert m["oauth2"]["enabled"] is False
    # The mail flows answer without telling whether the address has an account
    # (test_mail.py covers them end to end).
    assert c.post("/api/collections/members/request-password-reset", json={"email": "a@b.co"}).status_code == 204


def test_impersonation(admin):
    admin.post("/api/collections", json={"name": "imps", "type": "auth", "createRule": "",
                                         "viewRule": "id = @request.auth.id"})
    c = Client(admin.url)
    u = c.post("/api/collections/imps/records",
               json={"email": "imp@example.com", "password": "password-123", "passwordConfirm": "password-123"}).json()
    assert_error(c.post(f"/api/collections/imps/impersonate/{u['id']}", json={}), 401)
    r = admin.post(f"/api/collections/imps/impersonate/{u['id']}", json={"duration": 60})
    assert r.status_code == 200, r.text
    tok = r.json()["token"]
    claims = json.loads(base64.urlsafe_b64decode(tok.split(".")[1] + "=="))
    assert claims["refreshable"] is False and claims["exp"] <= time.time() + 61
    as_user = Client(admin.url, tok)
    assert as_user.get(f"/api/collections/imps/records/{u['id']}").status_code == 200
    assert_error(as_user.post("/api/collections/imps/auth-refresh"), 403)
    assert_error(admin.post("/api/collections/imps/impersonate/nosuchid00000", json={}), 404)


def test_header_rule(admin):
    admin.post("/api/collections", json={"name": "hdr", "listRule": "@request.headers.x_api_key = 'k1'",
                                         "fields": [{"name": "t", "type": "text"}]})
    admin.post("/api/collections/hdr/records", json={"t": "x"})
    c = Client(admin.url)
    assert c.get("/api/collections/hdr/records").json()["items"] == []
    assert len(c.get("/api/collections/hdr/records", headers={"X-Api-Key": "k1"}).json()["items"]) == 1


def test_token_checks_follow_the_auth_record(admin):
    """A worker remembers tokens it has verified; a change to the auth record (a rule's
    field, the password, deletion) or an expiry must count from the next request."""
    admin.post("/api/collections", json={
        "name": "memos", "type": "auth", "createRule": "",
        "fields": [{"name": "role", "type": "text"}]})
    admin.post("/api/collections", json={
        "name": "vault", "listRule": "@request.auth.role = 'admin'", "viewRule": "@request.auth.role = 'admin'",
        "fields": [{"name": "v", "type": "text"}]})
    item = admin.post("/api/collections/vault/records", json={"v": "secret"}).json()
    c = Client(admin.url)
    u = c.post("/api/collections/memos/records", json={
        "email": "memo@example.com", "password": "password-123", "passwordConfirm": "password-123",
        "role": "user"}).json()
    tok = c.login("memos", "memo@example.com", "password-123")
    as_user = Client(admin.url, tok)
    for _ in range(3):  # verified once, then served from the memo
        assert_error(as_user.get(f"/api/collections/vault/records/{item['id']}"), 404)
    assert admin.patch(f"/api/collections/memos/records/{u['id']}", json={"role": "admin"}).status_code == 200
    assert as_user.get(f"/api/collections/vault/records/{item['id']}").json()["v"] == "secret"
    # A new password changes the token key: the old token stops at once (a request with
    # an invalid token is a guest's, as in PocketBase; auth-refresh names the reason).
    assert admin.patch(f"/api/collections/memos/records/{u['id']}", json={
        "password": "password-456", "passwordConfirm": "password-456"}).status_code == 200
    assert_error(as_user.get(f"/api/collections/vault/records/{item['id']}"), 404)
    assert_error(as_user.post("/api/collections/memos/auth-refresh"), 401)
    tok2 = c.login("memos", "memo@example.com", "password-456")
    as_user = Client(admin.url, tok2)
    assert as_user.get(f"/api/collections/vault/records/{item['id']}").status_code == 200
    assert as_user.post("/api/collections/memos/auth-refresh").status_code == 200
    assert admin.delete(f"/api/collections/memos/records/{u['id']}").status_code == 204
    assert_error(as_user.get(f"/api/collections/vault/records/{item['id']}"), 404)
    assert_error(as_user.post("/api/collections/memos/auth-refresh"), 401)
    # A short-lived token, used while valid, is refused once it has expired.
    u2 = c.post("/api/collections/memos/records", json={
        "email": "memo2@example.com", "password": "password-123", "passwordConfirm": "password-123",
        "role": "admin"}).json()
    # 5 s: its first use must come while it is valid, also under ASan on a loaded machine.
    r = admin.post(f"/api/collections/memos/impersonate/{u2['id']}", json={"duration": 5})
    assert r.status_code == 200, r.text
    short = Client(admin.url, r.json()["token"])
    assert short.get(f"/api/collections/vault/records/{item['id']}").status_code == 200
    exp = json.loads(base64.urlsafe_b64decode(r.json()["token"].split(".")[1] + "=="))["exp"]
    time.sleep(max(0.0, exp - time.time()) + 1.1)
    assert_error(short.get(f"/api/collections/vault/records/{item['id']}"), 404)
