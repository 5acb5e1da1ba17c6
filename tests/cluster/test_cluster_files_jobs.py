"""Files and jobs on the local cluster (deploy/local/cluster.sh: 2 Basalt instances on
Patroni PostgreSQL through PgBouncer, Redis, HAProxy), with the files in S3-compatible
storage: s3rver behind the SigV4-checking proxy of tests/s3/s3fixture.py, which the
test starts on loopback and every instance is pointed at (--basalt-arg). The cluster
is this module's own (the chaos suite's has no S3 and no test job handlers).

- an upload through instance A is served by instance B, its thumbnail too, and a
  protected file with a file token A issued is read on B;
- jobs queued together are each run once across the instances (webhook deliveries
  counted by a receiver this test runs);
- an instance SIGKILLed mid-job leaves the job to the other instance once its lease
  ran out: retried, not lost;
- the every-minute test cron runs once per tick across the instances.

Run with `make cluster-files` (about 2 to 3 minutes, most of it bringing the cluster up
and waiting for a cron tick)."""
import http.server
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

import pytest
import requests

from conftest import ADMIN, BIN, CLUSTER_SH, NO_LIMITS, Cluster, parse_env

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "s3"))
from s3fixture import s3, s3_args  # noqa: E402,F401 (s3: the module's fixture)



def png(w, h, color=(30, 120, 200)):
    """A valid RGB PNG of w x h pixels."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    raw = zlib.compress((b"\0" + bytes(color) * w) * h)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    return struct.unpack(">II", data[16:24])

JOB_ARGS = ["--jobs-test-handlers=1", "--jobs-poll-ms=50", "--jobs-backoff-ms=100", "--jobs-lease-grace-ms=500",
            "--webhook-allow-hosts=127.0.0.1"]


@pytest.fixture(scope="module")
def fj(s3):
    """The module's cluster, every instance on the one bucket."""
    srv, proxy = s3
    d = tempfile.mkdtemp(prefix="basalt-cluster-fj-")
    os.rmdir(d)  # cluster.sh makes it
    args = [CLUSTER_SH, "up", "--dir", d, "--bin", BIN, "--instances", "2", "--admin", ":".join(ADMIN)]
    for a in NO_LIMITS + s3_args(proxy.port) + JOB_ARGS:
        args += ["--basalt-arg", a]
    t0 = time.time()
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        subprocess.run([CLUSTER_SH, "down", "--dir", d], capture_output=True, timeout=120)
        pytest.fail(f"cluster.sh up failed:\n{out.stderr}")
    print(f"\ncluster up in {time.time() - t0:.1f}s")
    c = Cluster(d, parse_env(out.stdout))
    c.proxy = proxy
    yield c
    if os.environ.get("BASALT_KEEP_CLUSTER"):
        print(f"cluster left running in {d}")
        return
    subprocess.run([CLUSTER_SH, "down", "--dir", d], capture_output=True, timeout=120)
    assert proxy.rejected == [], proxy.rejected  # every request an instance sent was signed right


