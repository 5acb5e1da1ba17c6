#!/usr/bin/env python3
"""What the Redis L2 tier saves on an in-process cache miss (docs/redis.md): a fresh
instance B reads N record views that instance A has already computed (so they are in
L2), each once, sequentially; then the same with --cache-l2-ttl=0 (each is a
PostgreSQL read). Prints the latency percentiles of both, as seen by the client.

Needs BASALT_TEST_PG_URL (scripts/pg-env.sh). Usage: bench/redis_l2_cost.py [N]
"""
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BASALT_BIN", os.path.join(ROOT, "build", "basalt"))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
PG = os.environ["BASALT_TEST_PG_URL"].rsplit("/", 1)[0]
NOLIM = ["--rate-limit-anon=0", "--rate-limit-user=0", "--rate-limit-burst=0", "--rate-limit-auth=0"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(d, db, extra):
    port = free_port()
    p = subprocess.Popen([BIN, "serve", f"--http=127.0.0.1:{port}", f"--dir={d}", "--threads=2", "--log-level=error",
                          f"--db={PG}/{db}", *NOLIM, *extra], stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(d, "log"), "ab"))
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if requests.get(url + "/api/health", timeout=0.5).status_code == 200:
                return p, url
        except requests.RequestException:
            time.sleep(0.05)
    raise RuntimeError("basalt did not start")


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait()


def read_all(url, ids):
    s = requests.Session()
    out = []
    for i in ids:
        t = time.perf_counter()
        r = s.get(f"{url}/api/collections/hot/records/{i}")
        out.append((time.perf_counter() - t) * 1e6)
        assert r.status_code == 200
    out.sort()
    return out


def main():
    tmp = tempfile.mkdtemp(prefix="basalt-l2-bench-")
    db = "bt_l2bench_" + str(os.getpid())
    subprocess.run(["psql", os.environ["BASALT_TEST_PG_URL"], "-qAt", "-c", f"CREATE DATABASE {db}"], check=True)
    rport = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
    try:
        ru = [f"--redis=redis://127.0.0.1:{rport}"]
        subprocess.run([BIN, "superuser", "upsert", "b@example.com", "bench-password-1", f"--dir={tmp}",
                        f"--db={PG}/{db}"], check=True, capture_output=True)
        a, aurl = start(tmp, db, ru)
        tok = requests.post(aurl + "/api/collections/_superusers/auth-with-password",
                            json={"identity": "b@example.com", "password": "bench-password-1"}).json()["token"]
        h = {"Authorization": tok}
        requests.post(aurl + "/api/collections", headers=h, json={
            "name": "hot", "viewRule": "", "fields": [{"name": "t", "type": "text"}]}).raise_for_status()
        s = requests.Session()
        ids = [s.post(aurl + "/api/collections/hot/records", headers=h, json={"t": "x" * 200}).json()["id"]
               for _ in range(N)]
        time.sleep(0.5)  # the creates' invalidations reach Redis
        read_all(aurl, ids)  # A computes every view: they are in L2 now
        for mode, extra in (("L2 hit", ru), ("PostgreSQL", ru + ["--cache-l2-ttl=0"]), ("L2 hit", ru)):
            d = tempfile.mkdtemp(dir=tmp)
            b, burl = start(d, db, extra)
            lat = read_all(burl, ids)
            m = [l for l in requests.get(burl + "/metrics").text.splitlines() if l.startswith("basalt_cache_l2_total")]
            stop(b)
            print(f"{mode:10s} p50 {lat[len(lat) // 2]:7.0f} us  p90 {lat[len(lat) * 9 // 10]:7.0f} us  "
                  f"mean {statistics.mean(lat):7.0f} us  ({N} first reads on a fresh instance) "
                  + " ".join(l.split("{")[1].replace('"}', "").replace('result="', "") for l in m))
        stop(a)
    finally:
        redis.send_signal(signal.SIGTERM)
        redis.wait()
        subprocess.run(["psql", os.environ["BASALT_TEST_PG_URL"], "-qAt", "-c", f"DROP DATABASE IF EXISTS {db}"])
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
