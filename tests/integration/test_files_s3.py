"""The file tests of test_files.py again, with the files in S3-compatible object
storage: s3rver (npm, tests/s3/package.json) on a free loopback port in a temporary
folder, and in front of it a small proxy that checks every request's AWS SigV4
signature (s3rver checks the access key but not the v4 signature itself), so a
request Basalt signs wrongly fails here as it would on AWS. Then the failures: a
wrong secret, a dead server, a server that never answers."""
import os
import shutil
import sys
import tempfile

import pytest
import requests

import test_files
from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Client, Server, assert_error, free_port, make_superuser
from test_files import *  # noqa: F401,F403 - the same tests, with the `env` below

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "s3"))
from s3fixture import s3, s3_args  # noqa: E402,F401 (s3: the module's fixture)

# Local-only (they start local-storage servers of their own).
del test_expired_file_token  # noqa: F821
del test_cleanup_removes_orphans_only  # noqa: F821


@pytest.fixture(scope="module")
def env(s3):
    srv, proxy = s3
    d = tempfile.mkdtemp(prefix="basalt-it-")
    make_superuser(d)
    server = Server(d, s3_args(proxy.port)).start()
    admin = Client(server.url)
    admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    e = test_files.Env(server, admin, srv.keys)
    yield e
    assert server.stop() == 0
    assert proxy.rejected == [], proxy.rejected  # every request Basalt sent was signed right
    shutil.rmtree(d, ignore_errors=True)


def _server(tmpdir_path, args):
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path, args).start()
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    r = admin.post("/api/collections", json={"name": "f", "createRule": "", "viewRule": "",
                                              "fields": [{"name": "a", "type": "file", "maxSelect": 2}]})
    assert r.status_code == 200, r.text
    return srv, admin


def test_s3_signed_requests_reach_the_bucket(env, s3):
    srv, proxy = s3
    before = proxy.requests
    r = env.admin.post("/api/collections/docs/records", files=[("one", ("s3.txt", b"in the bucket", "text/plain"))])
    assert r.status_code == 200, r.text
    rec = r.json()
    assert srv.keys(env.docs, rec["id"]) == [rec["one"]]
    assert proxy.requests > before and proxy.rejected == []


def test_s3_wrong_secret_is_a_clear_error(s3, tmpdir_path):
    _, proxy = s3
    server, admin = _server(tmpdir_path, s3_args(proxy.port, secret="not-the-secret"))
    try:
        n = len(proxy.rejected)
        r = admin.post("/api/collections/f/records", files=[("a", ("x.txt", b"x", "text/plain"))])
        body = assert_error(r, 502)
        assert "SignatureDoesNotMatch" in body["message"]
        assert len(proxy.rejected) > n
        # Nothing was written: the record does not exist.
        assert admin.get("/api/collections/f/records").json()["totalItems"] == 0
    finally:
        del proxy.rejected[:]  # these were meant to fail
        assert server.stop() == 0


def test_s3_down_is_a_clear_error_not_a_hang(tmpdir_path):
    port = free_port()  # nothing listens there
    server, admin = _server(tmpdir_path, s3_args(port))
    try:
        t0 = time.time()
        r = admin.post("/api/collections/f/records", files=[("a", ("x.txt", b"x", "text/plain"))])
        assert_error(r, 503)
        assert "S3" in r.json()["message"]
        assert time.time() - t0 < 10
        assert admin.get("/api/collections/f/records").json()["totalItems"] == 0
        # Records without files still work.
        assert admin.post("/api/collections/f/records", json={}).status_code == 200
    finally:
        assert server.stop() == 0


def test_s3_that_never_answers_times_out(s3, tmpdir_path):
    _, proxy = s3
    server, admin = _server(tmpdir_path, s3_args(proxy.port, timeout_ms=1000))
    try:
        r = admin.post("/api/collections/f/records", files=[("a", ("x.txt", b"x", "text/plain"))])
        assert r.status_code == 200, r.text
        rec = r.json()
        proxy.mode = "stall"
        t0 = time.time()
        r = requests.get(f"{server.url}/api/files/f/{rec['id']}/{rec['a'][0]}", timeout=20)
        assert_error(r, 504)
        assert time.time() - t0 < 8
        # The loop was never blocked: other requests were answered meanwhile.
        assert requests.get(server.url + "/api/health", timeout=2).status_code == 200
    finally:
        proxy.mode = "ok"
        assert server.stop() == 0
