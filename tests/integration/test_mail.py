"""PocketBase's mail flows end to end against an SMTP server the test starts: the
token or one-time password is read out of the mail received. No account
enumeration, the rate limits per address, and SMTP down or not configured."""
import base64
import json
import os
import time

import pytest

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Client, NO_LIMITS, Server, assert_error, define_collection, make_superuser
from mailhelp import SmtpServer, otp_from, token_from, wait_job, wait_metrics


@pytest.fixture
def smtp():
    s = SmtpServer()
    yield s
    s.stop()


def start(tmpdir_path, *args):
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path, NO_LIMITS + list(args) + ["--jobs-backoff-ms=100", "--jobs-poll-ms=50",
                                            "--mail-rate-limit=0", "--mail-rate-limit-ip=0"]).start()
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    r = define_collection(admin, {"name": "users", "type": "auth", "createRule": "",
                                             "viewRule": "id = @request.auth.id", "updateRule": "id = @request.auth.id"})
    assert r.status_code == 200, r.text
    return srv, admin


def signup(c, email, password="password-123"):
    r = c.post("/api/collections/users/records", json={"email": email, "password": password,
                                                         "passwordConfirm": password})
    assert r.status_code == 200, r.text
    return r.json()


def claims(tok):
    return json.loads(base64.urlsafe_b64decode(tok.split(".")[1] + "=="))


def test_verification_flow(tmpdir_path, smtp):
    srv, admin = start(tmpdir_path, *smtp.args())
    try:
        c = Client(srv.url)
        u = signup(c, "ver@example.com")
        assert u["verified"] is False
        assert c.post("/api/collections/users/request-verification", json={"email": "ver@example.com"}).status_code == 204
        m = smtp.wait_for("ver@example.com")
        assert "Verify" in m["Subject"]
        assert m["From"].addresses[0].addr_spec == "noreply@example.com"
        tok = token_from(m, "confirm-verification")
        assert "http://app.example.com/_/#/auth/confirm-verification/" in m.get_body().get_content()
        cl = claims(tok)
        assert cl["type"] == "verification" and cl["email"] == "ver@example.com" and cl["id"] == u["id"]
        assert 259100 < cl["exp"] - time.time() < 259300  # 3 days
        # a forged token (signature changed) and an auth token are refused
        assert_error(c.post("/api/collections/users/confirm-verification", json={"token": tok[:-2] + "AA"}), 400)
        auth = c.login("users", "ver@example.com", "password-123")
        assert_error(c.post("/api/collections/users/confirm-verification", json={"token": auth}), 400)
        assert c.post("/api/collections/users/confirm-verification", json={"token": tok}).status_code == 204
        assert admin.get(f"/api/collections/users/records/{u['id']}").json()["verified"] is True
        # a verified account gets no second mail; the answer is the same
        assert c.post("/api/collections/users/request-verification", json={"email": "ver@example.com"}).status_code == 204
        time.sleep(1)
        assert len([x for x in smtp.mails() if "ver@example.com" in x["X-Rcpt-To"]]) == 1
    finally:
        assert srv.stop() == 0


def test_password_reset_flow_invalidates_old_tokens(tmpdir_path, smtp):
    srv, admin = start(tmpdir_path, *smtp.args())
    try:
        c = Client(srv.url)
        u = signup(c, "reset@example.com")
        session = c.login("users", "reset@example.com", "password-123")
        for _ in range(2):
            assert c.post("/api/collections/users/request-password-reset",
                          json={"email": "reset@example.com"}).status_code == 204
        t1 = token_from(smtp.wait_for("reset@example.com", 1), "confirm-password-reset")
        t2 = token_from(smtp.wait_for("reset@example.com", 2), "confirm-password-reset")
        assert claims(t1)["type"] == "passwordReset"
        assert 1700 < claims(t1)["exp"] - time.time() < 1900  # 30 minutes
        # mismatch and short passwords are field errors
        assert_error(c.post("/api/collections/users/confirm-password-reset",
                            json={"token": t1, "password": "new-password-1", "passwordConfirm": "x"}), 400)
        assert_error(c.post("/api/collections/users/confirm-password-reset",
                            json={"token": t1, "password": "short", "passwordConfirm": "short"}), 400)
        r = c.post("/api/collections/users/confirm-password-reset",
                   json={"token": t1, "password": "new-password-1", "passwordConfirm": "new-password-1"})
        assert r.status_code == 204, r.text
        # the other reset link, the same link again and the old session are dead
        assert_error(c.post("/api/collections/users/confirm-password-reset",
                            json={"token": t2, "password": "new-password-2", "passwordConfirm": "new-password-2"}), 400)
        assert_error(c.post("/api/collections/users/confirm-password-reset",
                            json={"token": t1, "password": "new-password-2", "passwordConfirm": "new-password-2"}), 400)
        assert c.get(f"/api/collections/users/records/{u['id']}", token=session).status_code == 404
        c.login("users", "reset@example.com", "new-password-1")
        assert_error(c.post("/api/collections/users/auth-with-password",
                            json={"identity": "reset@example.com", "password": "password-123"}), 400)
    finally:
        assert srv.stop() == 0


