"""A user's data export and erasure, and retention purging (issue 15, item 9;
docs/privacy.md). Runs on both backends (make integration / integration-pg)."""
import io
import json
import os
import subprocess
import time
import zipfile
from datetime import datetime, timedelta, timezone

import pytest

from conftest import (ADMIN_EMAIL, ADMIN_PASSWORD, BIN, Client, Server, assert_error, db_args, make_superuser,
                      wait_until)
from rtclient import SSE, WS

PASSWORD = "alice-password-1"


def pb_time(dt):
    return dt.strftime("%Y-%m-%d %H:%M:%S.000Z")


def build(admin):
    """members (auth); posts by an author; comments on a post (cascade) by an author;
    groups with several members; likes by a user (cascade)."""
    r = admin.post("/api/collections", json={
        "name": "members", "type": "auth", "fields": [{"name": "nick", "type": "text"}],
        "listRule": "", "viewRule": "", "createRule": "", "updateRule": "id = @request.auth.id"})
    assert r.status_code == 200, r.text
    members = r.json()["id"]
    r = admin.post("/api/collections", json={
        "name": "posts", "fields": [{"name": "title", "type": "text"},
                                    {"name": "author", "type": "relation", "collectionId": members, "maxSelect": 1}],
        "listRule": "", "viewRule": ""})
    assert r.status_code == 200, r.text
    posts = r.json()["id"]
    r = admin.post("/api/collections", json={
        "name": "comments", "fields": [{"name": "text", "type": "text"},
                                       {"name": "post", "type": "relation", "collectionId": posts, "maxSelect": 1,
                                        "cascadeDelete": True},
                                       {"name": "author", "type": "relation", "collectionId": members,
                                        "maxSelect": 1}],
        "listRule": "", "viewRule": ""})
    assert r.status_code == 200, r.text
    r = admin.post("/api/collections", json={
        "name": "groups", "fields": [{"name": "name", "type": "text"},
                                     {"name": "members", "type": "relation", "collectionId": members,
                                      "maxSelect": 10}],
        "listRule": "", "viewRule": ""})
    assert r.status_code == 200, r.text
    r = admin.post("/api/collections", json={
        "name": "likes", "fields": [{"name": "user", "type": "relation", "collectionId": members, "maxSelect": 1,
                                     "cascadeDelete": True},
                                    {"name": "post", "type": "relation", "collectionId": posts, "maxSelect": 1}],
        "listRule": "", "viewRule": ""})
    assert r.status_code == 200, r.text

    def mk(coll, body):
        r = admin.post(f"/api/collections/{coll}/records", json=body)
        assert r.status_code == 200, r.text
        return r.json()["id"]

    ids = {}
    ids["alice"] = mk("members", {"email": "alice@example.com", "password": PASSWORD, "passwordConfirm": PASSWORD,
                                  "nick": "alice"})
    ids["bob"] = mk("members", {"email": "bob@example.com", "password": "bob-password-1",
                                "passwordConfirm": "bob-password-1", "nick": "bob"})
    ids["a_post1"] = mk("posts", {"title": "alice 1", "author": ids["alice"]})
    ids["a_post2"] = mk("posts", {"title": "alice 2", "author": ids["alice"]})
    ids["b_post"] = mk("posts", {"title": "bob 1", "author": ids["bob"]})
    ids["b_on_a"] = mk("comments", {"text": "bob on alice", "post": ids["a_post1"], "author": ids["bob"]})
    ids["a_on_b"] = mk("comments", {"text": "alice on bob", "post": ids["b_post"], "author": ids["alice"]})
    ids["b_on_b"] = mk("comments", {"text": "bob on bob", "post": ids["b_post"], "author": ids["bob"]})
    ids["group"] = mk("groups", {"name": "both", "members": [ids["alice"], ids["bob"]]})
    ids["b_group"] = mk("groups", {"name": "bob only", "members": [ids["bob"]]})
    ids["a_like"] = mk("likes", {"user": ids["alice"], "post": ids["b_post"]})
    ids["b_like"] = mk("likes", {"user": ids["bob"], "post": ids["a_post1"]})
    return ids


def read_zip(data):
    z = zipfile.ZipFile(io.BytesIO(data))
    assert z.testzip() is None
    return {n: json.loads(z.read(n)) for n in z.namelist()}


