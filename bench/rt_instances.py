#!/usr/bin/env python3
"""Cross-instance realtime delays (ADR 0006): two instances on one PostgreSQL database
(BASALT_TEST_PG_URL, as the tests), creates through A seen on B, and subscription POSTs on B
for streams on A. Usage: BUILD=build-release /usr/bin/python3 bench/rt_instances.py"""
import os, sys, time, statistics, tempfile
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
os.environ["BASALT_BIN"] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", os.environ.get("BUILD", "build-release"), "basalt")
import conftest
conftest.BIN = os.environ["BASALT_BIN"]
import test_rt_instances as T
T.BIN = conftest.BIN
from rtclient import SSE
d = tempfile.mkdtemp(prefix="evlat-")
p = T.Pair(d)
try:
    s = SSE(p.b.url); T.subscribe(s, p.b.url, ["notes/*"])
    s2 = SSE(p.a.url); T.subscribe(s2, p.a.url, ["notes/*"])
    cross, local, post = [], [], []
    for i in range(60):
        t0 = time.time()
        r = p.admin_a.post("/api/collections/notes/records", json={"text": f"n{i}"})
        t1 = time.time()
        e = s.next(timeout=5); t2 = time.time()
        e2 = s2.next(timeout=5)
        assert e and e2
        post.append(t1 - t0); cross.append(t2 - t0)
        time.sleep(0.05)
    # the registry: POST on B for a stream on A
    reg = []
    for i in range(20):
        sa = SSE(p.a.url)
        t0 = time.time(); r = T.Client(p.b.url).post("/api/realtime", json={"clientId": sa.client_id, "subscriptions": ["notes/*"]}); reg.append(time.time() - t0)
        assert r.status_code == 204, r.text
        sa.close()
    q = lambda xs: f"p50 {statistics.median(xs)*1000:.1f} ms, max {max(xs)*1000:.1f} ms"
    print("write on A answered:", q(post))
    print("write on A -> event on B's SSE (from the request's start):", q(cross))
    print("subscription POST on B for a stream on A answered:", q(reg))
    s.close(); s2.close()
finally:
    p.stop()
