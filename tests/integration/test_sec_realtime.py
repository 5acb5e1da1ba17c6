"""Security battery, realtime (issue 12 items 4, 7, 13 and the WebSocket part of 15):
a realtime connection follows its signed-in record (revocation, password change,
deletion, a changed role, a new token secret), WebSocket control frames are bounded,
topics and options with control characters are refused, and the close handshake
follows RFC 6455."""
import json
import os
import socket
import struct
import time
import urllib.parse

import pytest

from conftest import (ADMIN_EMAIL, ADMIN_PASSWORD, Client, Server, assert_error, define_collection, direct_url,
                      make_superuser)
from rtclient import SSE, WS


def start(tmpdir_path, *args):
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path, list(args)).start()
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    return srv, admin


def setup_world(admin):
    """users (auth, with a role), docs readable by role "admin" only, posts by anyone
    signed in, notes by everyone."""
    r = define_collection(admin, {
        "name": "users", "type": "auth", "fields": [{"name": "role", "type": "text"}],
        "listRule": "id = @request.auth.id", "viewRule": "id = @request.auth.id", "createRule": "",
        "updateRule": "id = @request.auth.id"})
    assert r.status_code == 200, r.text
    for name, rule in (("docs", "@request.auth.role = 'admin'"), ("posts", "@request.auth.id != ''"),
                       ("notes", "")):
        r = admin.post("/api/collections", json={
            "name": name, "type": "base", "fields": [{"name": "text", "type": "text"}],
            "listRule": rule, "viewRule": rule})
        assert r.status_code == 200, r.text
    users = {}
    for name, role in (("alice", "admin"), ("bob", "user")):
        r = admin.post("/api/collections/users/records", json={
            "email": f"{name}@example.com", "password": "password-123", "passwordConfirm": "password-123",
            "role": role})
        assert r.status_code == 200, r.text
        c = Client(admin.url)
        c.token = c.login("users", f"{name}@example.com", "password-123")
        users[name] = (r.json()["id"], c)
    return users


@pytest.fixture
def world(tmpdir_path):
    srv, admin = start(tmpdir_path)
    users = setup_world(admin)
    yield srv, admin, users
    rc = srv.stop()
    assert rc == 0, f"basalt exited with {rc}; see {tmpdir_path}/server.log"


def create(admin, coll, text):
    r = admin.post(f"/api/collections/{coll}/records", json={"text": text})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def ws_events(w, quiet=0.7):
    return [m["data"]["record"]["text"] for m in w.collect(quiet=quiet) if m.get("type") == "event"]


def sse_events(s, quiet=0.7):
    return [json.loads(e["data"])["record"]["text"] for e in s.collect(quiet=quiet)
            if e.get("event", "").startswith(("docs/", "posts/", "notes/"))]


def ws_signed_in(srv, client, topics, via_message=False):
    if via_message:
        w = WS(srv.url)
        m = w.request({"type": "auth", "token": client.token})
        assert m["type"] == "auth" and m.get("id"), m
    else:
        w = WS(srv.url, headers={"Authorization": client.token})
    m = w.request({"type": "subscribe", "topics": topics})
    assert m["type"] == "subscribed", m
    return w


def sse_signed_in(srv, client, topics):
    s = SSE(srv.url)
    r = client.post("/api/realtime", json={"clientId": s.client_id, "subscriptions": topics})
    assert r.status_code == 204, r.text
    return s


# ---- item 4: the connection follows its signed-in record ----

def revoke_self(admin, users, uid, client):
    r = client.post(f"/api/basalt/collections/users/revoke-tokens/{uid}")
    assert r.status_code == 204, r.text


def revoke_by_admin(admin, users, uid, client):
    r = admin.post(f"/api/basalt/collections/users/revoke-tokens/{uid}")
    assert r.status_code == 204, r.text


