#!/usr/bin/env python3
"""Jobs per second through the durable queue (docs/performance.md).

Starts basalt (SQLite in a temporary folder, or PostgreSQL with --db URL), queues N
no-op jobs (test.flaky with no failures) all due at the same moment T, and measures
from T until no job is ready or running (polled every 20 ms): the queue's claim ->
run -> finish cycle, the runners' throughput, not the HTTP that queued them.
Usage: bench/jobs_bench.py [--db URL] [--n 2000] [--threads 2] [--bin build/basalt]"""
import argparse
import concurrent.futures
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import requests


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "build", "basalt"))
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="basalt-jobs-bench-")
    db = [f"--db={a.db}"] if a.db else []
    subprocess.run([a.bin, "superuser", "upsert", "b@example.com", "bench-password", f"--dir={d}", *db],
                   check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    p = subprocess.Popen([a.bin, "serve", f"--http={url[7:]}", f"--dir={d}", *db, "--jobs-test-handlers=1",
                          f"--jobs-threads={a.threads}", "--rate-limit-anon=0", "--rate-limit-user=0",
                          "--rate-limit-burst=0", "--rate-limit-auth=0", "--log-level=warn"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                if requests.get(url + "/api/health", timeout=0.5).ok:
                    break
            except requests.RequestException:
                time.sleep(0.05)
        tok = requests.post(url + "/api/collections/_superusers/auth-with-password",
                            json={"identity": "b@example.com", "password": "bench-password"}).json()["token"]
        h = {"authorization": tok}
        lead_ms = 5000 + a.n * (15 if a.db else 3)
        t_ms = int(time.time() * 1000) + lead_ms
        sess = requests.Session()

        def one(i):
            r = sess.post(url + "/api/basalt/jobs", headers=h,
                          json={"name": "test.flaky", "payload": {"failures": 0},
                                "delayMs": max(0, t_ms - int(time.time() * 1000))})
            r.raise_for_status()

        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            list(ex.map(one, range(a.n)))
        late = int(time.time() * 1000) - t_ms
        assert late < 0, f"queuing took longer than the lead time ({late} ms late)"
        while True:
            j = requests.get(url + "/api/basalt/jobs?state=ready", headers=h).json()["items"]
            r = requests.get(url + "/api/basalt/jobs?state=running", headers=h).json()["items"]
            if not j and not r and time.time() * 1000 > t_ms:
                break
            time.sleep(0.02)
        secs = (time.time() * 1000 - t_ms) / 1000  # within one poll (20 ms) of the last job's end
        backend = "postgres" if a.db else "sqlite"
        print(f"{backend}: {a.n} jobs, {a.threads} runner threads: {secs:.2f} s, {a.n / secs:.0f} jobs/s")
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
