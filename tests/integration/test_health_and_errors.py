import requests

from conftest import Client, assert_error


def test_health_exact(shared_server):
    r = Client(shared_server.url).get("/api/health")
    assert r.status_code == 200
    assert r.json() == {"message": "API is healthy.", "code": 200, "data": {}}
    assert r.headers["content-type"] == "application/json"


def test_readiness(shared_server):
    c = Client(shared_server.url)
    assert c.get("/api/basalt/ready").status_code == 200
    assert c.get("/api/health?ready=1").status_code == 200


def test_unknown_route_and_method(shared_server):
    c = Client(shared_server.url)
    assert_error(c.get("/api/nope"), 404)
    assert_error(c.req("PUT", "/api/health"), 405)


def test_request_id_echoed(shared_server):
    r = Client(shared_server.url).get("/api/health", headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"


def test_cors_preflight(shared_server):
    r = Client(shared_server.url).req("OPTIONS", "/api/collections/x/records")
    assert r.status_code == 204
    assert "authorization" in r.headers["access-control-allow-headers"]


def test_tls(tmpdir_path):
    """With a certificate configured, Basalt serves HTTPS (HTTP/1.1)."""
    import subprocess
    import os
    cert, key = os.path.join(tmpdir_path, "c.pem"), os.path.join(tmpdir_path, "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    # Server.start polls over plain HTTP; this one is started by hand.
    import requests, time, signal
    from conftest import BIN, free_port
    port = free_port()
    proc = subprocess.Popen([BIN, "serve", f"--http=127.0.0.1:{port}", f"--dir={tmpdir_path}",
                             f"--tls-cert={cert}", f"--tls-key={key}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        ok = False
        for _ in range(100):
            try:
                r = requests.get(f"https://127.0.0.1:{port}/api/health", verify=cert, timeout=1)
                ok = r.status_code == 200 and r.json()["code"] == 200
                break
            except requests.RequestException:
                time.sleep(0.05)
        assert ok
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_bad_tls_settings_stop_startup(tmpdir_path):
    import subprocess
    from conftest import BIN
    out = subprocess.run([BIN, "serve", f"--dir={tmpdir_path}", "--tls-cert=/nonexistent.pem",
                          "--tls-key=/nonexistent.key", "--http=127.0.0.1:0"], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode != 0 and "certificate" in out.stderr
    out = subprocess.run([BIN, "serve", "--threads=abc"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 2 and "threads" in out.stderr


def test_access_log_has_no_secrets(server, admin):
    import json
    import os
    token = admin.token
    admin.get("/api/collections?filter=secret%3D1")
    admin.post("/api/collections/_superusers/auth-with-password",
               json={"identity": "admin@example.com", "password": "admin-password-1"}, token="")
    server.stop()
    log = open(os.path.join(server.dir, "server.log"), encoding="utf-8").read()
    assert token not in log and "admin-password-1" not in log and "secret%3D1" not in log
    lines = [json.loads(l) for l in log.splitlines() if l.startswith("{") and '"module":"access"' in l]
    assert lines, "no access log lines"
    for l in lines:
        assert {"time", "request_id", "method", "path", "status", "bytes", "duration_us"} <= l.keys()


def test_access_log_follows_the_log_level(tmp_path):
    """Access lines are info: --log-level=warn writes none (it built and wrote one per
    request, a tenth of a cached view's CPU), while warnings still reach the log."""
    import os
    from conftest import Server
    for level, want in (("info", True), ("warn", False)):
        d = tmp_path / level
        d.mkdir()
        srv = Server(str(d), [f"--log-level={level}"], topology="single").start()
        try:
            for _ in range(3):
                assert requests.get(srv.url + "/api/collections/nope/records", timeout=5).status_code == 404
        finally:
            assert srv.stop() == 0
        log = open(os.path.join(str(d), "server.log"), encoding="utf-8").read()
        assert ('"module":"access"' in log) == want, (level, log[-2000:])