def password_by_admin(admin, users, uid, client):
    r = admin.patch(f"/api/collections/users/records/{uid}",
                    json={"password": "another-pass-1", "passwordConfirm": "another-pass-1"})
    assert r.status_code == 200, r.text


def password_in_batch(admin, users, uid, client):
    r = admin.post("/api/batch", json={"requests": [
        {"method": "PATCH", "url": f"/api/collections/users/records/{uid}",
         "body": {"password": "another-pass-1", "passwordConfirm": "another-pass-1"}}]})
    assert r.status_code == 200, r.text


def delete_by_admin(admin, users, uid, client):
    r = admin.delete(f"/api/collections/users/records/{uid}")
    assert r.status_code == 204, r.text


def delete_in_batch(admin, users, uid, client):
    r = admin.post("/api/batch", json={"requests": [
        {"method": "DELETE", "url": f"/api/collections/users/records/{uid}"}]})
    assert r.status_code == 200, r.text


def new_token_secret(admin, users, uid, client):
    r = admin.patch("/api/collections/users", json={"authToken": {"secret": "s" * 40}})
    assert r.status_code == 200, r.text


LOSSES = [revoke_self, revoke_by_admin, password_by_admin, password_in_batch, delete_by_admin,
          delete_in_batch, new_token_secret]


@pytest.mark.parametrize("via_message", [False, True], ids=["handshake", "auth-message"])
@pytest.mark.parametrize("loss", LOSSES, ids=lambda f: f.__name__)
def test_ws_loses_its_identity_with_its_record(world, loss, via_message):
    srv, admin, users = world
    uid, alice = users["alice"]
    w = ws_signed_in(srv, alice, ["posts/*", "docs/*"], via_message)
    create(admin, "posts", "before")
    assert ws_events(w) == ["before"]
    loss(admin, users, uid, alice)
    # Closed with 1008 and a reason a person can act on; nothing more is delivered.
    msgs = w.collect(quiet=2)
    assert w.close_code == 1008, (msgs, w.close_code)
    assert "sign in again" in w.close_reason
    create(admin, "posts", "after")
    create(admin, "docs", "after")
    assert all(m.get("type") != "event" or m["data"]["record"]["text"] == "before" for m in msgs)
    w.close()


def test_ws_superuser_revoked_is_closed(world):
    srv, admin, users = world
    w = ws_signed_in(srv, admin, ["posts/*"])
    su_id = admin.get("/api/collections/_superusers/records").json()["items"][0]["id"]
    r = admin.post(f"/api/basalt/collections/_superusers/revoke-tokens/{su_id}")
    assert r.status_code == 204, r.text
    w.collect(quiet=2)
    assert w.close_code == 1008
    w.close()


@pytest.mark.parametrize("loss", LOSSES, ids=lambda f: f.__name__)
def test_sse_drops_the_identity_with_its_record(world, loss):
    """PocketBase's behaviour: the stream stays, but as anonymous: rules that need the
    record stop admitting events, and the next subscription may sign in anew."""
    srv, admin, users = world
    uid, alice = users["alice"]
    bob_id, bob = users["bob"]
    s = sse_signed_in(srv, alice, ["posts/*", "docs/*", "notes/*"])
    create(admin, "posts", "p-before")
    create(admin, "docs", "d-before")
    assert sorted(sse_events(s)) == ["d-before", "p-before"]
    # No wait needed: a worker handles events in commit order, the loss before the creates.
    loss(admin, users, uid, alice)
    create(admin, "posts", "p-after")
    create(admin, "docs", "d-after")
    create(admin, "notes", "n-after")
    assert sse_events(s) == ["n-after"]
    # The identity is gone, so another one may subscribe on this stream.
    bob.token = bob.login("users", "bob@example.com", "password-123")
    r = bob.post("/api/realtime", json={"clientId": s.client_id, "subscriptions": ["posts/*"]})
    assert r.status_code == 204, r.text
    create(admin, "posts", "p-bob")
    assert sse_events(s) == ["p-bob"]
    s.close()