def test_email_change_flow(tmpdir_path, smtp):
    srv, admin = start(tmpdir_path, *smtp.args())
    try:
        c = Client(srv.url)
        u = signup(c, "old@example.com")
        signup(c, "taken@example.com")
        tok = c.login("users", "old@example.com", "password-123")
        assert_error(c.post("/api/collections/users/request-email-change", json={"newEmail": "new@example.com"},
                            token=""), 401)
        assert_error(c.post("/api/collections/users/request-email-change", json={"newEmail": "taken@example.com"},
                            token=tok), 400, "newEmail")
        assert_error(c.post("/api/collections/users/request-email-change", json={"newEmail": "not-an-email"},
                            token=tok), 400, "newEmail")
        assert c.post("/api/collections/users/request-email-change", json={"newEmail": "new@example.com"},
                      token=tok).status_code == 204
        m = smtp.wait_for("new@example.com")
        t = token_from(m, "confirm-email-change")
        assert claims(t)["type"] == "emailChange" and claims(t)["newEmail"] == "new@example.com"
        assert_error(c.post("/api/collections/users/confirm-email-change", json={"token": t, "password": "wrong-pass"}),
                     400)
        assert c.post("/api/collections/users/confirm-email-change",
                      json={"token": t, "password": "password-123"}).status_code == 204
        rec = admin.get(f"/api/collections/users/records/{u['id']}").json()
        assert rec["email"] == "new@example.com" and rec["verified"] is True
        c.login("users", "new@example.com", "password-123")
        # the token is spent (the record's tokenKey changed)
        assert_error(c.post("/api/collections/users/confirm-email-change",
                            json={"token": t, "password": "password-123"}), 400)
    finally:
        assert srv.stop() == 0


def test_otp_flow(tmpdir_path, smtp):
    srv, admin = start(tmpdir_path, *smtp.args())
    try:
        c = Client(srv.url)
        u = signup(c, "otp@example.com")
        r = c.post("/api/collections/users/request-otp", json={"email": "otp@example.com"})
        assert r.status_code == 200, r.text
        otp_id = r.json()["otpId"]
        code = otp_from(smtp.wait_for("otp@example.com"))
        wrong = "00000000" if code != "00000000" else "11111111"
        assert_error(c.post("/api/collections/users/auth-with-otp", json={"otpId": otp_id, "password": wrong}), 400)
        r = c.post("/api/collections/users/auth-with-otp", json={"otpId": otp_id, "password": code})
        assert r.status_code == 200, r.text
        assert r.json()["record"]["id"] == u["id"] and r.json()["record"]["verified"] is True
        assert claims(r.json()["token"])["type"] == "auth"
        # one use only
        assert_error(c.post("/api/collections/users/auth-with-otp", json={"otpId": otp_id, "password": code}), 400)
        # five wrong tries end the OTP, even the right code is refused after
        otp_id = c.post("/api/collections/users/request-otp", json={"email": "otp@example.com"}).json()["otpId"]
        code = otp_from(smtp.wait_for("otp@example.com", 2))
        for _ in range(5):
            assert_error(c.post("/api/collections/users/auth-with-otp", json={"otpId": otp_id, "password": wrong}), 400)
        assert_error(c.post("/api/collections/users/auth-with-otp", json={"otpId": otp_id, "password": code}), 400)
        assert_error(c.post("/api/collections/users/auth-with-otp", json={"otpId": "x", "password": ""}), 400)
    finally:
        assert srv.stop() == 0


def test_no_enumeration(tmpdir_path, smtp):
    srv, admin = start(tmpdir_path, *smtp.args())
    try:
        c = Client(srv.url)
        signup(c, "known@example.com")
        for path in ("request-verification", "request-password-reset"):
            a = c.post(f"/api/collections/users/{path}", json={"email": "known@example.com"})
            b = c.post(f"/api/collections/users/{path}", json={"email": "unknown@example.com"})
            assert a.status_code == b.status_code == 204
            assert a.content == b.content == b""
        a = c.post("/api/collections/users/request-otp", json={"email": "known@example.com"})
        b = c.post("/api/collections/users/request-otp", json={"email": "unknown@example.com"})
        assert a.status_code == b.status_code == 200
        assert set(a.json()) == set(b.json()) == {"otpId"} and len(a.json()["otpId"]) == len(b.json()["otpId"])
        # the unknown otpId is refused like a wrong code
        assert_error(c.post("/api/collections/users/auth-with-otp",
                            json={"otpId": b.json()["otpId"], "password": "12345678"}), 400)
        smtp.wait_for("known@example.com", 3)
        time.sleep(0.5)
        assert not [m for m in smtp.mails() if "unknown@example.com" in m["X-Rcpt-To"]]
        # a bad address is a validation error whatever the accounts
        assert_error(c.post("/api/collections/users/request-password-reset", json={"email": "nope"}), 400, "email")
        assert_error(c.post("/api/collections/users/request-password-reset", json={"email": "a@b.co\r\nRCPT TO:<x@y.z>"}),
                     400, "email")
    finally:
        assert srv.stop() == 0


