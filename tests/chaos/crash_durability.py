#!/usr/bin/env python3
"""Crash durability in the style of Jepsen's lost-write checks.

Writers create records with unique ids and log which creates were acknowledged
(200), which were refused, and which are in doubt (the connection broke before an
answer). The server is SIGKILLed at random moments, KILLS times, and restarted on
the same data. At the end every record is read back and the report counts:
  lost        acknowledged writes that are missing         (must be 0)
  unexpected  stored ids that no writer ever sent          (must be 0)
  duplicated  ids stored more than once                    (must be 0)
  in doubt    unanswered writes: how many were recovered
plus the time from restart to healthy and SQLite's integrity_check.

Usage: crash_durability.py [KILLS] [--json FILE]; exits non-zero on any violation.
With BASALT_TEST_BACKEND=postgres (and the tests' PostgreSQL, scripts/pg-env.sh) the
server runs on PostgreSQL through PgBouncer, and only Basalt is killed; CRASH_DIRECT_WRITER=1
puts its writer on the direct URL of --db-listen (--db-writer).
"""
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from conftest import BACKEND, BIN, db_args, free_port  # noqa: E402

KILLS = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 20
WRITERS = 8


def server_db_args(d):
    """db_args(d), plus with CRASH_DIRECT_WRITER=1 the writer on the direct URL that
    --db-listen names (--db-writer, ADR 0018)."""
    args = db_args(d)
    if os.environ.get("CRASH_DIRECT_WRITER") == "1":
        args += ["--db-writer=" + a.split("=", 1)[1] for a in args if a.startswith("--db-listen=")]
    return args


def start(d, port):
    p = subprocess.Popen([BIN, "serve", f"--http=127.0.0.1:{port}", f"--dir={d}", "--threads=2", *server_db_args(d),
                          "--log-level=warn", "--rate-limit-anon=0", "--rate-limit-user=0", "--rate-limit-burst=0",
                          "--rate-limit-auth=0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while time.time() - t0 < 20:
        try:
            if requests.get(f"http://127.0.0.1:{port}/api/health", timeout=0.5).status_code == 200:
                return p, time.time() - t0
        except requests.RequestException:
            time.sleep(0.01)
    raise RuntimeError("server did not become healthy")


def main():
    d = tempfile.mkdtemp(prefix="basalt-crash-")
    subprocess.run([BIN, "superuser", "upsert", "c@example.com", "crash-password-1", f"--dir={d}", *db_args(d)],
                   check=True, capture_output=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc, _ = start(d, port)
    tok = requests.post(url + "/api/collections/_superusers/auth-with-password",
                        json={"identity": "c@example.com", "password": "crash-password-1"}).json()["token"]
    r = requests.post(url + "/api/collections", headers={"Authorization": tok}, json={
        "name": "writes", "createRule": "", "listRule": "", "viewRule": "",
        "fields": [{"name": "writer", "type": "number"}, {"name": "seq", "type": "number"}]})
    assert r.status_code == 200, r.text
    acked, refused, doubt = set(), set(), set()
    lock = threading.Lock()
    stop = threading.Event()
    counters = [0] * WRITERS

    def writer(n):
        s = requests.Session()
        while not stop.is_set():
            i = counters[n]
            counters[n] += 1
            rid = f"w{n:02d}x{i:011d}"
            try:
                resp = s.post(url + "/api/collections/writes/records", json={"id": rid, "writer": n, "seq": i},
                              timeout=5)
                with lock:
                    (acked if resp.status_code == 200 else refused).add(rid)
            except requests.RequestException:
                with lock:
                    doubt.add(rid)
                time.sleep(0.02)
                s = requests.Session()

    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(WRITERS)]
    for t in threads:
        t.start()
    recoveries = []
    rng = random.Random(int(os.environ.get("CRASH_SEED", "1")))
    for _ in range(KILLS):
        time.sleep(rng.uniform(0.2, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc, took = start(d, port)
        recoveries.append(took)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    # Read everything back through the API.
    stored = []
    page = 1
    while True:
        res = requests.get(url + "/api/collections/writes/records",
                           params={"page": page, "perPage": 1000, "fields": "id", "sort": "@rowid"}).json()
        stored += [x["id"] for x in res["items"]]
        if page >= res["totalPages"]:
            break
        page += 1
    proc.send_signal(signal.SIGTERM)
    clean_exit = proc.wait(timeout=20)
    if BACKEND == "sqlite":
        con = sqlite3.connect(os.path.join(d, "data.db"))
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
        con.close()
    else:
        integrity = "ok"  # PostgreSQL was not killed; its own recovery is not under test here
    stored_set = set(stored)
    sent = acked | refused | doubt
    report = {
        "backend": BACKEND,
        "kills": KILLS,
        "writers": WRITERS,
        "acknowledged": len(acked),
        "refused": len(refused),
        "in_doubt": len(doubt),
        "in_doubt_recovered": len(doubt & stored_set),
        "lost": len(acked - stored_set),
        "unexpected": len(stored_set - sent),
        "duplicated": len(stored) - len(stored_set),
        "restart_to_healthy_ms": {"max": round(max(recoveries) * 1000, 1),
                                  "mean": round(sum(recoveries) / len(recoveries) * 1000, 1)},
        "integrity_check": integrity,
        "clean_exit_after": clean_exit,
    }
    print(json.dumps(report, indent=2))
    if "--json" in sys.argv:
        with open(sys.argv[sys.argv.index("--json") + 1], "w") as f:
            json.dump(report, f, indent=2)
    shutil.rmtree(d, ignore_errors=True)
    ok = (report["lost"] == 0 and report["unexpected"] == 0 and report["duplicated"] == 0 and integrity == "ok"
          and clean_exit == 0 and report["acknowledged"] > 0)
    print("1 passed, 0 failed" if ok else "0 passed, 1 failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
