"""Webhooks: Standard Webhooks signatures checked by a receiver the test runs,
retries with the delivery log, secrets never shown, and server-side request
forgery refused unless the address is allowed."""
import base64
import hashlib
import hmac
import json
import os
import time

import pytest

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Client, Server, assert_error, make_superuser
from mailhelp import Receiver, wait_job

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def boot(d, *extra):
    make_superuser(d)
    srv = Server(d, ["--jobs-poll-ms=50", "--jobs-backoff-ms=100", *extra]).start()
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    assert admin.post("/api/collections", json={"name": "posts", "type": "base", "createRule": "",
                                                "fields": [{"name": "title", "type": "text"}]}).status_code == 200
    return srv, admin


def hook(admin, url, events=("create", "update", "delete"), secret=SECRET, **kw):
    r = admin.patch("/api/settings", json={"webhooks": [{"id": "hook1", "collection": "posts", "events": list(events),
                                                          "url": url, "secret": secret, **kw}]})
    return r


def verify(headers, body, secret=SECRET):
    key = base64.b64decode(secret[len("whsec_"):])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    want = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    sigs = [s.split(",", 1)[1] for s in headers["webhook-signature"].split(" ") if s.startswith("v1,")]
    return want in sigs


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def test_signed_deliveries_for_each_action(tmpdir_path, receiver):
    srv, admin = boot(tmpdir_path, "--webhook-allow-hosts=127.0.0.1")
    try:
        r = hook(admin, receiver.url)
        assert r.status_code == 200, r.text
        assert "secret" not in json.dumps(r.json()["webhooks"])
        assert "secret" not in json.dumps(admin.get("/api/settings").json()["webhooks"])
        c = Client(srv.url)
        rec = c.post("/api/collections/posts/records", json={"title": "hello"}).json()
        admin.patch(f"/api/collections/posts/records/{rec['id']}", json={"title": "changed"})
        admin.delete(f"/api/collections/posts/records/{rec['id']}")
        got = receiver.wait(3)
        actions = []
        for headers, body in got:
            assert verify(headers, body)
            assert headers["content-type"] == "application/json"
            assert headers["webhook-id"].startswith("msg_")
            assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
            # a tampered body does not verify
            assert not verify(headers, body + b" ")
            ev = json.loads(body)
            assert ev["data"]["collection"] == "posts" and ev["data"]["record"]["id"] == rec["id"]
            actions.append(ev["data"]["action"])
            assert ev["type"] == "record." + ev["data"]["action"]
        assert sorted(actions) == ["create", "delete", "update"]
        # the secret is kept when a later patch leaves it out
        r = admin.patch("/api/settings", json={"webhooks": [{"id": "hook1", "collection": "posts",
                                                              "events": ["create"], "url": receiver.url}]})
        assert r.status_code == 200, r.text
        c.post("/api/collections/posts/records", json={"title": "again"})
        headers, body = receiver.wait(4)[3]
        assert verify(headers, body)
        log = admin.get("/api/basalt/webhooks/deliveries?webhook=hook1").json()["items"]
        assert len(log) == 4 and all(d["status"] == 200 and d["error"] == "" for d in log)
    finally:
        assert srv.stop() == 0


def test_retries_and_delivery_log(tmpdir_path):
    rcv = Receiver(statuses=[500, 503])
    srv, admin = boot(tmpdir_path, "--webhook-allow-hosts=127.0.0.1")
    try:
        assert hook(admin, rcv.url, events=["create"]).status_code == 200
        Client(srv.url).post("/api/collections/posts/records", json={"title": "x"})
        got = rcv.wait(3)
        assert len({h["webhook-id"] for h, _ in got}) == 1  # the same message id on every attempt
        deadline = time.time() + 10
        while time.time() < deadline:
            log = admin.get("/api/basalt/webhooks/deliveries").json()["items"]
            if len(log) == 3:
                break
            time.sleep(0.05)
        assert sorted(d["status"] for d in log) == [200, 500, 503]
        assert sorted(d["attempt"] for d in log) == [1, 2, 3]
        assert_error(Client(srv.url).get("/api/basalt/webhooks/deliveries"), 401)
    finally:
        assert srv.stop() == 0
        rcv.stop()


def test_ssrf_refused_without_the_allow_setting(tmpdir_path, receiver):
    srv, admin = boot(tmpdir_path, "--jobs-max-attempts=2")
    try:
        urls = [receiver.url, f"http://localhost:{receiver.port}/x", f"http://[::1]:{receiver.port}/x",
                f"http://2130706433:{receiver.port}/x", f"http://0.0.0.0:{receiver.port}/x",
                f"http://169.254.169.254/latest/meta-data"]
        for i, url in enumerate(urls):
            assert hook(admin, url, events=["create"]).status_code == 200
            Client(srv.url).post("/api/collections/posts/records", json={"title": f"t{i}"})
        deadline = time.time() + 20
        while time.time() < deadline:
            dead = [j for j in admin.get("/api/basalt/jobs?state=dead").json()["items"] if j["name"] == "webhook.deliver"]
            if len(dead) == len(urls):
                break
            time.sleep(0.1)
        assert len(dead) == len(urls)
        for j in dead:
            assert j["attempts"] == 1  # refused at once, not retried
            assert "refused" in j["lastError"] or "resolve" in j["lastError"], j["lastError"]
        assert receiver.requests == []
        log = admin.get("/api/basalt/webhooks/deliveries").json()["items"]
        assert len(log) == len(urls) and all(d["status"] == 0 for d in log)
    finally:
        assert srv.stop() == 0


def test_webhook_settings_validation(tmpdir_path):
    srv, admin = boot(tmpdir_path)
    try:
        assert_error(hook(admin, "ftp://example.com/x"), 400)
        assert_error(hook(admin, "http://example.com/x", secret="plain"), 400)
        assert_error(hook(admin, "http://example.com/x", events=["touch"]), 400)
        r = admin.patch("/api/settings", json={"webhooks": [{"collection": "nope", "events": ["create"],
                                                              "url": "http://example.com", "secret": SECRET}]})
        assert_error(r, 400)
        assert_error(admin.patch("/api/settings", json={"webhooks": {"a": 1}}), 400)
        assert admin.get("/api/settings").json()["webhooks"] == []
    finally:
        assert srv.stop() == 0
