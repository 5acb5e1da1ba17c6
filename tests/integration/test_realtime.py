"""Realtime over real sockets: SSE as the PocketBase SDK speaks it, Basalt's
WebSocket protocol, rules per subscriber, resume, limits, slow readers, drain."""
import json
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
    """users (auth), posts owned by users with owner-only rules, notes public."""
    r = define_collection(admin, {
        "name": "users", "type": "auth", "fields": [{"name": "name", "type": "text"}],
        "listRule": "id = @request.auth.id", "viewRule": "id = @request.auth.id", "createRule": ""})
    assert r.status_code == 200, r.text
    r = admin.post("/api/collections", json={
        "name": "posts", "type": "base",
        "fields": [{"name": "title", "type": "text"},
                   {"name": "secret", "type": "text", "hidden": True},
                   {"name": "owner", "type": "relation", "collectionId": "users", "maxSelect": 1}],
        "listRule": "owner = @request.auth.id", "viewRule": "owner = @request.auth.id",
        "createRule": "", "updateRule": "owner = @request.auth.id", "deleteRule": "owner = @request.auth.id"})
    assert r.status_code == 200, r.text
    r = admin.post("/api/collections", json={
        "name": "notes", "type": "base", "fields": [{"name": "text", "type": "text"}],
        "listRule": "", "viewRule": ""})
    assert r.status_code == 200, r.text
    users = {}
    for name in ("alice", "bob"):
        r = admin.post("/api/collections/users/records", json={
            "email": f"{name}@example.com", "password": "password-123", "passwordConfirm": "password-123",
            "name": name})
        assert r.status_code == 200, r.text
        c = Client(admin.url)
        c.token = c.login("users", f"{name}@example.com", "password-123")
        users[name] = (r.json()["id"], c)
    return users


def subscribe(sse, client_or_url, topics, token=""):
    c = client_or_url if isinstance(client_or_url, Client) else Client(client_or_url)
    return c.post("/api/realtime", json={"clientId": sse.client_id, "subscriptions": topics},
                  token=token if token else None)


def records_of(events):
    return [(e["event"], json.loads(e["data"])["action"], json.loads(e["data"])["record"]) for e in events]


@pytest.fixture
def world(tmpdir_path):
    srv, admin = start(tmpdir_path)
    users = setup_world(admin)
    yield srv, admin, users
    rc = srv.stop()
    assert rc == 0, f"basalt exited with {rc}; see {tmpdir_path}/server.log"


def test_sse_create_update_delete_and_hidden_fields(world):
    srv, admin, users = world
    s = SSE(srv.url)
    assert s.status == 200
    r = admin.post("/api/realtime", json={"clientId": s.client_id, "subscriptions": ["notes/*"]}, token="")
    assert r.status_code == 204, r.text
    r = admin.post("/api/collections/notes/records", json={"text": "one"})
    nid = r.json()["id"]
    admin.patch(f"/api/collections/notes/records/{nid}", json={"text": "two"})
    admin.delete(f"/api/collections/notes/records/{nid}")
    evs = s.collect()
    assert [(e, a, rec["text"]) for e, a, rec in records_of(evs)] == [
        ("notes/*", "create", "one"), ("notes/*", "update", "two"), ("notes/*", "delete", "two")]
    ids = [int(e["id"]) for e in evs]
    assert ids == sorted(ids) and len(set(ids)) == 3
    rec = records_of(evs)[0][2]
    assert rec["collectionName"] == "notes" and rec["id"] == nid
    s.close()