def test_rate_limit_per_address(tmpdir_path, smtp):
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path, NO_LIMITS + smtp.args() + ["--mail-rate-limit=3", "--mail-rate-limit-ip=0"]).start()
    try:
        admin = Client(srv.url)
        admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        define_collection(admin, {"name": "users", "type": "auth"})
        c = Client(srv.url)
        codes = [c.post("/api/collections/users/request-password-reset", json={"email": "rl@example.com"}).status_code
                 for _ in range(5)]
        assert codes[:3] == [204] * 3 and codes[3:] == [429, 429]
        # another address is not limited by this one (the limit is per address)
        assert c.post("/api/collections/users/request-password-reset",
                      json={"email": "other@example.com"}).status_code == 204
        # the same whether or not the address has an account: RL@ is the same key
        r = c.post("/api/collections/users/request-password-reset", json={"email": "RL@example.com"})
        assert r.status_code == 429 and r.headers.get("retry-after")
    finally:
        assert srv.stop() == 0


def test_rate_limit_per_client_address(tmpdir_path):
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path, NO_LIMITS + ["--mail-rate-limit=0", "--mail-rate-limit-ip=2"]).start()
    try:
        admin = Client(srv.url)
        admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        define_collection(admin, {"name": "users", "type": "auth"})
        c = Client(srv.url)
        codes = [c.post("/api/collections/users/request-otp", json={"email": f"u{i}@example.com"}).status_code
                 for i in range(4)]
        assert codes == [200, 200, 429, 429]
    finally:
        assert srv.stop() == 0


def test_smtp_not_configured_or_down_goes_to_dead_letter(tmpdir_path):
    # SMTP enabled towards a port where nothing listens: the request is answered at
    # once, the mail job retries and ends dead, visible in the metrics.
    make_superuser(tmpdir_path)
    from conftest import free_port
    srv = Server(tmpdir_path, ["--smtp-enabled=1", "--smtp-host=127.0.0.1", f"--smtp-port={free_port()}",
                               "--jobs-backoff-ms=50", "--jobs-max-attempts=3", "--jobs-poll-ms=50",
                               "--mail-rate-limit=0"] + NO_LIMITS).start()
    try:
        admin = Client(srv.url)
        admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        define_collection(admin, {"name": "users", "type": "auth", "createRule": ""})
        c = Client(srv.url)
        signup(c, "down@example.com")
        t0 = time.time()
        assert c.post("/api/collections/users/request-password-reset",
                      json={"email": "down@example.com"}).status_code == 204
        assert time.time() - t0 < 5
        deadline = time.time() + 30
        while time.time() < deadline:
            dead = admin.get("/api/basalt/jobs?state=dead").json()["items"]
            if dead:
                break
            time.sleep(0.1)
        assert dead and dead[0]["name"] == "mail.send" and dead[0]["attempts"] == 3
        assert "SMTP" in dead[0]["lastError"]
        metrics = wait_metrics(admin, 'basalt_jobs{state="dead"} 1')
        assert 'basalt_jobs{state="dead"} 1' in metrics
        assert "basalt_job_dead_total 1" in metrics
        # not configured at all: the same
        r = admin.patch("/api/settings", json={"smtp": {"enabled": False}})
        assert r.status_code == 200, r.text
        assert c.post("/api/collections/users/request-verification",
                      json={"email": "down@example.com"}).status_code == 204
        deadline = time.time() + 30
        while time.time() < deadline and len(admin.get("/api/basalt/jobs?state=dead").json()["items"]) < 2:
            time.sleep(0.1)
        dead = admin.get("/api/basalt/jobs?state=dead").json()["items"]
        assert len(dead) == 2 and "not enabled" in dead[0]["lastError"]
    finally:
        assert srv.stop() == 0


def test_mail_flow_bad_inputs(tmpdir_path, smtp):
    srv, admin = start(tmpdir_path, *smtp.args())
    try:
        c = Client(srv.url)
        assert_error(c.post("/api/collections/nope/request-otp", json={"email": "a@b.co"}), 404)
        assert_error(c.post("/api/collections/users/confirm-verification", json={}), 400, "token")
        assert_error(c.post("/api/collections/users/confirm-verification", json={"token": "a.b.c"}), 400)
        assert_error(c.post("/api/collections/users/request-otp", data="[1]",
                            headers={"content-type": "application/json"}), 400)
        admin.post("/api/collections", json={"name": "posts", "type": "base"})
        assert_error(c.post("/api/collections/posts/request-otp", json={"email": "a@b.co"}), 400)
    finally:
        assert srv.stop() == 0