def role_by_admin(admin, uid, role):
    r = admin.patch(f"/api/collections/users/records/{uid}", json={"role": role})
    assert r.status_code == 200, r.text


def role_in_batch(admin, uid, role):
    r = admin.post("/api/batch", json={"requests": [
        {"method": "PATCH", "url": f"/api/collections/users/records/{uid}", "body": {"role": role}}]})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("change", [role_by_admin, role_in_batch], ids=lambda f: f.__name__)
def test_role_change_reaches_ws_and_sse_rules(world, change):
    srv, admin, users = world
    uid, alice = users["alice"]
    w = ws_signed_in(srv, alice, ["docs/*"])
    s = sse_signed_in(srv, alice, ["docs/*"])
    create(admin, "docs", "one")
    assert ws_events(w) == ["one"] and sse_events(s) == ["one"]
    change(admin, uid, "user")
    create(admin, "docs", "two")
    assert ws_events(w) == [] and sse_events(s) == []
    change(admin, uid, "admin")
    create(admin, "docs", "three")
    assert ws_events(w) == ["three"] and sse_events(s) == ["three"]
    # The connections stay open and signed in: a change of role is no revocation.
    assert w.close_code is None
    w.close()
    s.close()


def test_own_update_of_another_field_keeps_the_connection(world):
    """A change to the record that keeps its tokenKey refreshes it, nothing more."""
    srv, admin, users = world
    uid, bob = users["bob"]
    w = ws_signed_in(srv, bob, ["posts/*"])
    r = bob.patch(f"/api/collections/users/records/{uid}", json={"emailVisibility": True})
    assert r.status_code == 200, r.text
    create(admin, "posts", "still")
    assert ws_events(w) == ["still"] and w.close_code is None
    # Another user's revocation does not touch this connection.
    alice_id, _ = users["alice"]
    assert admin.post(f"/api/basalt/collections/users/revoke-tokens/{alice_id}").status_code == 204
    create(admin, "posts", "again")
    assert ws_events(w) == ["again"] and w.close_code is None
    w.close()


# ---- item 7: control frames are bounded ----

def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def ping_frames(count, payload=b"p" * 125):
    mask = b"\x00\x00\x00\x00"  # a zero mask: the payload is sent as is
    frame = bytes([0x89, 0x80 | len(payload)]) + mask + payload
    return frame * count


