"""PocketBase's settings API: superusers only, persisted in the store, secrets
never returned, flags and BASALT_* variables as defaults, the test email."""
import os
import subprocess

import pytest

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, BIN, Client, Server, assert_error, free_port, make_superuser
from mailhelp import SmtpServer


def boot(d, *extra, env=None):
    srv = Server(d, list(extra))
    if env:
        old = dict(os.environ)
        os.environ.update(env)
        try:
            srv.start()
        finally:
            os.environ.clear()
            os.environ.update(old)
    else:
        srv.start()
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    return srv, admin


def test_get_patch_persist_and_mask(tmpdir_path):
    make_superuser(tmpdir_path)
    srv, admin = boot(tmpdir_path, "--app-name=FromFlag", "--smtp-password=flag-secret",
                      env={"BASALT_SMTP_HOST": "mail.example.com"})
    try:
        s = admin.get("/api/settings").json()
        assert s["meta"]["appName"] == "FromFlag"
        assert s["smtp"]["host"] == "mail.example.com"
        assert "password" not in s["smtp"] and "secret" not in s["s3"]
        assert_error(Client(srv.url).get("/api/settings"), 401)
        r = admin.patch("/api/settings", json={"meta": {"appName": "Stored", "senderAddress": "me@example.com"},
                                               "smtp": {"port": 2525, "password": "stored-secret"},
                                               "s3": {"bucket": "b", "secret": "s3-secret"},
                                               "logs": {"maxDays": 3}})
        assert r.status_code == 200, r.text
        s = r.json()
        assert s["meta"]["appName"] == "Stored" and s["smtp"]["port"] == 2525 and s["s3"]["bucket"] == "b"
        assert "stored-secret" not in r.text and "s3-secret" not in r.text and "flag-secret" not in r.text
        assert s["smtp"]["host"] == "mail.example.com"  # still the flag's (never set)
    finally:
        assert srv.stop() == 0
    srv, admin = boot(tmpdir_path, "--app-name=FromFlag")
    try:
        s = admin.get("/api/settings").json()
        assert s["meta"]["appName"] == "Stored" and s["smtp"]["port"] == 2525  # stored wins over the flag
        assert s["meta"]["senderAddress"] == "me@example.com"
    finally:
        assert srv.stop() == 0


def test_validation(tmpdir_path):
    make_superuser(tmpdir_path)
    srv, admin = boot(tmpdir_path)
    try:
        for bad in ({"smtp": {"port": "x"}}, {"smtp": {"port": 70000}}, {"smtp": {"authMethod": "CRAM"}},
                    {"meta": {"senderAddress": "not-an-address"}}, {"meta": {"senderName": "a\r\nBcc: x@y.z"}},
                    {"meta": {"appURL": "javascript:alert(1)"}}, {"smtp": {"enabled": True, "host": ""}},
                    {"smtp": "on"}, {"smtp": {"host": "bad host"}}):
            assert_error(admin.patch("/api/settings", json=bad), 400)
        assert_error(admin.patch("/api/settings", data="[]", headers={"content-type": "application/json"}), 400)
        assert admin.get("/api/settings").json()["smtp"]["port"] == 587
    finally:
        assert srv.stop() == 0


def test_test_email(tmpdir_path):
    smtp = SmtpServer()
    make_superuser(tmpdir_path)
    srv, admin = boot(tmpdir_path)
    try:
        r = admin.post("/api/settings/test/email", json={"email": "t@example.com", "template": "verification"})
        assert_error(r, 400)
        assert "not enabled" in r.json()["message"]
        assert admin.patch("/api/settings", json={"smtp": {"enabled": True, "host": "127.0.0.1", "port": smtp.port}},
                           ).status_code == 200
        r = admin.post("/api/settings/test/email", json={"email": "t@example.com", "template": "verification"})
        assert r.status_code == 204, r.text
        m = smtp.wait_for("t@example.com")
        assert "Verify" in m["Subject"]
        assert_error(admin.post("/api/settings/test/email", json={"email": "nope"}), 400, "email")
        assert_error(admin.post("/api/settings/test/email", json={"email": "t@example.com", "template": "x"}), 400)
        smtp.stop()
        r = admin.post("/api/settings/test/email", json={"email": "t@example.com"})
        assert_error(r, 400)
        assert "SMTP" in r.json()["message"]
        assert_error(Client(srv.url).post("/api/settings/test/email", json={"email": "t@example.com"}), 401)
    finally:
        assert srv.stop() == 0
        smtp.stop()