def test_rules_decide_delivery_per_user(world):
    srv, admin, users = world
    alice_id, alice = users["alice"]
    bob_id, bob = users["bob"]
    sa, sb, sanon, sadmin = SSE(srv.url), SSE(srv.url), SSE(srv.url), SSE(srv.url)
    assert subscribe(sa, alice, ["posts/*"]).status_code == 204
    assert subscribe(sb, bob, ["posts/*"]).status_code == 204
    assert subscribe(sanon, srv.url, ["posts/*"]).status_code == 204
    assert subscribe(sadmin, admin, ["posts/*"]).status_code == 204
    ra = alice.post("/api/collections/posts/records", json={"title": "a1", "owner": alice_id, "secret": "s"})
    rb = bob.post("/api/collections/posts/records", json={"title": "b1", "owner": bob_id, "secret": "s"})
    assert ra.status_code == 200 and rb.status_code == 200
    alice.delete(f"/api/collections/posts/records/{ra.json()['id']}")
    recs_a = records_of(sa.collect())
    got_a = [(a, r["title"]) for _, a, r in recs_a]
    got_b = [(a, r["title"]) for _, a, r in records_of(sb.collect())]
    got_admin = records_of(sadmin.collect())
    assert got_a == [("create", "a1"), ("delete", "a1")]
    assert got_b == [("create", "b1")]
    assert sanon.collect(quiet=0.3) == []
    assert [(a, r["title"]) for _, a, r in got_admin] == [("create", "a1"), ("create", "b1"), ("delete", "a1")]
    # Hidden fields: never to users, to superusers yes.
    assert recs_a and all("secret" not in r for _, _, r in recs_a)
    assert all(r.get("secret") == "s" for _, _, r in got_admin)


def test_rules_through_relations_are_checked_by_the_database(world):
    """A rule through a relation cannot be decided in memory: creates are checked
    against the row, deletes against the deleted record's fields."""
    srv, admin, users = world
    alice_id, alice = users["alice"]
    bob_id, bob = users["bob"]
    r = admin.patch("/api/collections/posts", json={"listRule": "owner.name = 'alice' && @request.auth.id != ''"})
    assert r.status_code == 200, r.text
    sa = SSE(srv.url)
    assert subscribe(sa, bob, ["posts/*"]).status_code == 204
    p1 = admin.post("/api/collections/posts/records", json={"title": "by-alice", "owner": alice_id}).json()
    admin.post("/api/collections/posts/records", json={"title": "by-bob", "owner": bob_id})
    admin.delete(f"/api/collections/posts/records/{p1['id']}")
    got = [(a, r["title"]) for _, a, r in records_of(sa.collect())]
    assert got == [("create", "by-alice"), ("delete", "by-alice")]


def test_record_topic_filter_and_fields_options(world):
    srv, admin, users = world
    n1 = admin.post("/api/collections/notes/records", json={"text": "first"}).json()["id"]
    opts = urllib.parse.quote(json.dumps({"query": {"filter": "text ~ 'keep'", "fields": "id,text"}}))
    filtered = f"notes/*?options={opts}"
    s = SSE(srv.url)
    assert subscribe(s, srv.url, [f"notes/{n1}", filtered]).status_code == 204
    admin.patch(f"/api/collections/notes/records/{n1}", json={"text": "first changed"})
    admin.post("/api/collections/notes/records", json={"text": "keep me"})
    admin.post("/api/collections/notes/records", json={"text": "drop me"})
    evs = s.collect()
    got = [(e["event"], json.loads(e["data"])["record"]) for e in evs]
    assert got[0][0] == f"notes/{n1}" and got[0][1]["text"] == "first changed"
    assert [(name, rec) for name, rec in got[1:]] == [(filtered, {"id": got[1][1]["id"], "text": "keep me"})]


def test_subscription_errors(tmpdir_path):
    srv, admin = start(tmpdir_path, "--realtime-max-subscriptions=2")
    try:
        users = setup_world(admin)
        s = SSE(srv.url)
        anon = Client(srv.url)
        assert_error(anon.post("/api/realtime", json={"subscriptions": ["notes/*"]}), 400, "clientId",
                     "validation_required")
        assert_error(anon.post("/api/realtime", json={"clientId": "00" + "x" * 38, "subscriptions": []}), 404)
        assert_error(anon.post("/api/realtime", json={"clientId": "nope", "subscriptions": []}), 404)
        body = assert_error(subscribe(s, srv.url, ["nosuch/*"]), 400)
        assert "unknown collection" in body["message"]
        assert_error(subscribe(s, srv.url, ["notes"]), 400)
        assert_error(subscribe(s, srv.url, ["notes/*", "posts/*", "users/*"]), 400)
        assert_error(subscribe(s, srv.url, ["notes/*?options=notjson"]), 400)
        hidden = urllib.parse.quote(json.dumps({"query": {"filter": "secret = 'x'"}}))
        body = assert_error(subscribe(s, srv.url, [f"posts/*?options={hidden}"]), 400)
        assert "hidden" in body["message"]
        assert_error(subscribe(s, srv.url, ["x" * 3000 + "/*"]), 400)
        # A client's identity is fixed by its first subscription request.
        assert subscribe(s, users["alice"][1], ["notes/*"]).status_code == 204
        assert_error(subscribe(s, users["bob"][1], ["notes/*"]), 403)
        # Nothing failed applied: still subscribed to notes.
        admin.post("/api/collections/notes/records", json={"text": "n"})
        assert [a for _, a, _ in records_of(s.collect())] == ["create"]
    finally:
        assert srv.stop() == 0


