"""The request log: GET /api/logs (filter, sort, paging as PocketBase), /api/logs/{id},
/api/logs/stats (counts per hour), superusers only, written in batches off the request
path and kept within --logs-max-rows; --logs-max-days=0 turns it off."""
import time

import pytest
import requests

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, PEER_IP, TOPOLOGY, Client, Server, assert_error, make_superuser


def wait_logs(admin, flt, n, timeout=10):
    deadline = time.time() + timeout
    while True:
        r = admin.get("/api/logs", params={"filter": flt, "perPage": 500})
        assert r.status_code == 200, r.text
        if r.json()["totalItems"] >= n or time.time() > deadline:
            return r.json()
        time.sleep(0.2)


def test_requests_are_logged_with_pocketbase_shape(admin):
    admin.get("/api/collections/nope/records", headers={"User-Agent": "logtest/1", "Referer": "http://x/y"})
    requests.get(admin.url + "/api/health")  # probes are not logged
    body = wait_logs(admin, 'data.url = "/api/collections/nope/records"', 1)
    assert body["totalItems"] == 1 and body["page"] == 1 and body["perPage"] == 500
    item = body["items"][0]
    assert set(item) == {"id", "created", "updated", "level", "message", "data"}
    d = item["data"]
    assert d["type"] == "request" and d["method"] == "GET" and d["status"] == 404
    assert d["url"] == "/api/collections/nope/records"
    assert d["userAgent"] == "logtest/1" and d["referer"] == "http://x/y"
    assert d["auth"] == "_superusers" and d["remoteIP"] == PEER_IP and d["userIP"] == "127.0.0.1"
    assert isinstance(d["execTime"], float)
    assert item["level"] == 4 and item["message"] == "GET /api/collections/nope/records"
    one = admin.get(f"/api/logs/{item['id']}")
    assert one.status_code == 200 and one.json() == item
    assert_error(admin.get("/api/logs/doesnotexist"), 404)
    assert wait_logs(admin, 'data.url = "/api/health"', 1, timeout=1.5)["totalItems"] == 0


def test_filter_sort_page_and_errors(admin):
    for i in range(5):
        admin.get(f"/api/collections/missing{i}/records")
    wait_logs(admin, 'url ~ "/api/collections/missing"', 5)
    r = admin.get("/api/logs", params={"filter": 'data.status >= 400 && data.url ~ "missing"',
                                       "sort": "data.url", "perPage": 2, "page": 2})
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["totalItems"] == 5 and b["totalPages"] == 3 and b["page"] == 2
    assert [i["data"]["url"] for i in b["items"]] == ["/api/collections/missing2/records",
                                                      "/api/collections/missing3/records"]
    r = admin.get("/api/logs", params={"filter": 'url ~ "missing"', "sort": "-url", "skipTotal": "1"})
    assert r.json()["items"][0]["data"]["url"] == "/api/collections/missing4/records"
    # Default order: newest first.
    items = admin.get("/api/logs", params={"perPage": 50}).json()["items"]
    assert [i["created"] for i in items] == sorted([i["created"] for i in items], reverse=True)
    # A string literal that reads like data.* is left alone.
    assert admin.get("/api/logs", params={"filter": 'url = "data.x"'}).json()["totalItems"] == 0
    assert_error(admin.get("/api/logs", params={"filter": "nope = 1"}), 400)
    assert_error(admin.get("/api/logs", params={"filter": "status >="}), 400)
    assert_error(admin.get("/api/logs", params={"sort": "password"}), 400)
    assert_error(admin.get("/api/logs", params={"sort": "status;DROP TABLE _logs"}), 400)
    assert_error(admin.get("/api/logs", params={"perPage": "x"}), 400)


