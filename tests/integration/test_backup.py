"""Continuous backup and point-in-time restore of the embedded database (ADR 0011,
docs/backups.md): the recovery drill of issue 15, the litestream failure modes
(a checkpoint while shipping is stopped, retention during a restore), encryption
errors, and the metrics."""
import fcntl
import glob
import os
import re
import shutil
import sqlite3
import subprocess
import threading
import time
from datetime import datetime, timezone

import requests

from conftest import BIN, Client, Server, make_superuser, sqlite_only

pytestmark = sqlite_only("backs up the embedded SQLite file")


def rfc3339(t):
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def setup_collection(admin):
    r = admin.post("/api/collections", json={
        "name": "events", "createRule": "", "listRule": "", "viewRule": "",
        "fields": [{"name": "seq", "type": "text", "required": True}]})
    assert r.status_code == 200, r.text


def start(tmp, backup_dir, *extra):
    data = os.path.join(tmp, "data")
    os.makedirs(data, exist_ok=True)
    make_superuser(data)
    srv = Server(data, [f"--backup-dir={backup_dir}", *extra]).start()
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", "admin@example.com", "admin-password-1")
    return srv, admin


def complete_generations(backup_dir):
    return sorted(os.path.basename(os.path.dirname(p))
                  for p in glob.glob(os.path.join(backup_dir, "generations", "*", "generation.json")))


def wait_for(cond, timeout=15, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def restore(backup_dir, to_dir, to="latest", key=None, expect_ok=True):
    args = [BIN, "restore", f"--from={backup_dir}", f"--dir={to_dir}", f"--to={to}"]
    if key:
        args.append(f"--backup-key={key}")
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if expect_ok:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def seqs_in(data_dir):
    db = sqlite3.connect(os.path.join(data_dir, "data.db"))
    try:
        return {r[0] for r in db.execute("SELECT seq FROM events")}
    finally:
        db.close()


class Writers:
    """Threads that create records and remember when each was sent and acknowledged."""

    def __init__(self, url, n=4):
        self.url = url
        self.acked = []  # (seq, sent, acked)
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.pause_ev = threading.Event()
        self.idle = [threading.Event() for _ in range(n)]
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(n)]

    def run(self, n):
        s = requests.Session()
        i = 0
        while not self.stop_ev.is_set():
            if self.pause_ev.is_set():
                self.idle[n].set()
                time.sleep(0.01)
                continue
            self.idle[n].clear()
            seq = f"w{n}-{i}"
            i += 1
            sent = time.time()
            try:
                r = s.post(self.url + "/api/collections/events/records", json={"seq": seq}, timeout=5)
            except requests.RequestException:
                return
            if r.status_code == 200:
                with self.lock:
                    self.acked.append((seq, sent, time.time()))

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def pause(self):
        self.pause_ev.set()
        for e in self.idle:
            e.wait(10)

    def resume(self):
        for e in self.idle:
            e.clear()
        self.pause_ev.clear()

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join()


def test_recovery_latest_and_point_in_time(tmpdir_path):
    bdir = os.path.join(tmpdir_path, "backup")
    srv, admin = start(tmpdir_path, bdir, "--backup-interval=2")
    setup_collection(admin)
    w = Writers(srv.url).start()
    # The first snapshot is taken while the writers run; later ones too (every 2 s).
    wait_for(lambda: complete_generations(bdir), what="a first snapshot")
    time.sleep(1.5)
    # A quiet moment to restore to: everything before it is acknowledged, everything
    # after it is sent after it.
    w.pause()
    before = {s for s, _, _ in w.acked}
    time.sleep(0.3)
    moment = time.time()
    time.sleep(0.3)
    w.resume()
    time.sleep(2.5)
    srv.kill()
    loss = time.time()
    w.stop()
    shutil.rmtree(srv.dir)
    acked = w.acked
    assert len(acked) > 200 and len(before) > 50
    assert len(complete_generations(bdir)) >= 2

    latest = os.path.join(tmpdir_path, "r-latest")
    out = restore(bdir, latest)
    assert "integrity_check: ok" in out.stdout
    assert re.search(r"events\s+\d+ rows", out.stdout), out.stdout
    got = seqs_in(latest)
    must = {s for s, _, a in acked if a < loss - 1}
    missing = must - got
    assert not missing, f"{len(missing)} writes acknowledged more than 1 s before the loss are missing"
    # Nothing that was never sent.
    assert got <= {s for s, _, _ in acked} | {s for s, _, _ in acked}

    pit = os.path.join(tmpdir_path, "r-pit")
    restore(bdir, pit, to=rfc3339(moment))
    assert seqs_in(pit) == before