def test_websocket_protocol(world):
    srv, admin, users = world
    alice_id, alice = users["alice"]
    w = WS(srv.url)
    assert w.status == 101 and len(w.client_id) == 40
    assert w.request({"type": "ping", "requestId": 7}) == {"type": "pong", "requestId": 7}
    m = w.request({"type": "subscribe", "topics": ["posts/*"]})
    assert m["type"] == "subscribed"
    alice.post("/api/collections/posts/records", json={"title": "hidden from anon", "owner": alice_id})
    assert w.collect(quiet=0.3) == []
    m = w.request({"type": "auth", "token": alice.token})
    assert m["type"] == "auth" and m["id"] == alice_id and m["collectionName"] == "users"
    # A new identity clears the subscriptions checked for the old one.
    assert w.request({"type": "subscribe", "topic": "posts/*"})["type"] == "subscribed"
    alice.post("/api/collections/posts/records", json={"title": "mine", "owner": alice_id})
    evs = w.collect()
    assert len(evs) == 1 and evs[0]["type"] == "event" and evs[0]["topic"] == "posts/*"
    assert evs[0]["data"]["action"] == "create" and evs[0]["data"]["record"]["title"] == "mine"
    assert evs[0]["id"].isdigit()
    assert w.request({"type": "unsubscribe", "topics": ["posts/*"]})["type"] == "unsubscribed"
    alice.post("/api/collections/posts/records", json={"title": "after", "owner": alice_id})
    assert w.collect(quiet=0.3) == []
    assert w.request({"type": "auth", "token": "garbage"})["code"] == 401
    assert w.request({"type": "bogus"})["code"] == 400
    w.send_frame(1, b"not json")
    assert w.recv()["code"] == 400
    assert w.request({"type": "subscribe", "topics": ["nosuch/*"]})["code"] == 400
    # Protocol ping from the client gets a pong with the same payload.
    w.send_frame(9, b"hi")
    op, payload = w.recv_frame()
    assert (op, payload) == (0xA, b"hi")
    # A binary message ends the connection with 1003 and a reason.
    w.send_frame(2, b"\x00\x01")
    assert w.recv() is None and w.close_code == 1003 and "binary" in w.close_reason
    w.close()
    # Unmasked client frames are a protocol error.
    w2 = WS(srv.url)
    w2.send_frame(1, b'{"type":"ping"}', mask=False)
    assert w2.recv() is None and w2.close_code == 1002
    w2.close()
    # A token in the handshake authenticates from the start; plain GET is refused.
    w3 = WS(srv.url, headers={"Authorization": alice.token})
    assert w3.request({"type": "subscribe", "topics": ["posts/*"]})["type"] == "subscribed"
    alice.post("/api/collections/posts/records", json={"title": "again", "owner": alice_id})
    assert [e["data"]["record"]["title"] for e in w3.collect()] == ["again"]
    w3.close()
    assert_error(Client(srv.url).get("/api/realtime/ws"), 400)


def test_websocket_fragmented_message_and_rate_limit(tmpdir_path):
    srv, admin = start(tmpdir_path, "--realtime-max-messages=5")
    try:
        w = WS(srv.url)
        msg = json.dumps({"type": "ping", "requestId": "frag"}).encode()
        w.send_frame(1, msg[:5], fin=False)
        w.send_frame(0, msg[5:], fin=True)
        assert w.recv() == {"type": "pong", "requestId": "frag"}
        replies = []
        try:
            for _ in range(30):
                w.send({"type": "ping"})
        except OSError:
            pass  # closed by the server part-way
        while True:
            m = w.recv(timeout=2)
            if m is None:
                break
            replies.append(m)
        assert sum(1 for m in replies if m.get("type") == "pong") <= 5
        assert any(m.get("code") == 429 for m in replies)
        assert w.close_code == 1008 and "rate" in w.close_reason
        w.close()
        assert "basalt_realtime_refused_total{limit=\"message_rate\"}" in admin.get("/metrics").text
    finally:
        assert srv.stop() == 0


