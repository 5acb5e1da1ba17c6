"""Shared realtime frames (ADR 0016): an event is serialised once per visibility class
and its wire frame built once per topic and transport, then queued by reference on
every subscriber's connection; a connection's deliveries of one loop turn go out in
one write. None of it may change what a subscriber receives: each still gets exactly
what its rule, filter and options admit, in order, once. On both backends (on
PostgreSQL the decisions run in read jobs, which now share payloads too)."""
import json
import threading
import urllib.parse

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Client, Server, direct_url, make_superuser
from rtclient import SSE, WS


def start(tmpdir_path, *args):
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path, list(args)).start()
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    return srv, admin


def topic(coll, **query):
    return coll + ("?options=" + urllib.parse.quote(json.dumps({"query": query})) if query else "")


def sse_events(s, until):
    return [(e["event"], e["id"], json.loads(e["data"])) for e in s.collect(until=until)]


def ws_events(w, until):
    got = []
    while len(got) < until:
        m = w.recv(timeout=10)
        if m is None:
            break
        if m.get("type") == "event":
            got.append((m["topic"], m["id"], m["data"]))
    got += [(m["topic"], m["id"], m["data"]) for m in w.collect(quiet=0.5) if m.get("type") == "event"]
    return got


def test_each_visibility_class_gets_its_own_view_of_one_event(tmpdir_path):
    srv, admin = start(tmpdir_path)
    try:
        r = admin.post("/api/collections", json={
            "name": "members", "type": "auth", "fields": [{"name": "nick", "type": "text"}],
            "listRule": "", "viewRule": "", "createRule": "", "updateRule": "id = @request.auth.id"})
        assert r.status_code == 200, r.text
        r = admin.post("/api/collections", json={
            "name": "items", "type": "base",
            "fields": [{"name": "title", "type": "text"}, {"name": "secret", "type": "text", "hidden": True},
                       {"name": "n", "type": "number"}],
            "listRule": "n > 0", "viewRule": "n > 0"})
        assert r.status_code == 200, r.text
        r = admin.post("/api/collections/members/records", json={
            "email": "m1@example.com", "password": "password-123", "passwordConfirm": "password-123",
            "nick": "one", "emailVisibility": False})
        assert r.status_code == 200, r.text
        m1_id = r.json()["id"]
        m1 = Client(srv.url)
        m1.token = m1.login("members", "m1@example.com", "password-123")
        url = direct_url(srv.url)  # one instance's worker loops, whatever the topology

        # Many plain anonymous subscribers (one shared frame per transport), superusers
        # (another class), one with `fields`, one whose filter refuses, one on the
        # record's own topic, over both transports.
        anon_sse = [SSE(url) for _ in range(4)]
        for s in anon_sse:
            assert Client(url).post("/api/realtime", json={"clientId": s.client_id,
                                                           "subscriptions": ["items/*"]}).status_code == 204
        anon_ws = [WS(url) for _ in range(4)]
        for w in anon_ws:
            assert w.request({"type": "subscribe", "topics": ["items/*"]})["type"] == "subscribed"
        su_sse = SSE(url)
        assert admin.post("/api/realtime", json={"clientId": su_sse.client_id,
                                                 "subscriptions": ["items/*"]}).status_code == 204
        su_ws = WS(url, headers={"Authorization": admin.token})
        assert su_ws.request({"type": "subscribe", "topics": ["items/*"]})["type"] == "subscribed"
        fields_ws = WS(url)
        assert fields_ws.request({"type": "subscribe", "topics": [topic("items/*", fields="id,title")]})[
            "type"] == "subscribed"
        refused_sse = SSE(url)
        assert Client(url).post("/api/realtime", json={
            "clientId": refused_sse.client_id,
            "subscriptions": [topic("items/*", filter="title = 'never'")]}).status_code == 204

        r = admin.post("/api/collections/items/records", json={"title": "hidden", "secret": "s0", "n": 0})
        assert r.status_code == 200, r.text  # refused by the rule: only superusers get it
        r = admin.post("/api/collections/items/records", json={"title": "t1", "secret": "s1", "n": 1})
        assert r.status_code == 200, r.text
        item_id = r.json()["id"]
        one_sse = SSE(url)
        assert Client(url).post("/api/realtime", json={"clientId": one_sse.client_id,
                                                       "subscriptions": [f"items/{item_id}"]}).status_code == 204
        r = admin.patch(f"/api/collections/items/records/{item_id}", json={"title": "t2"})
        assert r.status_code == 200, r.text

        plain_bytes = set()
        ids = set()
        for s in anon_sse:
            got = sse_events(s, 2)
            assert [(t, d["action"], d["record"]["title"]) for t, _, d in got] == [
                ("items/*", "create", "t1"), ("items/*", "update", "t2")]
            assert all("secret" not in d["record"] for _, _, d in got)
            plain_bytes.add(json.dumps([d for _, _, d in got], sort_keys=True))
            ids.add(tuple(i for _, i, _ in got))
        for w in anon_ws:
            got = ws_events(w, 2)
            assert [(t, d["action"], d["record"]["title"]) for t, _, d in got] == [
                ("items/*", "create", "t1"), ("items/*", "update", "t2")]
            plain_bytes.add(json.dumps([d for _, _, d in got], sort_keys=True))
            ids.add(tuple(i for _, i, _ in got))
        assert len(plain_bytes) == 1 and len(ids) == 1  # the same event, the same view
        for got in (sse_events(su_sse, 3), ws_events(su_ws, 3)):
            assert [(d["action"], d["record"]["title"], d["record"]["secret"]) for _, _, d in got] == [
                ("create", "hidden", "s0"), ("create", "t1", "s1"), ("update", "t2", "s1")]
        got = ws_events(fields_ws, 2)
        assert [sorted(d["record"]) for _, _, d in got] == [["id", "title"], ["id", "title"]]
        assert sse_events(refused_sse, 0) == []
        got = sse_events(one_sse, 1)
        assert [(t, d["record"]["title"]) for t, _, d in got] == [(f"items/{item_id}", "t2")]

        # Auth records: the owner sees its email, others do not, superusers do; all
        # three on the same event.
        own = SSE(url)
        assert m1.post("/api/realtime", json={"clientId": own.client_id,
                                              "subscriptions": ["members/*"]}).status_code == 204
        other = SSE(url)
        assert Client(url).post("/api/realtime", json={"clientId": other.client_id,
                                                       "subscriptions": ["members/*"]}).status_code == 204
        su2 = SSE(url)
        assert admin.post("/api/realtime", json={"clientId": su2.client_id,
                                                 "subscriptions": ["members/*"]}).status_code == 204
        r = m1.patch(f"/api/collections/members/records/{m1_id}", json={"nick": "uno"})
        assert r.status_code == 200, r.text
        (_, _, mine), = sse_events(own, 1)
        (_, _, theirs), = sse_events(other, 1)
        (_, _, sus), = sse_events(su2, 1)
        assert mine["record"]["email"] == "m1@example.com" and mine["record"]["nick"] == "uno"
        assert "email" not in theirs["record"] and theirs["record"]["nick"] == "uno"
        assert sus["record"]["email"] == "m1@example.com"
        for c in anon_sse + anon_ws + [su_sse, su_ws, fields_ws, refused_sse, one_sse, own, other, su2]:
            c.close()
    finally:
        assert srv.stop() == 0