def test_export_has_the_users_records_and_nothing_of_others(server, admin):
    ids = build(admin)
    alice = Client(server.url)
    alice.token = alice.login("members", "alice@example.com", PASSWORD)
    r = alice.get(f"/api/basalt/users/members/{ids['alice']}/export")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    files = read_zip(r.content)
    assert set(files) == {"user.json", "manifest.json", "records/posts.json", "records/comments.json",
                          "records/groups.json", "records/likes.json"}, set(files)
    user = files["user.json"]
    assert user["id"] == ids["alice"] and user["email"] == "alice@example.com" and user["nick"] == "alice"
    assert "password" not in user and "tokenKey" not in user
    got = {name[8:-5]: sorted(x["id"] for x in recs) for name, recs in files.items() if name.startswith("records/")}
    assert got == {"posts": sorted([ids["a_post1"], ids["a_post2"]]), "comments": [ids["a_on_b"]],
                   "groups": [ids["group"]], "likes": [ids["a_like"]]}
    # Others' records are not there (their ids appear only as references from hers).
    blob = json.dumps(files)
    all_ids = [x["id"] for recs in files.values() if isinstance(recs, list) for x in recs]
    for other in ("b_post", "b_on_a", "b_on_b", "b_group", "b_like"):
        assert ids[other] not in all_ids, other
    for text in ("bob 1", "bob on alice", "bob on bob", "bob only", "bob@example.com"):
        assert text not in blob, text
    assert files["manifest.json"]["records"] == {"posts": 2, "comments": 1, "groups": 1, "likes": 1}
    # A superuser may export anyone; another user, anonymous, a bad id or collection may not.
    assert admin.get(f"/api/basalt/users/members/{ids['alice']}/export").status_code == 200
    bob = Client(server.url)
    bob.token = bob.login("members", "bob@example.com", "bob-password-1")
    assert_error(bob.get(f"/api/basalt/users/members/{ids['alice']}/export"), 403)
    assert_error(Client(server.url).get(f"/api/basalt/users/members/{ids['alice']}/export"), 401)
    assert_error(admin.get("/api/basalt/users/members/nosuchuser000/export"), 404)
    assert_error(admin.get("/api/basalt/users/members/..%2f..%2fetc/export"), 400)
    assert_error(admin.get("/api/basalt/users/members/a%22b/export"), 404)
    assert_error(admin.get(f"/api/basalt/users/posts/{ids['a_post1']}/export"), 400)
    assert_error(admin.get(f"/api/basalt/users/nothere/{ids['alice']}/export"), 404)