def test_resume_delivers_exactly_the_missed_events(world):
    srv, admin, users = world
    w = WS(srv.url)
    w.request({"type": "subscribe", "topics": ["notes/*"]})
    admin.post("/api/collections/notes/records", json={"text": "seen"})
    last = w.collect()[-1]["id"]
    w.close()
    for i in range(3):
        admin.post("/api/collections/notes/records", json={"text": f"missed {i}"})
    admin.post("/api/collections/posts/records", json={"title": "other collection"})
    w = WS(srv.url)
    w.request({"type": "subscribe", "topics": ["notes/*"]})
    w.send({"type": "resume", "lastEventId": last})
    msgs = w.collect()
    evs = [m for m in msgs if m["type"] == "event"]
    assert [e["data"]["record"]["text"] for e in evs] == ["missed 0", "missed 1", "missed 2"]
    assert msgs[-1]["type"] == "resumed"
    # Live events continue after the replay, without duplicates.
    admin.post("/api/collections/notes/records", json={"text": "live"})
    assert [m["data"]["record"]["text"] for m in w.collect()] == ["live"]
    w.close()
    # SSE: Last-Event-ID on reconnect, replayed once subscriptions are set.
    s = SSE(srv.url)
    subscribe(s, srv.url, ["notes/*"])
    admin.post("/api/collections/notes/records", json={"text": "sse seen"})
    last = s.collect()[-1]["id"]
    s.close()
    admin.post("/api/collections/notes/records", json={"text": "sse missed"})
    s = SSE(srv.url, headers={"Last-Event-ID": last})
    subscribe(s, srv.url, ["notes/*"])
    assert [r["text"] for _, _, r in records_of(s.collect())] == ["sse missed"]
    s.close()


def test_resume_beyond_the_log_is_told_to_resync(tmpdir_path):
    srv, admin = start(tmpdir_path, "--realtime-resume-max-events=3")
    try:
        setup_world(admin)
        w = WS(srv.url)
        w.request({"type": "subscribe", "topics": ["notes/*"]})
        admin.post("/api/collections/notes/records", json={"text": "seen"})
        last = w.collect()[-1]["id"]
        for i in range(5):
            admin.post("/api/collections/notes/records", json={"text": f"missed {i}"})
        w2 = WS(srv.url)
        w2.request({"type": "subscribe", "topics": ["notes/*"]})
        m = w2.request({"type": "resume", "lastEventId": last})
        assert m["type"] == "resync"
        assert w2.request({"type": "resume", "lastEventId": "12"})["type"] == "resync"
        w.close()
        w2.close()
    finally:
        assert srv.stop() == 0


