"""Rate limits with the plan's defaults: 20/min anonymous by IP, 100/min per user,
200/min per IP overall, stricter auth endpoints, health exempt, trusted proxies."""
from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Client, Server, assert_error, make_superuser

# The plan's numbers, per hour instead of per minute: the counts these tests check
# must not depend on how fast the machine runs them (a slow, sanitized build would
# see a request come back every 3 s at 20 per minute).
LIMITS = ["--rate-limit-anon=20", "--rate-limit-user=100", "--rate-limit-burst=200", "--rate-limit-auth=10",
          "--rate-limit-period-ms=3600000"]


def start(tmpdir_path, extra=()):
    make_superuser(tmpdir_path)
    return Server(tmpdir_path, LIMITS + list(extra)).start()


def setup_public(srv):
    # The superuser is exempt: it sets things up without spending anyone's budget.
    a = Client(srv.url)
    a.token = a.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    a.post("/api/collections", json={"name": "pub", "listRule": "", "createRule": "",
                                     "fields": [{"name": "t", "type": "text"}]})
    a.post("/api/collections", json={"name": "rusers", "type": "auth", "createRule": ""})
    return a


def test_anonymous_limit_exact(tmpdir_path):
    srv = start(tmpdir_path)
    try:
        setup_public(srv)
        c = Client(srv.url)
        for i in range(20):
            r = c.get("/api/collections/pub/records")
            assert r.status_code == 200, (i, r.text)
            assert r.headers["ratelimit-limit"] == "20"
            assert r.headers["ratelimit-remaining"] == str(19 - i)
            assert int(r.headers["ratelimit-reset"]) <= 3600
        r = c.get("/api/collections/pub/records")
        body = assert_error(r, 429)
        assert "limit" in body["message"]
        assert r.headers["ratelimit-remaining"] == "0"
        assert 170 <= int(r.headers["retry-after"]) <= 180  # one request back every 3600 s / 20
        # Health is exempt; a refused request changed nothing.
        for _ in range(30):
            assert c.get("/api/health").status_code == 200
        # Another client address (via a trusted proxy, below) is independent: see the next test.
    finally:
        assert srv.stop() == 0


def test_user_limit_and_trusted_proxy(tmpdir_path):
    srv = start(tmpdir_path, ["--trusted-proxies=127.0.0.1"])
    try:
        setup_public(srv)
        anon = Client(srv.url)
        # Through the trusted proxy each X-Forwarded-For address has its own budget.
        for ip in ["10.0.0.1", "10.0.0.2"]:
            for _ in range(20):
                assert anon.get("/api/collections/pub/records", headers={"X-Forwarded-For": ip}).status_code == 200
            assert_error(anon.get("/api/collections/pub/records", headers={"X-Forwarded-For": ip}), 429)
        # Sign-up and login go through the auth class (10/min per address).
        h = {"X-Forwarded-For": "10.0.0.9"}
        r = anon.post("/api/collections/rusers/records", headers=h, json={
            "email": "rl@example.com", "password": "password-123", "passwordConfirm": "password-123"})
        assert r.status_code == 200, r.text
        r = anon.post("/api/collections/rusers/auth-with-password", headers=h,
                      json={"identity": "rl@example.com", "password": "password-123"})
        assert r.status_code == 200, r.text
        assert r.headers["ratelimit-limit"] == "10"
        user = Client(srv.url, r.json()["token"])
        # A user has 100 per minute, counted by user, not by address.
        for i in range(100):
            r = user.get("/api/collections/pub/records", headers={"X-Forwarded-For": f"10.1.{i // 50}.{i % 50}"})
            assert r.status_code == 200, (i, r.text)
        assert_error(user.get("/api/collections/pub/records", headers={"X-Forwarded-For": "10.9.9.9"}), 429)
        # Failed logins spend the auth budget: 10 per address, then 429.
        statuses = [anon.post("/api/collections/rusers/auth-with-password", headers={"X-Forwarded-For": "10.0.0.77"},
                              json={"identity": "rl@example.com", "password": "wrong-wrong"}).status_code
                    for _ in range(11)]
        assert statuses == [400] * 10 + [429]
    finally:
        assert srv.stop() == 0


def test_untrusted_forwarded_for_is_ignored(tmpdir_path):
    srv = start(tmpdir_path)
    try:
        setup_public(srv)
        c = Client(srv.url)
        for i in range(20):
            assert c.get("/api/collections/pub/records", headers={"X-Forwarded-For": f"1.2.3.{i}"}).status_code == 200
        assert_error(c.get("/api/collections/pub/records", headers={"X-Forwarded-For": "9.9.9.9"}), 429)
    finally:
        assert srv.stop() == 0


def test_burst_cap_per_address(tmpdir_path):
    srv = start(tmpdir_path, ["--trusted-proxies=127.0.0.1"])
    try:
        a = setup_public(srv)
        # Three users behind one address: each has 100, the address has 200.
        tokens = []
        for i in range(3):
            Client(srv.url).post("/api/collections/rusers/records", json={
                "email": f"b{i}@example.com", "password": "password-123", "passwordConfirm": "password-123"},
                headers={"X-Forwarded-For": f"10.5.0.{i}"})
            tokens.append(Client(srv.url).login("rusers", f"b{i}@example.com", "password-123"))
        ok = 0
        for i in range(250):
            t = tokens[i % 3]
            r = Client(srv.url, t).get("/api/collections/pub/records", headers={"X-Forwarded-For": "10.6.6.6"})
            ok += r.status_code == 200
        assert ok == 200
        assert a.get("/api/collections/pub/records").status_code == 200  # superusers are exempt
    finally:
        assert srv.stop() == 0


def test_per_collection_override(tmpdir_path):
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path, LIMITS + ["--rate-limit-collections=pub=3"]).start()
    try:
        setup_public(srv)
        c = Client(srv.url)
        for _ in range(3):
            r = c.get("/api/collections/pub/records")
            assert r.status_code == 200 and r.headers["ratelimit-limit"] == "3"
        assert_error(c.get("/api/collections/pub/records"), 429)
        # Other endpoints keep the anonymous budget of the address.
        r = c.get("/api/collections/rusers/auth-methods")
        assert r.status_code == 200 and r.headers["ratelimit-limit"] == "20"
    finally:
        assert srv.stop() == 0
    import subprocess
    from conftest import BIN
    out = subprocess.run([BIN, "serve", "--rate-limit-collections=pub", f"--dir={tmpdir_path}"], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 2 and "rate-limit-collections" in out.stderr
