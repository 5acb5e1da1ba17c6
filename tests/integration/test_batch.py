"""POST /api/batch: one transaction, rules per item, PocketBase's error shape."""
import json

from conftest import Client, assert_error


def make_todos(admin):
    r = admin.post("/api/collections", json={
        "name": "todos", "listRule": "", "viewRule": "", "createRule": "", "updateRule": "", "deleteRule": "",
        "fields": [{"name": "title", "type": "text", "required": True}, {"name": "n", "type": "number"}]})
    assert r.status_code == 200, r.text
    admin.post("/api/collections", json={"name": "private", "fields": [{"name": "t", "type": "text"}]})


def count(c):
    return c.get("/api/collections/todos/records").json()["totalItems"]


def test_batch_all_or_nothing(admin):
    make_todos(admin)
    c = Client(admin.url)
    existing = c.post("/api/collections/todos/records", json={"title": "keep", "n": 1}).json()
    payload = {"requests": [
        {"method": "POST", "url": "/api/collections/todos/records", "body": {"title": "a"}},
        {"method": "PATCH", "url": f"/api/collections/todos/records/{existing['id']}", "body": {"n+": 5}},
        {"method": "PUT", "url": "/api/collections/todos/records", "body": {"id": "upsert000000001", "title": "u"}},
        {"method": "POST", "url": "/api/collections/todos/records?expand=", "body": {"title": "b"}},
    ]}
    # As the SDK sends it: multipart with @jsonPayload.
    r = c.post("/api/batch", files={"@jsonPayload": (None, json.dumps(payload), "application/json")})
    assert r.status_code == 200, r.text
    res = r.json()
    assert [x["status"] for x in res] == [200, 200, 200, 200]
    assert res[1]["body"]["n"] == 6 and res[2]["body"]["id"] == "upsert000000001"
    assert count(c) == 4
    # upsert again updates
    r = c.post("/api/batch", json={"requests": [
        {"method": "PUT", "url": "/api/collections/todos/records", "body": {"id": "upsert000000001", "title": "u2"}},
        {"method": "DELETE", "url": f"/api/collections/todos/records/{existing['id']}"}]})
    assert r.status_code == 200, r.text
    assert r.json()[0]["body"]["title"] == "u2" and r.json()[1] == {"status": 204, "body": None}
    assert count(c) == 3
    # a failing item rolls back everything before it
    r = c.post("/api/batch", json={"requests": [
        {"method": "POST", "url": "/api/collections/todos/records", "body": {"title": "x1"}},
        {"method": "POST", "url": "/api/collections/todos/records", "body": {"title": ""}}]})
    body = assert_error(r, 400, "requests")
    item = body["data"]["requests"]["1"]
    assert item["code"] == "batch_request_failed"
    assert item["response"]["status"] == 400 and "title" in item["response"]["data"]
    assert count(c) == 3


def test_batch_rules_and_limits(admin):
    make_todos(admin)
    c = Client(admin.url)
    r = c.post("/api/batch", json={"requests": [
        {"method": "POST", "url": "/api/collections/todos/records", "body": {"title": "ok"}},
        {"method": "POST", "url": "/api/collections/private/records", "body": {"t": "no"}}]})
    body = assert_error(r, 400)
    assert body["data"]["requests"]["1"]["response"]["status"] == 403
    assert count(c) == 0
    assert admin.post("/api/batch", json={"requests": [
        {"method": "POST", "url": "/api/collections/private/records", "body": {"t": "su"}}]}).status_code == 200
    for bad in [{}, {"requests": []}, {"requests": [{"method": "GET", "url": "/api/collections/todos/records"}]},
                {"requests": [{"method": "POST", "url": "/api/collections"}]},
                {"requests": [{"method": "POST", "url": "/api/collections/nope/records", "body": {}}]},
                {"requests": [{"url": "/api/collections/todos/records"}]}]:
        assert_error(c.post("/api/batch", json=bad), 400)
    many = {"requests": [{"method": "POST", "url": "/api/collections/todos/records", "body": {"title": "x"}}] * 101}
    assert_error(c.post("/api/batch", json=many), 400, "requests")
    assert count(c) == 0


def test_batch_signup_hashes_passwords(admin):
    admin.post("/api/collections", json={"name": "busers", "type": "auth", "createRule": ""})
    c = Client(admin.url)
    r = c.post("/api/batch", json={"requests": [
        {"method": "POST", "url": "/api/collections/busers/records",
         "body": {"email": f"b{i}@example.com", "password": "password-123", "passwordConfirm": "password-123"}}
        for i in range(3)]})
    assert r.status_code == 200, r.text
    assert all("password" not in x["body"] for x in r.json())
    assert c.login("busers", "b2@example.com", "password-123")