def instance_token(url):
    r = requests.post(url + "/api/collections/_superusers/auth-with-password",
                      json={"identity": ADMIN[0], "password": ADMIN[1]}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["token"]


def wait_get(url, ok=lambda r: r.status_code == 200, timeout=15, **kw):
    """GET until ok (instance B may read from the replica, a moment behind A's commit)."""
    end = time.time() + timeout
    while True:
        r = requests.get(url, timeout=10, **kw)
        if ok(r) or time.time() > end:
            return r
        time.sleep(0.2)


def metric(url, token, name):
    for line in requests.get(url + "/metrics", headers={"Authorization": token}, timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name} on {url}")


def test_upload_on_a_is_served_by_b(fj):
    a, b = fj.instance_urls[:2]
    ha = {"Authorization": instance_token(a)}
    r = requests.post(a + "/api/collections", headers=ha, timeout=10, json={
        # viewRule null: only a superuser may view, so the protected file needs the
        # superuser's file token (unprotected files ignore the view rule).
        "name": "cf_media", "listRule": None, "viewRule": None, "createRule": None,
        "fields": [{"name": "img", "type": "file", "maxSelect": 1, "thumbs": ["20x20"]},
                   {"name": "doc", "type": "file", "maxSelect": 1, "protected": True}]})
    assert r.status_code == 200, r.text
    image = png(64, 48)
    r = requests.post(a + "/api/collections/cf_media/records", headers=ha, timeout=10,
                      files=[("img", ("photo.png", image, "image/png")),
                             ("doc", ("secret.txt", b"for superusers", "text/plain"))])
    assert r.status_code == 200, r.text
    rec = r.json()
    base = f"/api/files/cf_media/{rec['id']}/"

    got = wait_get(b + base + rec["img"])
    assert got.status_code == 200, got.text
    assert got.content == image and got.headers["content-type"] == "image/png"

    thumb = wait_get(b + base + rec["img"] + "?thumb=20x20")
    assert thumb.status_code == 200 and png_size(thumb.content) == (20, 20)

    # Protected: 404 without a token on B; a file token A issued opens it on B.
    assert requests.get(b + base + rec["doc"], timeout=10).status_code == 404
    ftok = requests.post(a + "/api/files/token", headers=ha, timeout=10).json()["token"]
    got = wait_get(b + base + rec["doc"] + "?token=" + ftok)
    assert got.status_code == 200 and got.content == b"for superusers"
    assert fj.proxy.rejected == []


class CountingReceiver:
    """Counts webhook deliveries by their webhook-id (answers 200 at once)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seen = {}  # webhook-id -> times
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", "0")))
                with outer.lock:
                    wid = self.headers.get("webhook-id", "")
                    outer.seen[wid] = outer.seen.get(wid, 0) + 1
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        # A backlog for every delivery at once: the default 5 lets a loaded machine's
        # connects wait for SYN retries, counted as the instances' failures.
        server = type("Server", (http.server.ThreadingHTTPServer,), {"request_queue_size": 128})
        self.httpd = server(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def total(self):
        with self.lock:
            return sum(self.seen.values())

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_each_job_runs_once_across_instances(fj):
    a, b = fj.instance_urls[:2]
    ta, tb = instance_token(a), instance_token(b)
    rcv = CountingReceiver()
    try:
        r = requests.post(a + "/api/collections", headers={"Authorization": ta}, timeout=10, json={
            "name": "cf_posts", "createRule": "", "fields": [{"name": "n", "type": "number"}]})
        assert r.status_code == 200, r.text
        r = requests.patch(a + "/api/settings", headers={"Authorization": ta}, timeout=10, json={"webhooks": [
            {"id": "cfhook", "collection": "cf_posts", "events": ["create"], "url": rcv.url,
             "secret": "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}]})
        assert r.status_code == 200, r.text
        # B reloads the settings within 2 s; a delivery it took before would find no hook.
        r = wait_get(b + "/api/settings", headers={"Authorization": tb},
                     ok=lambda r: any(w.get("id") == "cfhook" for w in r.json().get("webhooks") or []))
        assert any(w.get("id") == "cfhook" for w in r.json()["webhooks"]), r.text
        runs0 = [metric(u, t, "basalt_job_runs_total") for u, t in ((a, ta), (b, tb))]
        n = 60
        for i in range(n):  # through both instances: each queues its own deliveries
            r = requests.post((a, b)[i % 2] + "/api/collections/cf_posts/records", json={"n": i}, timeout=10)
            assert r.status_code == 200, r.text
        end = time.time() + 60
        while rcv.total() < n and time.time() < end:
            time.sleep(0.2)
        time.sleep(2)  # a duplicate would have arrived by now

        def why():
            # What the queue says of the deliveries that took more than one attempt, and
            # each instance's counters: a failure names its cause.
            out = []
            for u, t in ((a, ta), (b, tb)):
                items = requests.get(u + "/api/basalt/jobs", headers={"Authorization": t}, timeout=10).json()
                out.append([(j["state"], j["attempts"], j["lastError"]) for j in items.get("items", [])
                            if j["name"] == "webhook.deliver" and (j["attempts"] != 1 or j["state"] != "done")])
                out.append({m: metric(u, t, m) for m in ("basalt_job_runs_total", "basalt_job_failures_total",
                                                         "basalt_job_lease_expired_total")})
            return out
        assert len(rcv.seen) == n, f"{len(rcv.seen)} distinct deliveries of {n}: {why()}"
        assert all(v == 1 for v in rcv.seen.values()), ({k: v for k, v in rcv.seen.items() if v != 1}, why())
        runs = [metric(u, t, "basalt_job_runs_total") - r0 for (u, t), r0 in zip(((a, ta), (b, tb)), runs0)]
        print(f"\ndeliveries run by instance: {runs}")
        assert sum(runs) >= n
    finally:
        requests.patch(a + "/api/settings", headers={"Authorization": ta}, timeout=10, json={"webhooks": []})
        rcv.stop()


def test_sigkill_mid_job_leaves_it_to_the_other_instance(fj):
    urls = fj.instance_urls[:2]
    toks = [instance_token(u) for u in urls]
    # Away from a minute boundary: the test cron's tick would count as a run too.
    while time.time() % 60 > 50:
        time.sleep(1)
    runs0 = [metric(u, t, "basalt_job_runs_total") for u, t in zip(urls, toks)]
    r = requests.post(urls[0] + "/api/basalt/jobs", headers={"Authorization": toks[0]}, timeout=10, json={
        "name": "test.sleep", "payload": {"first_ms": 120000, "ms": 10}, "timeoutMs": 3000, "maxAttempts": 3})
    assert r.status_code == 200, r.text
    jid = r.json()["id"]
    r = wait_get(urls[0] + f"/api/basalt/jobs/{jid}", headers={"Authorization": toks[0]},
                 ok=lambda r: r.json().get("state") == "running")
    assert r.json()["state"] == "running", r.text
    took = [i for i, (u, t) in enumerate(zip(urls, toks)) if metric(u, t, "basalt_job_runs_total") > runs0[i]]
    assert len(took) == 1, took
    victim, other = took[0], 1 - took[0]
    fj.sh("kill-instance", str(victim + 1))
    try:
        r = wait_get(urls[other] + f"/api/basalt/jobs/{jid}", headers={"Authorization": toks[other]},
                     ok=lambda r: r.json().get("state") in ("done", "dead"), timeout=60)
        job = r.json()
        assert job["state"] == "done" and job["attempts"] == 2, job
        assert metric(urls[other], toks[other], "basalt_job_lease_expired_total") >= 1
    finally:
        fj.sh("start-instance", str(victim + 1))


def test_cron_runs_once_per_tick(fj):
    a = fj.instance_urls[0]
    h = {"Authorization": instance_token(a)}

    def ticks():
        items = requests.get(a + "/api/basalt/jobs", headers=h, timeout=10).json()["items"]
        return [j for j in items if j["payload"].get("cron") == "__basaltTestTick__"]

    end = time.time() + 80
    got = []
    while time.time() < end:
        got = ticks()
        if got and all(j["state"] == "done" for j in got):
            break
        time.sleep(0.5)
    assert got, "no tick of the test cron within 80 s"
    time.sleep(2)  # both schedulers have seen the tick by now
    by_tick = {}
    for j in ticks():
        by_tick.setdefault(j["payload"]["tick"], []).append(j)
    assert all(len(v) == 1 for v in by_tick.values()), by_tick
    assert all(v[0]["attempts"] == 1 for v in by_tick.values() if v[0]["state"] == "done"), by_tick