def test_erase_cascades_and_nothing_returns_afterwards(server, admin):
    ids = build(admin)
    alice = Client(server.url)
    alice.token = alice.login("members", "alice@example.com", PASSWORD)
    bob = Client(server.url)
    bob.token = bob.login("members", "bob@example.com", "bob-password-1")
    # A cached list with alice's posts in it, and a realtime subscriber.
    before = bob.get("/api/collections/posts/records", params={"perPage": 50}).json()["items"]
    assert {p["id"] for p in before} >= {ids["a_post1"], ids["a_post2"]}
    assert bob.get("/api/collections/posts/records", params={"perPage": 50}).status_code == 200
    sse = SSE(server.url)
    r = bob.post("/api/realtime", json={"clientId": sse.client_id,
                                        "subscriptions": ["posts/*", "comments/*", f"members/{ids['alice']}"]})
    assert r.status_code == 204, r.text
    # Alice's own realtime connection, signed in as her.
    ws = WS(server.url, headers={"Authorization": alice.token})
    assert ws.request({"type": "subscribe", "topics": ["groups/*"]})["type"] == "subscribed"
    # Not without the password; not by another user.
    assert_error(alice.delete(f"/api/basalt/users/members/{ids['alice']}/erase", json={}), 400, "password")
    assert_error(alice.delete(f"/api/basalt/users/members/{ids['alice']}/erase", json={"password": "wrong-pass"}),
                 400, "password")
    assert_error(bob.delete(f"/api/basalt/users/members/{ids['alice']}/erase",
                            json={"password": "bob-password-1"}), 403)
    assert alice.get(f"/api/collections/members/records/{ids['alice']}").status_code == 200
    r = alice.delete(f"/api/basalt/users/members/{ids['alice']}/erase", json={"password": PASSWORD})
    assert r.status_code == 200, r.text
    assert r.json()["deletedRecords"] == 5  # 2 posts, 1 comment, 1 like, the user (the group keeps bob)
    # Cascades: bob's comment on alice's post went with the post; bob's like of it
    # lost its post; the group lost alice; bob's own records stay.
    assert admin.get(f"/api/collections/comments/records/{ids['b_on_a']}").status_code == 404
    assert admin.get(f"/api/collections/comments/records/{ids['b_on_b']}").status_code == 200
    assert admin.get(f"/api/collections/posts/records/{ids['b_post']}").status_code == 200
    g = admin.get(f"/api/collections/groups/records/{ids['group']}").json()
    assert g["members"] == [ids["bob"]]
    assert admin.get(f"/api/collections/likes/records/{ids['b_like']}").json()["post"] == ""
    # Nothing returns alice's data: views, the cached list, filters, her token.
    for coll, key in (("posts", "a_post1"), ("posts", "a_post2"), ("comments", "a_on_b"), ("likes", "a_like"),
                      ("members", "alice")):
        assert admin.get(f"/api/collections/{coll}/records/{ids[key]}").status_code == 404, coll
    after = bob.get("/api/collections/posts/records", params={"perPage": 50}).json()["items"]
    assert {p["id"] for p in after} == {ids["b_post"]}
    for coll in ("posts", "comments", "likes", "groups", "members"):
        items = admin.get(f"/api/collections/{coll}/records", params={"perPage": 200}).json()["items"]
        assert ids["alice"] not in json.dumps(items) and "alice@example.com" not in json.dumps(items), coll
    r = admin.get("/api/collections/posts/records", params={"filter": f'author = "{ids["alice"]}"'})
    assert r.json()["totalItems"] == 0
    assert alice.post("/api/collections/members/auth-refresh").status_code in (401, 404)
    assert alice.get(f"/api/basalt/users/members/{ids['alice']}/export").status_code in (401, 403, 404)
    assert_error(Client(server.url).post("/api/collections/members/auth-with-password",
                                         json={"identity": "alice@example.com", "password": PASSWORD}), 400)
    # The realtime subscriber was told of each deletion, and gets nothing of hers after.
    events = sse.collect(quiet=1.0)
    deleted = {json.loads(e["data"])["record"]["id"] for e in events
               if e.get("data") and json.loads(e["data"]).get("action") == "delete"}
    assert {ids["a_post1"], ids["a_post2"], ids["b_on_a"], ids["a_on_b"]} <= deleted, events
    assert admin.post("/api/collections/comments/records", json={"text": "later", "post": ids["b_post"],
                                                                "author": ids["bob"]}).status_code == 200
    later = sse.collect(quiet=1.0)
    assert later and ids["alice"] not in json.dumps(later)
    sse.close()
    # Her own realtime connection was signed out and closed (policy, 1008).
    while ws.recv(timeout=5) is not None:
        pass
    assert ws.close_code == 1008
    ws.close()
    # Erasure is audited.
    # Each instance writes its own audit log (as separate machines would): all of them.
    audit = "".join(open(os.path.join(d, "audit.log")).read() for d in server.instance_dirs
                    if os.path.exists(os.path.join(d, "audit.log")))
    assert "user_erase" in audit and ids["alice"] in audit
    assert "user_erase_refused" in audit
    assert_error(admin.delete(f"/api/basalt/users/members/{ids['alice']}/erase"), 404)