def test_events_of_one_turn_arrive_in_order_once_each(tmpdir_path):
    """A batch commits many events at once (one hand-over to the workers, so each
    connection's frames of that turn go out together), and concurrent writers
    interleave theirs: every subscriber gets every admitted event once, in id order,
    and the same sequence as every other subscriber of its class."""
    srv, admin = start(tmpdir_path)
    try:
        r = admin.post("/api/collections", json={
            "name": "ticks", "type": "base", "fields": [{"name": "k", "type": "number"}],
            "listRule": "", "viewRule": ""})
        assert r.status_code == 200, r.text
        url = direct_url(srv.url)
        sses = [SSE(url) for _ in range(6)]
        for s in sses:
            assert Client(url).post("/api/realtime", json={"clientId": s.client_id,
                                                           "subscriptions": ["ticks/*"]}).status_code == 204
        wss = [WS(url) for _ in range(6)]
        for w in wss:
            assert w.request({"type": "subscribe", "topics": ["ticks/*"]})["type"] == "subscribed"
        odd = WS(url)  # a filter that admits half: exactness under sharing
        assert odd.request({"type": "subscribe", "topics": [topic("ticks/*", filter="k < 20 || k >= 300")]})[
            "type"] == "subscribed"
        r = admin.post("/api/batch", json={"requests": [
            {"method": "POST", "url": "/api/collections/ticks/records", "body": {"k": k}} for k in range(40)]})
        assert r.status_code == 200, r.text

        def writer(base):
            c = Client(srv.url, admin.token)
            for k in range(base, base + 20):
                assert c.post("/api/collections/ticks/records", json={"k": k}).status_code == 200

        threads = [threading.Thread(target=writer, args=(b,)) for b in (100, 200, 300)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = 40 + 60
        seqs = set()
        for s in sses:
            got = sse_events(s, total)
            seqs.add(tuple((int(i), d["record"]["k"]) for _, i, d in got))
        for w in wss:
            got = ws_events(w, total)
            seqs.add(tuple((int(i), d["record"]["k"]) for _, i, d in got))
        assert len(seqs) == 1, "subscribers of one class saw different sequences"
        (seq,) = seqs
        assert len(seq) == total
        ids = [i for i, _ in seq]
        assert ids == sorted(ids) and len(set(ids)) == total
        assert [k for _, k in seq[:40]] == list(range(40))  # the batch, in its order
        assert sorted(k for _, k in seq[40:]) == list(range(100, 120)) + list(range(200, 220)) + list(
            range(300, 320))
        want = [k for _, k in seq if k < 20 or k >= 300]
        got = ws_events(odd, len(want))
        assert [d["record"]["k"] for _, _, d in got] == want
        for c in sses + wss + [odd]:
            c.close()
    finally:
        assert srv.stop() == 0