def test_slow_reader_is_closed_and_others_get_everything(tmpdir_path):
    # The slow reader reads its close frame only after the 2,500 writes; a peer that
    # has not read it within a ping interval is cut without it (by design), and under
    # ASan on a loaded machine the writes outlast the default 25 s: a longer interval.
    srv, admin = start(tmpdir_path, "--realtime-queue-kib=64", "--realtime-ping-interval-s=300")
    try:
        setup_world(admin)
        # One instance's own queue and socket (in cluster mode HAProxy's buffers would
        # stand between): both readers on instance A; the writes go anywhere.
        slow = WS(direct_url(srv.url))
        slow.request({"type": "subscribe", "topics": ["notes/*"]})
        fast = WS(direct_url(srv.url))
        fast.request({"type": "subscribe", "topics": ["notes/*"]})
        # The slow reader stops reading: its socket buffers fill, then its queue.
        big = "x" * 4000
        received = []
        n = 0
        # Bursts of 10 events (40 KB) fit the 64 KiB queue of a reader that keeps up.
        for batch in range(250):
            reqs = [{"method": "POST", "url": "/api/collections/notes/records", "body": {"text": big}}
                    for _ in range(10)]
            r = admin.post("/api/batch", json={"requests": reqs})
            assert r.status_code == 200, r.text
            n += 10
            # The fast reader keeps up: it reads this burst's events before the next
            # burst (until it has them all, rather than until 50 ms of quiet each time).
            deadline = time.time() + 30
            while len(received) < n and time.time() < deadline:
                m = fast.recv(timeout=max(0.01, deadline - time.time()))
                if m is None:
                    break
                if m["type"] == "event":
                    received.append(m)
        # Nothing more than the n events comes (none twice).
        received += [m for m in fast.collect(quiet=1) if m["type"] == "event"]
        assert len(received) == n
        metrics = Client(direct_url(srv.url), admin.token).get("/metrics").text
        line = [l for l in metrics.splitlines() if 'reason="slow_consumer"' in l][0]
        assert int(float(line.split()[-1])) >= 1
        # The slow one was told why, after what it had queued.
        while slow.recv(timeout=2) is not None:
            pass
        assert slow.close_code == 1008 and "slow consumer" in slow.close_reason
        slow.close()
        fast.close()
    finally:
        assert srv.stop() == 0


def test_connection_limit_and_idle_timeout(tmpdir_path):
    srv, admin = start(tmpdir_path, "--realtime-max-connections=1", "--realtime-idle-timeout-s=1")
    try:
        # The limit is each instance's own: the connections go to instance A itself.
        url = direct_url(srv.url)
        w = WS(url)
        w2 = WS(url, connect=False)
        assert w2.status == 503
        assert "realtime-max-connections" in w2.buf.decode() + w2.sock.recv(1000).decode()
        w2.close()
        s = SSE(url, read=False)
        assert b"503" in s.sock.recv(200)
        s.close()
        # Nothing said for a second: closed as idle.
        assert w.recv(timeout=4) is None
        assert w.close_code == 1001 and w.close_reason == "idle timeout"
        w.close()
    finally:
        assert srv.stop() == 0


def test_drain_sends_reconnect_hints(tmpdir_path):
    srv, admin = start(tmpdir_path)
    # The instance that drains (srv.proc: A in cluster mode) is the one they talk to.
    w = WS(direct_url(srv.url))
    s = SSE(direct_url(srv.url))
    srv.proc.send_signal(15)
    assert w.recv(timeout=5) is None and w.close_code == 1012
    ev = s.next(timeout=5)
    assert ev["event"] == "PB_RECONNECT" and ev["retry"] == "2000"
    assert srv.proc.wait(timeout=15) == 0
    srv.log.close()


def test_fan_out_across_worker_threads(world):
    srv, admin, users = world
    clients = [SSE(srv.url) for _ in range(8)] + [WS(srv.url) for _ in range(8)]
    for c in clients:
        if isinstance(c, SSE):
            assert subscribe(c, srv.url, ["notes/*"]).status_code == 204
        else:
            c.request({"type": "subscribe", "topics": ["notes/*"]})
    workers = {c.client_id[:2] for c in clients}
    assert len(workers) == 2, workers  # SO_REUSEPORT spread them over both threads
    for i in range(5):
        admin.post("/api/collections/notes/records", json={"text": str(i)})

    def texts(c, msgs):
        if isinstance(c, SSE):
            return [r["text"] for _, _, r in records_of(msgs)]
        return [m["data"]["record"]["text"] for m in msgs]

    # Each client's five events, waited for; then one quiet half second for all of them
    # at once, after which nothing more has come to any (a quiet half second per client,
    # one after the other, took 8 s).
    got = {}
    for c in clients:
        if isinstance(c, SSE):
            got[c] = texts(c, c.collect(quiet=0.01, until=5))
        else:
            msgs = []
            deadline = time.time() + 30
            while len(msgs) < 5 and time.time() < deadline:
                m = c.recv(timeout=max(0.01, deadline - time.time()))
                if m is None:
                    break
                msgs.append(m)
            got[c] = texts(c, msgs)
    time.sleep(0.5)
    for c in clients:
        got[c] += texts(c, c.collect(quiet=0.01))
        assert got[c] == ["0", "1", "2", "3", "4"]
        c.close()
