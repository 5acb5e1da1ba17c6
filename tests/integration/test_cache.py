"""The in-process cache: writes are seen by the next read on every thread, the byte
budget holds, changes made by another process invalidate it."""
import json
import subprocess
import threading
import time

import requests

from conftest import (ADMIN_EMAIL, ADMIN_PASSWORD, BIN, Client, Server, assert_error, db_args, direct_url,
                      instance_urls, make_superuser, metrics_text)
from rtclient import SSE


def metric(c, name):
    """A series of the server c talks to; in cluster mode a counter is the sum of
    every instance's (each caches and counts its own), a gauge the largest."""
    for line in metrics_text(c.url).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_write_visible_to_next_read_everywhere(server, admin):
    admin.post("/api/collections", json={"name": "hot", "viewRule": "", "updateRule": "",
                                         "fields": [{"name": "n", "type": "number"}]})
    rec = admin.post("/api/collections/hot/records", json={"n": 0}).json()
    url = f"{server.url}/api/collections/hot/records/{rec['id']}"
    for i in range(1, 40):
        # Warm the cache on both workers (new connections land on either).
        for _ in range(4):
            assert requests.get(url).json()["n"] == i - 1
        r = requests.patch(url, json={"n": i})
        assert r.status_code == 200
        # Acknowledged: every following read, on any connection, sees it.
        seen = [requests.get(url).json()["n"] for _ in range(6)]
        assert seen == [i] * 6, (i, seen)
    c = Client(server.url)
    assert metric(c, "basalt_cache_hits_total") > 0


def test_concurrent_readers_never_go_back(server, admin):
    admin.post("/api/collections", json={"name": "mono", "viewRule": "", "updateRule": "",
                                         "fields": [{"name": "n", "type": "number"}]})
    rec = admin.post("/api/collections/mono/records", json={"n": 0}).json()
    url = f"{server.url}/api/collections/mono/records/{rec['id']}"
    acked = [0]
    stop = threading.Event()
    errors = []

    def reader():
        s = requests.Session()
        while not stop.is_set():
            floor = acked[0]  # acknowledged before this read started
            n = s.get(url).json()["n"]
            if n < floor:
                errors.append((floor, n))

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    w = requests.Session()
    for i in range(1, 150):
        assert w.patch(url, json={"n": i}).status_code == 200
        acked[0] = i
    stop.set()
    for t in threads:
        t.join()
    assert errors == []


def test_budget_and_eviction(tmpdir_path):
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path, ["--cache-budget-mb=1"]).start()
    try:
        a = Client(srv.url)
        a.token = a.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        a.post("/api/collections", json={"name": "big", "viewRule": "", "createRule": "",
                                         "fields": [{"name": "t", "type": "text", "max": 5000}]})
        ids = []
        for _ in range(3):  # about 1.3 MB of views for a 1 MiB budget
            r = a.post("/api/batch", json={"requests": [
                {"method": "POST", "url": "/api/collections/big/records", "body": {"t": "x" * 4000}}] * 100})
            ids += [x["body"]["id"] for x in r.json()]
        # The budget is each instance's own: the reads and the gauges are instance A's.
        s = requests.Session()
        for i in ids:
            assert s.get(f"{direct_url(srv.url)}/api/collections/big/records/{i}").status_code == 200
        c = Client(direct_url(srv.url))
        assert metric(c, "basalt_cache_bytes") <= 1 << 20
        assert metric(c, "basalt_cache_evictions_total") > 0
        assert metric(c, "basalt_cache_entries") > 0
    finally:
        assert srv.stop() == 0