def test_stats_counts_per_hour(admin):
    for _ in range(3):
        admin.get("/api/collections/statsprobe/records")
    wait_logs(admin, 'url = "/api/collections/statsprobe/records"', 3)
    r = admin.get("/api/logs/stats", params={"filter": 'url = "/api/collections/statsprobe/records"'})
    assert r.status_code == 200, r.text
    stats = r.json()
    assert len(stats) == 1 and stats[0]["total"] == 3
    hour = time.strftime("%Y-%m-%d %H", time.gmtime())
    assert stats[0]["date"].endswith(":00:00.000Z") and stats[0]["date"][:10] == hour[:10]
    all_stats = admin.get("/api/logs/stats").json()
    assert sum(s["total"] for s in all_stats) >= 3
    assert_error(admin.get("/api/logs/stats", params={"filter": "nope = 1"}), 400)


def test_superusers_only(admin):
    r = admin.post("/api/collections", json={"name": "people", "type": "auth", "fields": [],
                                             "createRule": ""})
    assert r.status_code == 200, r.text
    r = admin.post("/api/collections/people/records",
                   json={"email": "p@example.com", "password": "password-123", "passwordConfirm": "password-123"})
    assert r.status_code == 200, r.text
    user = Client(admin.url)
    user.token = user.login("people", "p@example.com", "password-123")
    for path in ["/api/logs", "/api/logs/stats", "/api/logs/x"]:
        assert_error(user.get(path), 403)
        assert_error(requests.get(admin.url + path), 401)


def test_bounded_by_rows_and_off_switch(tmpdir_path):
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path, ["--logs-max-rows=100"]).start()
    try:
        admin = Client(srv.url)
        admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        s = requests.Session()
        for i in range(300):
            s.get(srv.url + f"/api/collections/c{i}/records")
        time.sleep(2.5)
        s.get(srv.url + "/api/collections/last/records")
        total = wait_logs(admin, 'url = "/api/collections/last/records"', 1)
        total = admin.get("/api/logs").json()["totalItems"]
        if TOPOLOGY == "cluster":
            # Each instance trims the shared log after its own flushes, in their own
            # transactions: two flushes at once each keep their newest 100 of what they
            # saw, and the next trim (these requests are logged too) brings it back.
            deadline = time.time() + 20
            while total > 115 and time.time() < deadline:
                time.sleep(0.2)
                total = admin.get("/api/logs").json()["totalItems"]
        assert 0 < total <= 115, total
        # The newest are kept.
        assert admin.get("/api/logs", params={"filter": 'url = "/api/collections/c299/records"'}).json()["totalItems"] == 1
    finally:
        assert srv.stop() == 0
    srv = Server(tmpdir_path, ["--logs-max-days=0"]).start()
    try:
        admin = Client(srv.url)
        admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        admin.get("/api/collections/offprobe/records")
        time.sleep(1.5)
        assert admin.get("/api/logs", params={"filter": 'url ~ "offprobe"'}).json()["totalItems"] == 0
    finally:
        assert srv.stop() == 0


def test_entries_flushed_at_stop(tmpdir_path):
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path).start()
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    admin.get("/api/collections/atstop/records")
    assert srv.stop() == 0  # at once: the drain hands the ring to the writer
    srv = Server(tmpdir_path).start()
    try:
        admin = Client(srv.url)
        admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        assert admin.get("/api/logs", params={"filter": 'url ~ "atstop"'}).json()["totalItems"] == 1
    finally:
        assert srv.stop() == 0


def store_jobs(url):
    """Writer jobs of every kind: the log's flushes count as the server's own upkeep
    (basalt_store_background_jobs_total), the requests' writes apart."""
    text = requests.get(url + "/metrics").text
    return sum(int(float(l.split()[-1])) for l in text.splitlines()
               if l.startswith("basalt_store_jobs_total") or l.startswith("basalt_store_background_jobs_total"))


def test_written_in_batches_not_per_request(admin):
    """Reads write nothing but the log: 200 of them reach the writer as a few jobs."""
    before = store_jobs(admin.url)
    s = requests.Session()
    for i in range(200):
        s.get(admin.url + f"/api/collections/batch{i % 5}/records")
    body = wait_logs(admin, 'url ~ "/api/collections/batch"', 200)
    assert body["totalItems"] == 200
    jobs = store_jobs(admin.url) - before
    assert 1 <= jobs <= 50, jobs
    assert "basalt_request_log_dropped_total 0" in requests.get(admin.url + "/metrics").text
