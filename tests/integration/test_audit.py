"""The audit log: security events as JSON lines with actor, action, target, IP,
request id and time; no secret ever written."""
import json
import os

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Client, Server, assert_error, make_superuser


def read(srv):
    """Every instance's audit log (one file per instance, in its own folder)."""
    events = []
    for d in srv.instance_dirs:
        path = os.path.join(d, "audit.log")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                events += [json.loads(line) for line in f]
    return events


def test_audit_events(tmpdir_path):
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path, ["--rate-limit-anon=0", "--rate-limit-user=0", "--rate-limit-burst=0",
                               "--rate-limit-auth=2", "--rate-limit-period-ms=3600000"]).start()
    try:
        c = Client(srv.url)
        assert_error(c.post("/api/collections/_superusers/auth-with-password",
                            json={"identity": ADMIN_EMAIL, "password": "wrong-password"}), 400)
        admin = Client(srv.url, c.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD))
        admin.post("/api/collections", json={"name": "people", "type": "auth", "createRule": ""})
        u = c.post("/api/collections/people/records", json={
            "email": "p@example.com", "password": "password-123", "passwordConfirm": "password-123"}).json()
        admin.post(f"/api/collections/people/impersonate/{u['id']}", json={})
        admin.post("/api/collections/_superusers/auth-refresh")
        assert_error(c.post("/api/collections/people/auth-with-password",
                            json={"identity": "p@example.com", "password": "password-123"}), 429)
        events = read(srv)
        actions = [e["action"] for e in events]
        for a in ["login_failed", "login", "collection_create", "impersonate", "token_refresh", "rate_limited"]:
            assert a in actions, actions
        for e in events:
            assert {"time", "action", "actor", "target", "ip", "request_id", "detail"} <= e.keys()
            assert e["ip"] == "127.0.0.1" and e["request_id"]
        create = next(e for e in events if e["action"] == "collection_create")
        assert create["actor"].startswith("_superusers/")
        imp = next(e for e in events if e["action"] == "impersonate")
        assert imp["target"] == f"people/{u['id']}"
        for d in srv.instance_dirs:
            path = os.path.join(d, "audit.log")
            if os.path.exists(path):
                text = open(path).read()
                assert ADMIN_PASSWORD not in text and "password-123" not in text and "eyJ" not in text
                assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    finally:
        assert srv.stop() == 0