def test_change_by_another_process(server, admin):
    """`basalt superuser update` while serving: the old tokens stop working within
    the writer's one-second check, not after the cache TTL."""
    tok = Client(server.url).login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    old = Client(server.url, tok)
    assert old.get("/api/collections").status_code == 200  # the record is cached now
    out = subprocess.run([BIN, "superuser", "update", ADMIN_EMAIL, "another-password-9", f"--dir={server.dir}",
                          *db_args(server.dir)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    deadline = time.time() + 5
    status = 200
    while time.time() < deadline and status == 200:
        time.sleep(0.2)
        status = old.get("/api/collections").status_code
    assert status == 401
    assert Client(server.url).login("_superusers", ADMIN_EMAIL, "another-password-9")


def test_list_pages_follow_writes(server, admin):
    admin.post("/api/collections", json={"name": "feed", "listRule": "", "createRule": "", "deleteRule": "",
                                         "fields": [{"name": "n", "type": "number"},
                                                    {"name": "created", "type": "autodate", "onCreate": True}]})
    url = f"{server.url}/api/collections/feed/records"
    s = requests.Session()
    for i in range(25):
        before = s.get(url, params={"sort": "-n", "perPage": 5}).json()
        # A hit: on one instance the next read; in cluster mode (each instance caches
        # its own, requests alternate) one more read per instance.
        for _ in instance_urls(server.url):
            s.get(url, params={"sort": "-n", "perPage": 5})
        created = s.post(url, json={"n": i}).json()
        after = s.get(url, params={"sort": "-n", "perPage": 5}).json()
        assert after["totalItems"] == before["totalItems"] + 1
        assert after["items"][0]["id"] == created["id"]
    # A relation path or a time macro in the filter is never served from the cache,
    # and still answers right.
    r = s.get(url, params={"filter": "created <= @now || n >= 0"})
    assert r.status_code in (200, 400)
    assert r.status_code == 200 and r.json()["totalItems"] == 25
    assert metric(Client(server.url), "basalt_cache_hits_total") >= 25


def test_rules_through_relations_follow_related_writes(server, admin):
    """A rule through relations (two hops, and a field whose name ends in a digit)
    reads other collections: such views and lists are not served from the cache,
    so a change two hops away shows at once."""
    locks = admin.post("/api/collections", json={"name": "locks", "fields": [{"name": "open", "type": "bool"}]}).json()
    gates = admin.post("/api/collections", json={
        "name": "gates", "fields": [{"name": "lock3", "type": "relation", "collectionId": locks["id"]}]}).json()
    admin.post("/api/collections", json={
        "name": "rooms", "viewRule": "gate2.lock3.open = true", "listRule": "gate2.lock3.open = true",
        "fields": [{"name": "gate2", "type": "relation", "collectionId": gates["id"]}]})
    lk = admin.post("/api/collections/locks/records", json={"open": True}).json()
    g = admin.post("/api/collections/gates/records", json={"lock3": lk["id"]}).json()
    room = admin.post("/api/collections/rooms/records", json={"gate2": g["id"]}).json()
    c = Client(server.url)
    url = f"/api/collections/rooms/records/{room['id']}"
    assert c.get(url).status_code == 200
    assert c.get(url).status_code == 200
    assert len(c.get("/api/collections/rooms/records").json()["items"]) == 1
    admin.patch(f"/api/collections/locks/records/{lk['id']}", json={"open": False})
    assert c.get(url).status_code == 404
    assert c.get("/api/collections/rooms/records").json()["items"] == []


def test_a_client_that_reloads_on_an_event_sees_the_change(server, admin):
    """A page that reloads its list when an event says the collection changed (the
    task manager's, the dashboard's) must get the list with the change: the event's
    collection loses its cached answers before the event goes out, not a moment
    after, on the writer thread that may be preempted in between (seen as a browser
    test's second window that missed a task, on a loaded machine). In cluster mode the
    event and the read may come from the instance that did not write."""
    admin.post("/api/collections", json={"name": "reload_on_event", "listRule": "", "viewRule": "", "createRule": "",
                                         "fields": [{"name": "n", "type": "number"}]})
    sse = SSE(server.url)
    try:
        assert Client(server.url).post("/api/realtime", json={"clientId": sse.client_id,
                                                              "subscriptions": ["reload_on_event/*"]}).status_code == 204
        reader = requests.Session()
        list_url = f"{server.url}/api/collections/reload_on_event/records?perPage=500&skipTotal=1"
        writer = requests.Session()
        for i in range(60):
            for _ in range(3):  # cached on the workers the reloads may reach
                reader.get(list_url)
            rid = writer.post(f"{server.url}/api/collections/reload_on_event/records", json={"n": i}).json()["id"]
            ev = sse.next(timeout=10)
            assert ev is not None, f"no event for record {i}"
            assert json.loads(ev["data"])["record"]["id"] == rid
            ids = [x["id"] for x in reader.get(list_url).json()["items"]]
            assert rid in ids, f"the list read on hearing of record {i} did not have it"
    finally:
        sse.close()