def test_superuser_erase_and_the_cli(server, admin, tmpdir_path):
    ids = build(admin)
    r = admin.delete(f"/api/basalt/users/members/{ids['bob']}/erase")
    assert r.status_code == 200, r.text
    assert admin.get(f"/api/collections/posts/records/{ids['b_post']}").status_code == 404
    # The CLI exports the same archive, and erases.
    out = os.path.join(tmpdir_path, "alice.zip")
    p = subprocess.run([BIN, "user", "export", "members", ids["alice"], f"--out={out}", f"--dir={server.dir}",
                        *db_args(server.dir)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    files = read_zip(open(out, "rb").read())
    assert files["user.json"]["id"] == ids["alice"] and "password" not in files["user.json"]
    assert sorted(x["id"] for x in files["records/posts.json"]) == sorted([ids["a_post1"], ids["a_post2"]])
    p = subprocess.run([BIN, "user", "erase", "members", ids["alice"], f"--dir={server.dir}", *db_args(server.dir)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    time.sleep(1.5)  # the server notices another process's commit within about a second
    assert admin.get(f"/api/collections/members/records/{ids['alice']}").status_code == 404
    assert "\"actor\":\"cli\"" in open(os.path.join(server.dir, "audit.log")).read().replace(" ", "")
    p = subprocess.run([BIN, "user", "erase", "members", ids["alice"], f"--dir={server.dir}", *db_args(server.dir)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "not found" in p.stderr, p.stderr
    p = subprocess.run([BIN, "user", "export", "members", ids["alice"]], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2


def test_retention_purges_only_old_records(tmpdir_path):
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path, ["--retention-interval-s=1"]).start()
    try:
        admin = Client(srv.url)
        admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        # The option is checked.
        bad = admin.post("/api/collections", json={"name": "ev", "fields": [{"name": "at", "type": "text"}],
                                                    "retention": {"field": "at", "days": 30}})
        assert_error(bad, 400, "retention")
        bad = admin.post("/api/collections", json={"name": "ev", "fields": [{"name": "at", "type": "date"}],
                                                    "retention": {"field": "at", "days": 0}})
        assert_error(bad, 400, "retention")
        r = admin.post("/api/collections", json={"name": "events", "fields": [{"name": "at", "type": "date"},
                                                                             {"name": "n", "type": "number"}],
                                                  "listRule": "", "viewRule": ""})
        assert r.status_code == 200, r.text
        now = datetime.now(timezone.utc)
        old, new = [], []
        for i in range(250):  # more than one batch of old records
            r = admin.post("/api/collections/events/records", json={"at": pb_time(now - timedelta(days=31, minutes=i)),
                                                                     "n": i})
            old.append(r.json()["id"])
        for i in range(5):
            r = admin.post("/api/collections/events/records", json={"at": pb_time(now - timedelta(days=29)), "n": i})
            new.append(r.json()["id"])
        r = admin.post("/api/collections/events/records", json={"n": 99})  # no date: kept
        new.append(r.json()["id"])
        assert admin.get("/api/collections/events/records").json()["totalItems"] == 256
        sse = SSE(srv.url)
        assert admin.post("/api/realtime", json={"clientId": sse.client_id,
                                                 "subscriptions": ["events/*"]}).status_code == 204
        r = admin.patch("/api/collections/events", json={"retention": {"field": "at", "days": 30}})
        assert r.status_code == 200, r.text
        assert r.json()["retention"] == {"field": "at", "days": 30}
        deadline = time.time() + 30
        while time.time() < deadline:
            if admin.get("/api/collections/events/records").json()["totalItems"] == 6:
                break
            time.sleep(0.2)
        items = admin.get("/api/collections/events/records", params={"perPage": 100}).json()["items"]
        assert sorted(x["id"] for x in items) == sorted(new)
        # Through the normal write path: realtime saw the deletes, the audit log the purge.
        events = sse.collect(quiet=1.0)
        purged = {json.loads(e["data"])["record"]["id"] for e in events if e.get("data")}
        assert purged == set(old)
        sse.close()
        # The purge runs on whichever instance holds the job's turn: every instance's log.
        audit = "".join(open(os.path.join(d, "audit.log")).read() for d in srv.instance_dirs
                        if os.path.exists(os.path.join(d, "audit.log")))
        assert "retention_purge" in audit
        # Turned off, it keeps everything.
        assert admin.patch("/api/collections/events", json={"retention": None}).status_code == 200
        assert "retention" not in admin.get("/api/collections/events").json()
    finally:
        assert srv.stop() == 0


def test_erasure_forgets_the_users_request_log_entries(server, admin):
    """The request log held her requests (her address, her agent) and paths naming her;
    after erasure /api/logs has none of them, also those still unflushed at the time."""
    ids = build(admin)
    alice = Client(server.url)
    alice.token = alice.login("members", "alice@example.com", PASSWORD)
    ua = {"User-Agent": "alice-browser/1.0"}
    assert alice.get("/api/collections/posts/records", headers=dict(ua)).status_code == 200
    assert alice.get(f"/api/collections/members/records/{ids['alice']}", headers=dict(ua)).status_code == 200
    assert admin.get(f"/api/collections/members/records/{ids['alice']}").status_code == 200

    def hers():
        items = admin.get("/api/logs", params={"perPage": 500}).json()["items"]
        return [i for i in items if i["data"].get("userAgent") == "alice-browser/1.0" or
                ids["alice"] in i["data"].get("url", "")]
    wait_until(lambda: len(hers()) >= 3, what="her requests in the request log")
    # One more request just before the erasure: still in the worker's ring then.
    assert alice.get("/api/collections/groups/records", headers=dict(ua)).status_code == 200
    r = alice.delete(f"/api/basalt/users/members/{ids['alice']}/erase", json={"password": PASSWORD},
                     headers=dict(ua))
    assert r.status_code == 200, r.text
    wait_until(lambda: hers() == [], timeout=30, what="her log entries forgotten")
    # Others' entries stay.
    assert admin.get("/api/logs", params={"perPage": 500}).json()["totalItems"] > 0