def test_ws_ping_flood_from_a_reader_that_never_reads_is_bounded(tmpdir_path):
    srv, admin = start(tmpdir_path)
    try:
        # Warm up: one connection first, so that what realtime allocates once is in the base.
        w0 = WS(srv.url)
        w0.request({"type": "ping"})
        w0.close()
        time.sleep(0.3)
        base = vm_rss_kib(srv.proc.pid)
        port = srv.port
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never read
        sock.sendall(b"GET /api/realtime/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        chunk = ping_frames(8000)  # ~1 MB
        sent = 0
        sock.settimeout(3)
        try:
            while sent < 60 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except (OSError, socket.timeout):
            pass  # the server stopped reading or closed: what we want
        time.sleep(0.5)
        grown = vm_rss_kib(srv.proc.pid) - base
        assert grown < 24 * 1024, f"server RSS grew by {grown} KiB after {sent} bytes of pings"
        sock.close()
        assert srv.proc.poll() is None
    finally:
        assert srv.stop() == 0


def test_ws_ping_burst_is_rate_limited_and_closed_with_1008(tmpdir_path):
    srv, admin = start(tmpdir_path, "--realtime-max-messages=20")
    try:
        w = WS(srv.url)
        w.sock.sendall(ping_frames(300, b"x"))
        pongs = 0
        w.sock.settimeout(5)
        try:
            while True:
                op, payload = w.recv_frame(5)
                if op == 0xA:
                    pongs += 1
                elif op == 8:
                    w.close_code = struct.unpack(">H", payload[:2])[0]
                    w.close_reason = payload[2:].decode()
                    break
        except (OSError, ConnectionError):
            pass
        assert w.close_code == 1008, w.close_code
        assert "rate" in w.close_reason
        assert pongs <= 20
        w.close()
    finally:
        assert srv.stop() == 0


def test_ws_unsolicited_pongs_count_against_the_rate(tmpdir_path):
    srv, admin = start(tmpdir_path, "--realtime-max-messages=20")
    try:
        w = WS(srv.url)
        for _ in range(100):
            w.send_frame(0xA, b"")
        w.collect(quiet=1)
        assert w.close_code == 1008
        w.close()
    finally:
        assert srv.stop() == 0


def test_ws_pongs_count_against_the_queue(tmpdir_path):
    """Over the queue bound the connection is a slow consumer, also for pongs."""
    srv, admin = start(tmpdir_path, "--realtime-queue-kib=16", "--realtime-max-messages=100000")
    try:
        # One process's queue and memory: instance A itself in cluster mode (direct_url).
        sock = socket.create_connection(("127.0.0.1", int(direct_url(srv.url).rsplit(":", 1)[1])), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /api/realtime/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        base = vm_rss_kib(srv.proc.pid)
        sock.settimeout(3)
        sent = 0
        try:
            while sent < 30 * 1024 * 1024:
                sock.sendall(ping_frames(8000))
                sent += 8000 * 131
        except (OSError, socket.timeout):
            pass
        time.sleep(0.5)
        grown = vm_rss_kib(srv.proc.pid) - base
        assert grown < 24 * 1024, f"server RSS grew by {grown} KiB"
        assert sent < 30 * 1024 * 1024, "the server kept reading pings without bound"
        # The client stopped sending when the server stopped reading; the server's count
        # follows once its loop has turned (a poll: the machine may be loaded).
        count, deadline = 0, time.time() + 15
        while count < 1 and time.time() < deadline:
            metrics = Client(direct_url(srv.url), admin.token).get("/metrics").text
            line = [l for l in metrics.splitlines() if 'reason="slow_consumer"' in l][0]
            count = int(float(line.split()[-1]))
            if count < 1:
                time.sleep(0.2)
        assert count >= 1, line
        sock.close()
    finally:
        assert srv.stop() == 0


# ---- item 13: control characters in topics and options ----

CONTROL_TOPICS = [
    "notes/*\r\nevent:PB_CONNECT\r\ndata:{\"clientId\":\"forged\"}",
    "notes/*\nevent:forged",
    "notes/*\revent:forged",
    "notes/*\x00junk",
    "notes/*\x1f",
    "notes/*\x7f",
    "notes/*\t",
    "notes\r\n/*",
]


def opts(o):
    return "notes/*?options=" + urllib.parse.quote(json.dumps(o))


CONTROL_OPTIONS = [
    opts({"query": {"filter": "text = 'a\u0000b'"}}),
    opts({"query": {"filter": "text = 'a\u001bb'"}}),
    opts({"query": {"expand": "x\r\ny"}}),
    opts({"query": {"fields": "text\n"}}),
    opts({"query": {"custom": "a\r\nb"}}),
    opts({"query": {"a\nb": "x"}}),
    opts({"headers": {"x-forwarded-for": "1.2.3.4\r\nx-evil: 1"}}),
    opts({"headers": {"x\r\nevil": "1"}}),
    opts({"headers": {"x-token": "a\u0000b"}}),
    "notes/*?options=" + urllib.parse.quote("{\"query\":{\"filter\":\"a\u0085b\"}}").replace("%C2%85", "%85"),
]


@pytest.mark.parametrize("topic", CONTROL_TOPICS + CONTROL_OPTIONS)
def test_sse_refuses_control_characters(shared_server, shared_admin, topic):
    if shared_admin.get("/api/collections/notes").status_code == 404:
        r = shared_admin.post("/api/collections", json={
            "name": "notes", "type": "base", "fields": [{"name": "text", "type": "text"}],
            "listRule": "", "viewRule": ""})
        assert r.status_code == 200, r.text
    s = SSE(shared_server.url)
    r = Client(shared_server.url).post("/api/realtime", json={"clientId": s.client_id, "subscriptions": [topic]})
    body = assert_error(r, 400)
    assert "control character" in body["message"] or "UTF-8" in body["message"] or "JSON" in body["message"], body
    create(shared_admin, "notes", "x")
    evs = s.collect(quiet=0.5)
    assert evs == [], evs  # nothing subscribed, nothing forged
    s.close()


@pytest.mark.parametrize("topic", CONTROL_TOPICS + CONTROL_OPTIONS)
def test_ws_refuses_control_characters(shared_server, shared_admin, topic):
    w = WS(shared_server.url)
    m = w.request({"type": "subscribe", "topics": [topic], "requestId": "r1"})
    assert m["type"] == "error" and m["code"] == 400, m
    # A NUL does not even get through the JSON reader (which refuses \u0000).
    assert m.get("requestId") == "r1" or "\x00" in topic, m
    if "\x00" not in topic:
        assert "control character" in m["message"] or "JSON" in m["message"], m
    assert w.request({"type": "ping"}) == {"type": "pong"}
    w.close()


def test_sse_crlf_topic_does_not_forge_events_and_plain_whitespace_in_filters_is_fine(shared_server, shared_admin):
    """The filter language treats tab and newline as white space: an options filter
    written over several lines (URL-encoded, as the SDK sends it) still works."""
    if shared_admin.get("/api/collections/notes").status_code == 404:
        shared_admin.post("/api/collections", json={
            "name": "notes", "type": "base", "fields": [{"name": "text", "type": "text"}],
            "listRule": "", "viewRule": ""})
    s = SSE(shared_server.url)
    topic = opts({"query": {"filter": "text = 'ml'\n\t&& id != ''"}})
    r = Client(shared_server.url).post("/api/realtime", json={"clientId": s.client_id, "subscriptions": [topic]})
    assert r.status_code == 204, r.text
    create(shared_admin, "notes", "ml")
    evs = s.collect(quiet=0.7)
    assert [e["event"] for e in evs] == [topic]
    assert "\n" not in evs[0]["event"] and "\r" not in evs[0]["event"]
    s.close()


# ---- item 15 (WebSocket part): the close handshake ----

def close_with(w, payload):
    w.send_frame(8, payload)
    w.collect(quiet=2)
    return w.close_code


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_ws_close_with_a_reserved_or_invalid_code_is_a_protocol_error(shared_server, code):
    w = WS(shared_server.url)
    assert close_with(w, struct.pack(">H", code)) == 1002
    w.close()


def test_ws_close_with_one_byte_is_a_protocol_error(shared_server):
    w = WS(shared_server.url)
    assert close_with(w, b"\x03") == 1002
    w.close()


@pytest.mark.parametrize("reason", [b"\xff", b"\xc3", b"ok\xed\xa0\x80", b"\xc0\xaf"])
def test_ws_close_reason_must_be_utf8(shared_server, reason):
    w = WS(shared_server.url)
    assert close_with(w, struct.pack(">H", 1000) + reason) == 1007
    w.close()


@pytest.mark.parametrize("payload,echo", [(b"", 1000), (struct.pack(">H", 1000) + b"bye", 1000),
                                          (struct.pack(">H", 1001), 1001), (struct.pack(">H", 3000), 3000),
                                          (struct.pack(">H", 4999) + "é".encode(), 4999)])
def test_ws_valid_close_is_answered(shared_server, payload, echo):
    w = WS(shared_server.url)
    assert close_with(w, payload) == echo
    w.close()
