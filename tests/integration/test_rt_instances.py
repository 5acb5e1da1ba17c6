"""Realtime across instances and restarts through the `_events` outbox (ADR 0006):
two Basalt processes on the same PostgreSQL database (skipped without
BASALT_TEST_PG_URL), and one on SQLite killed right after a write."""
import hashlib
import json
import os
import subprocess
import threading
import time

import pytest

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, BIN, Client, Server, sqlite_only
from rtclient import SSE, WS
from test_realtime import records_of, setup_world, subscribe

PG_URL = os.environ.get("BASALT_TEST_PG_URL")
# The pairs run in the PostgreSQL suite (make test also runs the suite on SQLite,
# where BASALT_TEST_PG_URL is set too: once is enough for two minutes of pairs).
needs_pg = pytest.mark.skipif(not PG_URL or os.environ.get("BASALT_TEST_BACKEND") != "postgres",
                              reason="needs the PostgreSQL suite (BASALT_TEST_BACKEND=postgres, "
                                     "BASALT_TEST_PG_URL): two instances share one PostgreSQL database")


def psql(url, sql):
    out = subprocess.run(["psql", url, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def shared_db(data_dir):
    """A fresh database for this test and the --db flags every instance on it uses:
    through PgBouncer when there is one, as the suites do; LISTEN goes direct."""
    name = "bti_" + hashlib.sha1(os.path.abspath(data_dir).encode()).hexdigest()[:20]
    psql(PG_URL, f"CREATE DATABASE {name}")
    direct = PG_URL.rsplit("/", 1)[0] + "/" + name
    pgb = os.environ.get("BASALT_TEST_PGB_URL")
    via = pgb.rsplit("/", 1)[0] + "/" + name if pgb else direct
    return direct, [f"--db={via}", f"--db-listen={direct}"]


class Pair:
    """Instance A (with the collections of setup_world) and, started after it, B."""

    def __init__(self, root, extra=()):
        self.root = root
        self.direct, self.db = shared_db(root)
        self.dirs = [os.path.join(root, x) for x in ("a", "b")]
        for d in self.dirs:
            os.makedirs(d)
        out = subprocess.run([BIN, "superuser", "upsert", ADMIN_EMAIL, ADMIN_PASSWORD, f"--dir={self.dirs[0]}",
                              *self.db], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        self.a = Server(self.dirs[0], [*self.db, *extra]).start()
        self.admin_a = Client(self.a.url)
        self.admin_a.token = self.admin_a.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        self.users = setup_world(self.admin_a)
        # B starts once the collections exist (an instance reads the schema at start-up).
        self.b = Server(self.dirs[1], [*self.db, *extra]).start()
        self.admin_b = Client(self.b.url, self.admin_a.token)

    def stop(self):
        for s in (self.a, self.b):
            if s.proc and s.proc.poll() is None:
                assert s.stop() == 0, f"basalt exited badly; see {s.dir}/server.log"


@pytest.fixture
def pair(tmpdir_path):
    p = Pair(tmpdir_path)
    yield p
    p.stop()


@needs_pg
def test_event_through_a_reaches_sse_and_ws_subscribers_on_b_with_b_rules(pair):
    alice_id, alice = pair.users["alice"]
    bob_id, bob = pair.users["bob"]
    sa, sanon = SSE(pair.b.url), SSE(pair.b.url)
    assert subscribe(sa, Client(pair.b.url, alice.token), ["posts/*", "notes/*"]).status_code == 204
    assert subscribe(sanon, pair.b.url, ["posts/*", "notes/*"]).status_code == 204
    wb = WS(pair.b.url, headers={"Authorization": bob.token})
    assert wb.request({"type": "subscribe", "topics": ["posts/*", "notes/*"]})["type"] == "subscribed"
    alice_a = Client(pair.a.url, alice.token)
    r = alice_a.post("/api/collections/posts/records", json={"title": "a1", "owner": alice_id, "secret": "s"})
    assert r.status_code == 200, r.text
    r = pair.admin_a.post("/api/collections/notes/records", json={"text": "public"})
    assert r.status_code == 200, r.text
    recs = records_of(sa.collect(quiet=2))
    assert [(e, a, rec.get("title") or rec.get("text")) for e, a, rec in recs] == [
        ("posts/*", "create", "a1"), ("notes/*", "create", "public")]
    assert "secret" not in recs[0][2]  # hidden fields stay hidden
    assert [(e, rec["text"]) for e, _, rec in records_of(sanon.collect(quiet=1))] == [("notes/*", "public")]
    msgs = [m for m in wb.collect(quiet=1) if m["type"] == "event"]
    assert [(m["topic"], m["data"]["record"].get("text")) for m in msgs] == [("notes/*", "public")]
    for c in (sa, sanon, wb):
        c.close()


@needs_pg
def test_ids_are_the_same_on_every_instance_and_resume_on_the_other_works(pair):
    sa, sb = SSE(pair.a.url), SSE(pair.b.url)
    subscribe(sa, pair.a.url, ["notes/*"])
    subscribe(sb, pair.b.url, ["notes/*"])
    for i in range(3):
        assert pair.admin_a.post("/api/collections/notes/records", json={"text": f"n{i}"}).status_code == 200
    ea, eb = sa.collect(quiet=2), sb.collect(quiet=1)
    assert [e["id"] for e in ea] == [e["id"] for e in eb] and len(ea) == 3
    # A WebSocket on B resumes from an id A gave.
    w = WS(pair.b.url)
    w.request({"type": "subscribe", "topics": ["notes/*"]})
    w.send({"type": "resume", "lastEventId": ea[0]["id"]})
    msgs = w.collect(quiet=1)
    assert [m["data"]["record"]["text"] for m in msgs if m["type"] == "event"] == ["n1", "n2"]
    assert msgs[-1]["type"] == "resumed"
    for c in (sa, sb, w):
        c.close()


@needs_pg
def test_sigkill_a_during_a_fanout_client_resumes_on_b_with_exactly_the_missed_events(pair):
    s = SSE(pair.a.url)
    assert subscribe(s, pair.a.url, ["notes/*"]).status_code == 204
    written, stop = [], threading.Event()

    def writer():  # through B, so that every acknowledged write is known
        i = 0
        while not stop.is_set() and i < 400:
            r = pair.admin_b.post("/api/collections/notes/records", json={"text": f"w{i}"})
            assert r.status_code == 200, r.text
            written.append(r.json()["id"])
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    got = []
    while len(got) < 20:
        ev = s.next(timeout=10)
        assert ev is not None, "no events reached the subscriber on A"
        got.append(ev)
    pair.a.kill()
    time.sleep(0.3)  # writes go on while the client is away
    got += [e for e in s.collect(quiet=0.2) if e.get("event") == "notes/*"]  # whatever A had sent
    s.close()
    last = got[-1]["id"]
    s2 = SSE(pair.b.url, headers={"Last-Event-ID": last})
    assert subscribe(s2, pair.b.url, ["notes/*"]).status_code == 204
    time.sleep(0.3)
    stop.set()
    t.join()
    rest = s2.collect(quiet=2)
    s2.close()
    ids = [json.loads(e["data"])["record"]["id"] for e in got + rest]
    assert all(e["event"] == "notes/*" for e in rest), [e["event"] for e in rest if e["event"] != "notes/*"]
    assert ids == written, f"{len(ids)} delivered vs {len(written)} written"
    eids = [int(e["id"]) for e in got + rest]
    assert eids == sorted(set(eids))


@needs_pg
def test_a_transaction_that_commits_late_is_not_skipped(pair):
    s = SSE(pair.b.url)
    subscribe(s, pair.b.url, ["notes/*"])
    notes = json.loads(psql(pair.direct, "SELECT data FROM _collections WHERE name = 'notes'"))
    rec = {"id": "latecommit00001", "collectionId": notes["id"], "collectionName": "notes", "text": "late",
           "created": "", "updated": ""}
    # Another writer (as another instance would) takes its offset and holds its commit.
    slow = subprocess.Popen(["psql", pair.direct, "-qAt", "-v", "ON_ERROR_STOP=1"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    slow.stdin.write("BEGIN;\nUPDATE _events_seq SET n = n + 1 WHERE k = 1 RETURNING n;\n"
                     "INSERT INTO _events (off, coll, action, record, created) SELECT n, '%s', 'create', '%s', "
                     "(extract(epoch from now()) * 1000)::bigint FROM _events_seq WHERE k = 1;\n"
                     % (notes["id"], json.dumps(rec)))
    slow.stdin.flush()
    deadline = time.time() + 10
    while psql(pair.direct, "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' "
                "AND datname = current_database()") == "0":
        assert time.time() < deadline
        time.sleep(0.05)
    # A write through A meanwhile: its commit must come (and be numbered) after the slow one.
    res = {}
    t = threading.Thread(target=lambda: res.update(
        r=pair.admin_a.post("/api/collections/notes/records", json={"text": "fast"})))
    t.start()
    time.sleep(1)
    slow.stdin.write("COMMIT;\n")
    slow.stdin.close()
    assert slow.wait(timeout=30) == 0, slow.stderr.read()
    t.join()
    assert res["r"].status_code == 200, res["r"].text
    got = [rec["text"] for _, _, rec in records_of(s.collect(quiet=2.5))]
    assert got == ["late", "fast"]
    s.close()


@needs_pg
def test_beyond_the_window_or_from_another_epoch_is_told_to_resync(tmpdir_path):
    p = Pair(tmpdir_path, ["--realtime-resume-max-events=5"])
    try:
        s = SSE(p.a.url)
        subscribe(s, p.a.url, ["notes/*"])
        watch = SSE(p.b.url)  # to know when B has read them all
        subscribe(watch, p.b.url, ["notes/*"])
        p.admin_a.post("/api/collections/notes/records", json={"text": "seen"})
        last = s.collect(quiet=1)[-1]["id"]
        s.close()
        for i in range(10):
            p.admin_a.post("/api/collections/notes/records", json={"text": f"missed {i}"})
        assert len(watch.collect(quiet=2)) == 11
        watch.close()
        s2 = SSE(p.b.url, headers={"Last-Event-ID": last})
        subscribe(s2, p.b.url, ["notes/*"])
        assert [e["event"] for e in s2.collect(quiet=1)] == ["PB_RESYNC"]
        s2.close()
        other_epoch = str(int(last) ^ (1 << 50))
        w = WS(p.b.url)
        w.request({"type": "subscribe", "topics": ["notes/*"]})
        assert w.request({"type": "resume", "lastEventId": other_epoch})["type"] == "resync"
        w.close()
        # The outbox is pruned to the count too (by the writers, in batches).
        deadline = time.time() + 5
        while int(psql(p.direct, "SELECT count(*) FROM _events")) > 5:
            assert time.time() < deadline, "the outbox was not pruned"
            time.sleep(0.2)
    finally:
        p.stop()


@sqlite_only("the embedded file's outbox across a crash (PostgreSQL: the SIGKILL test above)")
def test_sqlite_outbox_survives_sigkill_and_replays_after_restart(tmpdir_path):
    """On the embedded file: an acknowledged write whose server is killed at once is in
    the outbox, and a client resuming after the restart receives it."""
    out = subprocess.run([BIN, "superuser", "upsert", ADMIN_EMAIL, ADMIN_PASSWORD, f"--dir={tmpdir_path}"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    srv = Server(tmpdir_path).start()
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    setup_world(admin)
    s = SSE(srv.url)
    subscribe(s, srv.url, ["notes/*"])
    admin.post("/api/collections/notes/records", json={"text": "seen"})
    last = s.collect(quiet=1)[-1]["id"]
    s.close()
    assert admin.post("/api/collections/notes/records", json={"text": "after"}).status_code == 200
    srv.kill()
    srv = Server(tmpdir_path).start()
    try:
        s = SSE(srv.url, headers={"Last-Event-ID": last})
        subscribe(s, srv.url, ["notes/*"])
        got = s.collect(quiet=1)
        assert [(e["event"], json.loads(e["data"])["record"]["text"]) for e in got] == [("notes/*", "after")]
        assert int(got[0]["id"]) == int(last) + 1
        s.close()
    finally:
        assert srv.stop() == 0


@needs_pg
def test_subscription_post_for_a_stream_on_a_sent_to_b_is_applied_on_a(pair):
    alice_id, alice = pair.users["alice"]
    bob_id, bob = pair.users["bob"]
    s = SSE(pair.a.url)  # the SDK's stream on A ...
    r = Client(pair.b.url, alice.token).post("/api/realtime", json={"clientId": s.client_id,
                                                                     "subscriptions": ["posts/*", "notes/*"]})
    assert r.status_code == 204, r.text  # ... its POST on B, answered once applied on A
    own = alice.post("/api/collections/posts/records", json={"title": "mine", "owner": alice_id})
    bob.post("/api/collections/posts/records", json={"title": "bobs", "owner": bob_id})
    assert own.status_code == 200, own.text
    got = [(e, rec.get("title")) for e, _, rec in records_of(s.collect(quiet=1.5))]
    assert got == [("posts/*", "mine")]  # alice's identity, checked on A's stream
    # The identity rules hold across instances: another user's POST is refused.
    r = Client(pair.b.url, bob.token).post("/api/realtime", json={"clientId": s.client_id,
                                                                   "subscriptions": ["posts/*"]})
    assert r.status_code == 403, r.text
    # A bad topic is refused with A's message.
    r = Client(pair.b.url, alice.token).post("/api/realtime", json={"clientId": s.client_id,
                                                                     "subscriptions": ["nope/*"]})
    assert r.status_code == 400 and "unknown collection" in r.json()["message"], r.text
    # An empty list removes the subscriptions.
    r = Client(pair.b.url, alice.token).post("/api/realtime", json={"clientId": s.client_id, "subscriptions": []})
    assert r.status_code == 204, r.text
    alice.post("/api/collections/posts/records", json={"title": "unseen", "owner": alice_id})
    assert s.collect(quiet=1) == []
    s.close()


@needs_pg
def test_resume_after_a_post_on_the_other_instance(pair):
    """The SDK's reconnect: a new stream on B with Last-Event-ID, its POST on A."""
    s = SSE(pair.a.url)
    subscribe(s, pair.a.url, ["notes/*"])
    pair.admin_a.post("/api/collections/notes/records", json={"text": "seen"})
    last = s.collect(quiet=1)[-1]["id"]
    s.close()
    pair.admin_a.post("/api/collections/notes/records", json={"text": "missed"})
    s2 = SSE(pair.b.url, headers={"Last-Event-ID": last})
    assert subscribe(s2, pair.a.url, ["notes/*"]).status_code == 204
    assert [rec["text"] for _, _, rec in records_of(s2.collect(quiet=1.5))] == ["missed"]
    s2.close()
