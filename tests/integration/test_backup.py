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

from conftest import BIN, Client, Server, define_collection, make_superuser, sqlite_only

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


def external_insert(data_dir, seqs, checkpoint=True):
    """Another process writes the file and checkpoints it, resetting the WAL: what
    litestream calls a checkpoint while shipping is stopped."""
    db = sqlite3.connect(os.path.join(data_dir, "data.db"), timeout=10)
    cols = [r[1] for r in db.execute("PRAGMA table_info(events)")]
    for s in seqs:
        row = {c: "" for c in cols}
        row.update(id=("x" + s).ljust(15, "0")[:15], seq=s, created="2026-01-01 00:00:00.000Z",
                   updated="2026-01-01 00:00:00.000Z")
        db.execute(f"INSERT INTO events ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                   [row[c] for c in cols])
    db.commit()
    if checkpoint:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    db.close()


def metric(url, name):
    text = requests.get(url + "/metrics", timeout=5).text
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_checkpoint_while_shipping_stopped_starts_a_new_generation(tmpdir_path):
    bdir = os.path.join(tmpdir_path, "backup")
    srv, admin = start(tmpdir_path, bdir)
    setup_collection(admin)
    for i in range(20):
        assert admin.post("/api/collections/events/records", json={"seq": f"a{i}"}).status_code == 200
    wait_for(lambda: complete_generations(bdir), what="a first snapshot")
    time.sleep(0.5)
    first_phase_end = time.time()
    time.sleep(0.3)
    assert srv.stop() == 0
    gens_before = complete_generations(bdir)
    # Shipping is stopped; another process writes and checkpoints.
    external_insert(srv.dir, [f"x{i}" for i in range(10)])
    srv.start()
    admin.url = srv.url
    for i in range(20):
        assert admin.post("/api/collections/events/records", json={"seq": f"b{i}"}).status_code == 200
    # While shipping runs: another process writes and truncates the WAL under it.
    wait_for(lambda: len(complete_generations(bdir)) > len(gens_before), what="a new generation after restart")
    gen_count = metric(srv.url, "basalt_backup_generation")
    external_insert(srv.dir, [f"y{i}" for i in range(10)])
    for i in range(20):
        assert admin.post("/api/collections/events/records", json={"seq": f"c{i}"}).status_code == 200
    wait_for(lambda: metric(srv.url, "basalt_backup_generation") > gen_count, what="a generation after the reset")
    time.sleep(1.5)
    srv.kill()
    shutil.rmtree(srv.dir)
    latest = os.path.join(tmpdir_path, "r-latest")
    restore(bdir, latest)
    want = {f"{p}{i}" for p in "abc" for i in range(20)} | {f"{p}{i}" for p in "xy" for i in range(10)}
    assert seqs_in(latest) == want
    early = os.path.join(tmpdir_path, "r-early")
    restore(bdir, early, to=rfc3339(first_phase_end))
    assert seqs_in(early) == {f"a{i}" for i in range(20)}


def gen_dirs(bdir):
    return sorted(os.listdir(os.path.join(bdir, "generations")))


def test_retention_never_deletes_what_a_restore_reads(tmpdir_path):
    bdir = os.path.join(tmpdir_path, "backup")
    srv, admin = start(tmpdir_path, bdir, "--backup-interval=1", "--backup-retention-seconds=2")
    setup_collection(admin)
    stop = threading.Event()

    def write():
        i = 0
        while not stop.is_set():
            admin.post("/api/collections/events/records", json={"seq": f"r{i}"})
            i += 1
            time.sleep(0.02)

    t = threading.Thread(target=write)
    t.start()
    try:
        wait_for(lambda: len(complete_generations(bdir)) >= 3, what="three generations")
        # Retention runs: old generations go.
        oldest = gen_dirs(bdir)[0]
        wait_for(lambda: oldest not in gen_dirs(bdir), what="retention to delete the oldest generation")
        # A restore holds the target's shared lock while it reads (as `basalt restore`
        # does): nothing is deleted meanwhile, however old.
        with open(os.path.join(bdir, ".lock"), "r+") as lk:
            fcntl.flock(lk, fcntl.LOCK_SH)
            held = gen_dirs(bdir)
            time.sleep(4)
            assert set(held) <= set(gen_dirs(bdir)), "retention deleted a generation during a restore"
            fcntl.flock(lk, fcntl.LOCK_UN)
        wait_for(lambda: held[0] not in gen_dirs(bdir), what="retention to resume")
        # Real restores while retention and new generations run: every one succeeds.
        for k in range(6):
            d = os.path.join(tmpdir_path, f"r{k}")
            out = restore(bdir, d)
            assert "integrity_check: ok" in out.stdout
            assert len(seqs_in(d)) > 0
    finally:
        stop.set()
        t.join()
    assert srv.stop() == 0


def test_encryption_wrong_key_tampered_and_other_errors(tmpdir_path):
    bdir = os.path.join(tmpdir_path, "backup")
    key = os.path.join(tmpdir_path, "key")
    with open(key, "w") as f:
        f.write("k" * 16 + "0123456789abcdef0123456789abcdef\n")
    wrong = os.path.join(tmpdir_path, "wrong")
    with open(wrong, "w") as f:
        f.write("w" * 48)
    srv, admin = start(tmpdir_path, bdir, f"--backup-key={key}")
    setup_collection(admin)
    for i in range(30):
        assert admin.post("/api/collections/events/records", json={"seq": f"e{i}"}).status_code == 200
    wait_for(lambda: complete_generations(bdir), what="a snapshot")
    time.sleep(1)
    assert srv.stop() == 0
    # Nothing readable in the target.
    for p in glob.glob(os.path.join(bdir, "generations", "*", "**"), recursive=True):
        if os.path.isfile(p):
            with open(p, "rb") as f:
                head = f.read(16)
            assert head.startswith(b"BSENC001"), p
    ok = os.path.join(tmpdir_path, "ok")
    restore(bdir, ok, key=key)
    assert seqs_in(ok) == {f"e{i}" for i in range(30)}

    out = restore(bdir, os.path.join(tmpdir_path, "nokey"), expect_ok=False)
    assert out.returncode == 1 and "encrypted" in out.stderr and "--backup-key" in out.stderr
    out = restore(bdir, os.path.join(tmpdir_path, "wrongkey"), key=wrong, expect_ok=False)
    assert out.returncode == 1 and "wrong backup key" in out.stderr
    # Refuses a folder that is not empty.
    out = restore(bdir, ok, key=key, expect_ok=False)
    assert out.returncode == 1 and "not empty" in out.stderr
    # Before the first backup.
    out = restore(bdir, os.path.join(tmpdir_path, "early"), to="2001-01-01T00:00:00Z", key=key, expect_ok=False)
    assert out.returncode == 1 and "before the first backup" in out.stderr
    out = restore(bdir, os.path.join(tmpdir_path, "badtime"), to="yesterday", key=key, expect_ok=False)
    assert out.returncode == 1 and "RFC 3339" in out.stderr
    # A flipped byte in a segment, then a truncated snapshot.
    seg = sorted(glob.glob(os.path.join(bdir, "generations", "*", "wal", "*.seg")))[-1]
    data = bytearray(open(seg, "rb").read())
    data[len(data) // 2] ^= 1
    open(seg, "wb").write(bytes(data))
    out = restore(bdir, os.path.join(tmpdir_path, "tampered"), key=key, expect_ok=False)
    assert out.returncode == 1 and "altered" in out.stderr, out.stderr
    data[len(data) // 2] ^= 1
    open(seg, "wb").write(bytes(data))
    snap = sorted(glob.glob(os.path.join(bdir, "generations", "*", "snapshot.db")))[-1]
    size = os.path.getsize(snap)
    with open(snap, "r+b") as f:
        f.truncate(size - 100)
    out = restore(bdir, os.path.join(tmpdir_path, "truncated"), key=key, expect_ok=False)
    assert out.returncode == 1 and "truncated" in out.stderr, out.stderr
    # No backup at all.
    empty = os.path.join(tmpdir_path, "empty")
    os.makedirs(empty)
    out = restore(empty, os.path.join(tmpdir_path, "none"), expect_ok=False)
    assert out.returncode == 1 and "no complete backup" in out.stderr
    # The server refuses to start with another key on the same target.
    data_dir = os.path.join(tmpdir_path, "data")
    out = subprocess.run([BIN, "serve", "--http=127.0.0.1:0", f"--dir={data_dir}", f"--backup-dir={bdir}",
                          f"--backup-key={wrong}"], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "wrong backup key" in out.stderr


def test_unencrypted_segment_tampering_is_caught_by_the_checksum_chain(tmpdir_path):
    bdir = os.path.join(tmpdir_path, "backup")
    srv, admin = start(tmpdir_path, bdir)
    setup_collection(admin)
    gen = wait_for(lambda: complete_generations(bdir), what="a snapshot")[-1]
    wal = os.path.join(bdir, "generations", gen, "wal")

    def segments():
        return sorted(glob.glob(os.path.join(wal, "*.seg")))
    # Three rounds of writes, each shipped before the next: at least three segments
    # after the snapshot, so one can be taken from the middle below.
    for r in range(3):
        before = len(segments())
        for i in range(4):
            assert admin.post("/api/collections/events/records", json={"seq": f"u{r}-{i}"}).status_code == 200
        wait_for(lambda: len(segments()) > before, what=f"round {r} shipped")
    assert srv.stop() == 0
    seg = segments()[-1]
    data = bytearray(open(seg, "rb").read())
    data[-10] ^= 0x40
    open(seg, "wb").write(bytes(data))
    out = restore(bdir, os.path.join(tmpdir_path, "t"), expect_ok=False)
    assert out.returncode == 1 and "checksum" in out.stderr, out.stderr
    # A missing segment in the middle is a gap, not a silent loss.
    data[-10] ^= 0x40
    open(seg, "wb").write(bytes(data))
    segs = segments()
    assert len(segs) >= 3, segs
    os.remove(segs[len(segs) // 2])
    out = restore(bdir, os.path.join(tmpdir_path, "gap"), expect_ok=False)
    assert out.returncode == 1 and "broken" in out.stderr, out.stderr


def test_backup_metrics_present_and_moving(tmpdir_path):
    bdir = os.path.join(tmpdir_path, "backup")
    srv, admin = start(tmpdir_path, bdir, "--backup-verify-interval=1")
    setup_collection(admin)
    names = ["basalt_backup_last_success_timestamp_seconds", "basalt_backup_last_verified_timestamp_seconds",
             "basalt_backup_verify_failures_total", "basalt_backup_lag_seconds", "basalt_backup_generation"]
    for n in names:
        assert metric(srv.url, n) is not None, n
    wait_for(lambda: metric(srv.url, "basalt_backup_last_verified_timestamp_seconds") > 0, what="a verification")
    assert metric(srv.url, "basalt_backup_generation") >= 1
    s1 = metric(srv.url, "basalt_backup_last_success_timestamp_seconds")
    v1 = metric(srv.url, "basalt_backup_last_verified_timestamp_seconds")
    time.sleep(0.2)
    assert admin.post("/api/collections/events/records", json={"seq": "m"}).status_code == 200
    wait_for(lambda: metric(srv.url, "basalt_backup_last_success_timestamp_seconds") > s1, what="shipping")
    wait_for(lambda: metric(srv.url, "basalt_backup_last_verified_timestamp_seconds") > v1, what="re-verification")
    assert metric(srv.url, "basalt_backup_verify_failures_total") == 0
    assert metric(srv.url, "basalt_backup_lag_seconds") < 5
    # A broken target: verification fails and says so.
    for p in glob.glob(os.path.join(bdir, "generations", "*", "wal", "*.seg")):
        with open(p, "r+b") as f:
            f.seek(-10, os.SEEK_END)
            f.write(b"\xff" * 4)
    wait_for(lambda: metric(srv.url, "basalt_backup_verify_failures_total") > 0, what="a failed verification")
    assert srv.stop() == 0


def test_backups_api(tmpdir_path):
    data = os.path.join(tmpdir_path, "data")
    os.makedirs(data)
    make_superuser(data)
    srv = Server(data).start()
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", "admin@example.com", "admin-password-1")
    setup_collection(admin)
    r = define_collection(admin, {"name": "users", "type": "auth", "createRule": "", "fields": []})
    assert r.status_code == 200, r.text
    r = admin.post("/api/collections/users/records",
                   json={"email": "u@example.com", "password": "user-password-1", "passwordConfirm": "user-password-1"})
    assert r.status_code == 200, r.text
    user = Client(srv.url)
    user.token = user.login("users", "u@example.com", "user-password-1")
    anon = Client(srv.url)
    for i in range(5):
        assert admin.post("/api/collections/events/records", json={"seq": f"before{i}"}).status_code == 200

    # Superusers only.
    assert anon.get("/api/backups").status_code == 401
    assert user.get("/api/backups").status_code == 403
    assert user.post("/api/backups", json={}).status_code == 403
    assert user.delete("/api/backups/x.zip").status_code == 403
    # Any signed-in record gets file tokens (PocketBase's /api/files/token), but only a
    # superuser's opens a backup (below).
    user_file_token = user.post("/api/files/token").json()["token"]

    assert admin.get("/api/backups").json() == []
    r = admin.post("/api/backups", json={"name": "first.zip"})
    assert r.status_code == 204, r.text
    r = admin.post("/api/backups", json={"name": "../evil.zip"})
    assert r.status_code == 400 and "name" in r.json()["data"]
    r = admin.post("/api/backups", json={"name": "first.zip"})
    assert r.status_code == 400
    assert admin.post("/api/backups", json={}).status_code == 204  # a generated name
    items = admin.get("/api/backups").json()
    keys = {i["key"] for i in items}
    assert "first.zip" in keys and len(keys) == 2
    assert all(i["size"] > 0 and re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z", i["modified"]) for i in items)

    # Download with a superuser's file token; none, a user's auth token, or rubbish: 403.
    tok = admin.post("/api/files/token").json()["token"]
    r = anon.get("/api/backups/first.zip", params={"token": tok})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    zipped = r.content
    assert zipped[:2] == b"PK"
    assert anon.get("/api/backups/first.zip").status_code == 403
    assert anon.get("/api/backups/first.zip", params={"token": admin.token}).status_code == 403
    assert anon.get("/api/backups/first.zip", params={"token": user.token}).status_code == 403
    assert anon.get("/api/backups/first.zip", params={"token": user_file_token}).status_code == 403
    assert anon.get("/api/backups/nothere.zip", params={"token": tok}).status_code == 404
    assert anon.get("/api/backups/..%2Fdata.db", params={"token": tok}).status_code in (400, 404)

    # Upload: the downloaded archive under another name; a non-zip is refused.
    r = admin.post("/api/backups/upload", files={"file": ("uploaded.zip", zipped, "application/zip")})
    assert r.status_code == 204, r.text
    r = admin.post("/api/backups/upload", files={"file": ("junk.zip", b"not a zip", "application/zip")})
    assert r.status_code == 400
    r = admin.post("/api/backups/upload", files={"file": ("bad name.zip", zipped, "application/zip")})
    assert r.status_code == 400
    assert user.post("/api/backups/upload", files={"file": ("u.zip", zipped, "application/zip")}).status_code == 403
    assert "uploaded.zip" in {i["key"] for i in admin.get("/api/backups").json()}

    # Delete.
    assert admin.delete("/api/backups/uploaded.zip").status_code == 204
    assert admin.delete("/api/backups/uploaded.zip").status_code == 404
    assert "uploaded.zip" not in {i["key"] for i in admin.get("/api/backups").json()}

    # Restore: later writes disappear, the process restarts by itself on its port.
    for i in range(5):
        assert admin.post("/api/collections/events/records", json={"seq": f"after{i}"}).status_code == 200
    pid = srv.proc.pid
    assert admin.post("/api/backups/nothere.zip/restore").status_code == 404
    assert user.post("/api/backups/first.zip/restore").status_code == 403
    r = admin.post("/api/backups/first.zip/restore")
    assert r.status_code == 204, r.text

    def back():
        try:
            return requests.get(srv.url + "/api/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    time.sleep(0.5)
    wait_for(back, timeout=30, what="the server to come back after the restore")
    assert srv.proc.poll() is None and srv.proc.pid == pid
    admin2 = Client(srv.url)
    admin2.token = admin2.login("_superusers", "admin@example.com", "admin-password-1")
    got = {x["seq"] for x in admin2.get("/api/collections/events/records", params={"perPage": 100}).json()["items"]}
    assert got == {f"before{i}" for i in range(5)}
    assert glob.glob(os.path.join(data, ".pre-restore-*", "data.db")), "the previous database was not kept"
    assert srv.stop() == 0


def test_writes_during_a_snapshot_are_in_the_latest_restore(tmpdir_path):
    """A large database's snapshot takes seconds; the commits made meanwhile must not
    depend on it: they also go to the previous generation until it completes."""
    bdir = os.path.join(tmpdir_path, "backup")
    srv, admin = start(tmpdir_path, bdir)
    setup_collection(admin)
    assert srv.stop() == 0
    db = sqlite3.connect(os.path.join(srv.dir, "data.db"))
    cols = [r[1] for r in db.execute("PRAGMA table_info(events)")]
    rows = []
    for i in range(60000):
        v = {c: "" for c in cols}
        v.update(id=f"{i:015d}", seq="bulk" + str(i) + "x" * 900, created="2026-01-01 00:00:00.000Z",
                 updated="2026-01-01 00:00:00.000Z")
        rows.append([v[c] for c in cols])
    db.executemany(f"INSERT INTO events ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})", rows)
    db.commit()
    db.close()
    before = set(gen_dirs(bdir))
    srv = Server(srv.dir, [f"--backup-dir={bdir}", "--backup-interval=1"]).start()
    w = Writers(srv.url, n=2).start()
    try:
        # The restart's own generation first (its snapshot has no continuous
        # predecessor), then the next one, whose snapshot runs while the writers go on.
        wait_for(lambda: set(complete_generations(bdir)) - before, timeout=60, what="the restart's generation")

        def in_second_snapshot():
            gens, done = gen_dirs(bdir), complete_generations(bdir)
            return bool(set(done) - before) and gens[-1] not in done and gens[-1] not in before

        wait_for(in_second_snapshot, timeout=60, what="a snapshot in progress after a complete generation")
        # Writes go on for longer than the RPO window; whether the snapshot is still
        # running at the kill depends on the machine's speed, and either way every
        # write acknowledged more than 1 s before the loss must be restored.
        time.sleep(1.5)
    finally:
        if srv.proc.poll() is None:  # also when an assertion above failed: no server left behind
            srv.kill()
    loss = time.time()
    w.stop()
    shutil.copy(os.path.join(srv.dir, "server.log"), os.path.join(tmpdir_path, "server.log"))
    shutil.rmtree(srv.dir)
    out = os.path.join(tmpdir_path, "r")
    restore(bdir, out)
    got = seqs_in(out)
    must = {s for s, _, a in w.acked if a < loss - 1}
    assert len(must) > 20
    missing = must - got
    assert not missing, f"{len(missing)} of {len(must)} writes made during the snapshot are missing"


def test_restart_continues_the_generation_when_the_log_proves_it(tmpdir_path):
    """A clean stop or a crash leaves the WAL (no checkpoint on close): the next start
    proves that the log continues what was shipped and goes on without a new snapshot."""
    bdir = os.path.join(tmpdir_path, "backup")
    # The request log off: its flush (a write a second) can reset the WAL just before
    # the kill, after a checkpoint, with the new log's first frames not shipped yet;
    # then continuity cannot be proven and a new generation is the right answer.
    srv, admin = start(tmpdir_path, bdir, "--logs-max-days=0")
    setup_collection(admin)
    for i in range(10):
        assert admin.post("/api/collections/events/records", json={"seq": f"p{i}"}).status_code == 200
    wait_for(lambda: complete_generations(bdir), what="a snapshot")
    time.sleep(0.5)
    gens = gen_dirs(bdir)
    assert srv.stop() == 0
    srv.start()
    admin.url = srv.url
    for i in range(10):
        assert admin.post("/api/collections/events/records", json={"seq": f"q{i}"}).status_code == 200
    time.sleep(1.2)
    srv.kill()  # a crash this time
    srv.start()
    admin.url = srv.url
    for i in range(10):
        assert admin.post("/api/collections/events/records", json={"seq": f"s{i}"}).status_code == 200
    time.sleep(1.2)
    assert gen_dirs(bdir) == gens, "a restart took a new snapshot although the log continued the backup"
    log = open(os.path.join(srv.dir, "server.log")).read()
    assert log.count("continuing generation") == 2
    srv.kill()
    shutil.rmtree(srv.dir)
    out = os.path.join(tmpdir_path, "r")
    restore(bdir, out)
    assert seqs_in(out) == {f"{p}{i}" for p in "pqs" for i in range(10)}


def test_restoring_an_archive_that_expands_past_the_disk_is_refused(tmpdir_path, monkeypatch):
    """A zip bomb (or a backup bigger than the disk) uploaded and restored: extraction
    stops at what the disk can take (free space less a reserve; lowered here with
    BASALT_RESTORE_MAX_BYTES), the answer says why, and the live database stays."""
    import io
    import zipfile
    monkeypatch.setenv("BASALT_RESTORE_MAX_BYTES", str(8 << 20))
    srv, admin = start(tmpdir_path, os.path.join(tmpdir_path, "backup"))
    try:
        setup_collection(admin)
        assert admin.post("/api/collections/events/records", json={"seq": "kept"}).status_code == 200
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("data.db", b"\0" * (64 << 20))  # 64 MiB of zeros: a few dozen KiB zipped
        assert len(buf.getvalue()) < (1 << 20)
        r = admin.post("/api/backups/upload", files={"file": ("bomb.zip", buf.getvalue(), "application/zip")})
        assert r.status_code == 204, r.text
        r = admin.post("/api/backups/bomb.zip/restore")
        assert r.status_code == 400, r.text
        assert "expands to more than" in r.json()["message"]
        assert not os.path.exists(os.path.join(srv.dir, ".pending-restore"))
        assert not os.path.exists(os.path.join(srv.dir, ".pending-restore.tmp"))
        items = admin.get("/api/collections/events/records").json()["items"]
        assert [i["seq"] for i in items] == ["kept"]
    finally:
        srv.stop()
