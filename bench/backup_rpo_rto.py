#!/usr/bin/env python3
"""RPO and RTO of the continuous backup for a large database (docs/reliability.md).

Builds a database of about --gb GiB in Basalt's format (a collection made through the
API, its rows inserted straight into the file while the server is stopped), starts
Basalt with --backup-dir, and measures:
  - the first snapshot of the whole database (time until generation.json appears);
  - shipping lag under write load (basalt_backup_lag_seconds sampled every 100 ms,
    and the age of the newest acknowledged write missing from a restore);
  - restore time (RTO): `basalt restore --to=latest` of the whole database after
    kill -9, then the server's start on the restored folder.
Measures, never asserts. Everything on 127.0.0.1 under a temporary folder.
Usage: bench/backup_rpo_rto.py [--gb 1] [--seconds 20] [--keep]"""
import argparse
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.environ.get("BASALT_BIN", os.path.join(HERE, "..", "build", "basalt"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from conftest import Client, Server, make_superuser  # noqa: E402


def metric(url, name):
    m = re.search(rf"^{name} (\S+)$", requests.get(url + "/metrics", timeout=5).text, re.M)
    return float(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="basalt-rpo-")
    data, bdir = os.path.join(root, "data"), os.path.join(root, "backup")
    os.makedirs(data)
    make_superuser(data)
    srv = Server(data).start()
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", "admin@example.com", "admin-password-1")
    r = admin.post("/api/collections", json={"name": "bulk", "createRule": "", "listRule": "",
                                             "fields": [{"name": "body", "type": "text"}]})
    assert r.status_code == 200, r.text
    srv.stop()
    t0 = time.time()
    db = sqlite3.connect(os.path.join(data, "data.db"))
    db.execute("PRAGMA journal_mode=WAL")
    cols = [c[1] for c in db.execute("PRAGMA table_info(bulk)")]
    rows = int(a.gb * (1 << 30) / 1100)
    body = "x" * 1000
    batch = []
    for i in range(rows):
        v = {c: "" for c in cols}
        v.update(id=f"{i:015d}", body=body + str(i), created="2026-01-01 00:00:00.000Z",
                 updated="2026-01-01 00:00:00.000Z")
        batch.append([v[c] for c in cols])
        if len(batch) == 20000:
            db.executemany(f"INSERT INTO bulk ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})", batch)
            db.commit()
            batch = []
    if batch:
        db.executemany(f"INSERT INTO bulk ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})", batch)
        db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    size = os.path.getsize(os.path.join(data, "data.db"))
    print(f"database: {size / 1e9:.2f} GB, {rows} rows, built in {time.time() - t0:.0f} s")

    t0 = time.time()
    srv = Server(data, [f"--backup-dir={bdir}", "--backup-verify-interval=86400"]).start()
    start_s = time.time() - t0
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", "admin@example.com", "admin-password-1")
    stop = threading.Event()
    acked, lock = [], threading.Lock()

    def writer(n):
        s = requests.Session()
        i = 0
        while not stop.is_set():
            try:
                r = s.post(srv.url + "/api/collections/bulk/records", json={"body": f"w{n}-{i}"}, timeout=10)
            except requests.RequestException:
                return
            if r.status_code == 200:
                with lock:
                    acked.append((r.json()["id"], time.time()))
            i += 1

    lags_snap, lags = [], []
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(a.writers)]
    for t in threads:
        t.start()
    gen = lambda: [g for g in os.listdir(os.path.join(bdir, "generations"))
                   if os.path.exists(os.path.join(bdir, "generations", g, "generation.json"))] \
        if os.path.isdir(os.path.join(bdir, "generations")) else []
    while not gen():
        lags_snap.append(metric(srv.url, "basalt_backup_lag_seconds"))
        time.sleep(0.1)
    snap_s = time.time() - t0
    end = time.time() + a.seconds
    while time.time() < end:
        lags.append(metric(srv.url, "basalt_backup_lag_seconds"))
        time.sleep(0.1)
    srv.kill()
    loss = time.time()
    stop.set()
    for t in threads:
        t.join()
    writes = len(acked)
    lags.sort()
    print(f"server start with backup on: {start_s:.2f} s; first snapshot of {size / 1e9:.2f} GB done after "
          f"{snap_s:.1f} s (under load, {a.writers} writers)")
    print(f"shipping lag during the snapshot: max {max(lags_snap):.3f} s over {len(lags_snap)} samples")
    print(f"shipping lag after: median {lags[len(lags) // 2]:.3f} s, p99 {lags[int(len(lags) * .99)]:.3f} s, "
          f"max {lags[-1]:.3f} s over {len(lags)} samples; {writes} writes acknowledged in all")

    for line in open(os.path.join(data, "server.log"), errors="replace"):
        if '"module":"backup"' in line and "snapshot of" in line:
            print("server:", line.strip()[:200])
    shutil.rmtree(data)
    out = os.path.join(root, "restored")
    t0 = time.time()
    p = subprocess.run([BIN, "restore", f"--from={bdir}", f"--dir={out}"], capture_output=True, text=True)
    restore_s = time.time() - t0
    assert p.returncode == 0, p.stderr
    db = sqlite3.connect(os.path.join(out, "data.db"))
    have = {r[0] for r in db.execute("SELECT id FROM bulk WHERE body GLOB 'w*'")}
    db.close()
    missing = [t for i, t in acked if i not in have]
    rpo = (loss - min(missing)) if missing else 0.0
    t0 = time.time()
    srv2 = Server(out).start()
    serve_s = time.time() - t0
    srv2.stop()
    print(f"restore (integrity_check and counts included): {restore_s:.1f} s; server ready on it after "
          f"{serve_s:.2f} s more: RTO {restore_s + serve_s:.1f} s")
    print(f"acknowledged writes missing after the restore: {len(missing)} (RPO {rpo:.3f} s)")
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print("kept", root)


if __name__ == "__main__":
    main()
