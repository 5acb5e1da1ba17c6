"""`basalt db copy` (issue 13, "Moving house"): a deployment built through the HTTP API on
SQLite is copied to PostgreSQL while its server keeps serving, served there and checked
through the API (same definitions and records in the same order, users log in with their
old passwords, tokens issued before the move stay valid), then copied back to a new
SQLite directory and checked again; PostgreSQL -> PostgreSQL and SQLite -> SQLite too.
A copy killed half-way finishes when run again, without duplicates; bad inputs get clear
errors that name the flag and never show a password.

Needs the tests' PostgreSQL (BASALT_TEST_PG_URL; make test starts it, or
scripts/pg-env.sh start DIR); it runs in the SQLite suite, since it drives both
backends itself.
"""
import json
import os
import random
import signal
import sqlite3
import string
import subprocess
import tempfile
import time
import uuid

import pytest

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, BACKEND, BIN, Client, Server, make_superuser

PG_URL = os.environ.get("BASALT_TEST_PG_URL")
PGB_URL = os.environ.get("BASALT_TEST_PGB_URL")

pytestmark = [
    pytest.mark.skipif(not PG_URL, reason="needs the tests' PostgreSQL: set BASALT_TEST_PG_URL "
                                          "(make test does; or eval $(scripts/pg-env.sh start DIR))"),
    pytest.mark.skipif(BACKEND != "sqlite", reason="runs in the SQLite suite: it uses both backends itself"),
]

PASSWORDS = {"m1@example.com": "member-pass-1", "m2@example.com": "member-pass-2", "m3@example.com": "member-pass-3"}


def psql(sql, url=None):
    out = subprocess.run(["psql", url or PG_URL, "-qAt", "-c", sql], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def pgdb():
    """Makes fresh PostgreSQL databases; returns a function giving a direct URL."""
    made = []

    def make():
        name = "bt_dbcopy_" + uuid.uuid4().hex[:12]
        psql(f"CREATE DATABASE {name}")
        made.append(name)
        return PG_URL.rsplit("/", 1)[0] + "/" + name

    yield make
    for name in made:
        subprocess.run(["psql", PG_URL, "-qAt", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
                       capture_output=True, timeout=120)


_running = []


@pytest.fixture
def work():
    d = tempfile.mkdtemp(prefix="basalt-dbcopy-")
    yield d
    # servers a failed assertion left running
    while _running:
        srv = _running.pop()
        if srv.proc is not None and srv.proc.poll() is None:
            srv.kill()
    if not os.environ.get("BASALT_KEEP_TMP"):
        subprocess.run(["rm", "-rf", d])


def copy(*args, timeout=600):
    return subprocess.run([BIN, "db", "copy", "--progress=lines", *args], capture_output=True, text=True,
                          timeout=timeout)


def serve(data_dir, db=None):
    os.makedirs(data_dir, exist_ok=True)
    srv = Server(data_dir, [f"--db={db}"] if db else [])
    _running.append(srv)
    return srv.start()


def stop(srv):
    _running.remove(srv)
    assert srv.stop() == 0, f"basalt exited badly; see {srv.dir}/server.log"


# ---- the deployment ----

def build(url):
    """Collections of every kind of field, an auth collection, records; returns the tokens
    issued before the move."""
    admin = Client(url)
    admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    r = admin.post("/api/collections", json={
        "name": "authors", "listRule": "", "viewRule": "",
        "fields": [{"name": "name", "type": "text", "required": True}, {"name": "born", "type": "date"}]})
    assert r.status_code == 200, r.text
    r = admin.post("/api/collections", json={
        "name": "members", "type": "auth", "createRule": "", "listRule": "id = @request.auth.id",
        "viewRule": "id = @request.auth.id",
        "fields": [{"name": "nick", "type": "text"}]})
    assert r.status_code == 200, r.text
    members = r.json()["id"]
    authors = admin.get("/api/collections/authors").json()["id"]
    r = admin.post("/api/collections", json={
        "name": "posts", "listRule": "", "viewRule": "",
        "fields": [
            {"name": "title", "type": "text", "required": True},
            {"name": "body", "type": "editor"},
            {"name": "views", "type": "number"},
            {"name": "published", "type": "bool"},
            {"name": "meta", "type": "json"},
            {"name": "tags", "type": "select", "values": ["news", "tech", "life", "misc"], "maxSelect": 4},
            {"name": "kind", "type": "select", "values": ["short", "long"], "maxSelect": 1},
            {"name": "author", "type": "relation", "collectionId": authors, "maxSelect": 1},
            {"name": "readers", "type": "relation", "collectionId": members, "maxSelect": 10},
            {"name": "site", "type": "url"},
            {"name": "contact", "type": "email"},
            {"name": "published_at", "type": "date"},
            {"name": "created", "type": "autodate", "onCreate": True},
            {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True}],
        "indexes": ["CREATE INDEX idx_posts_title ON posts (title)",
                    "CREATE UNIQUE INDEX idx_posts_site ON posts (site) WHERE site != ''"]})
    assert r.status_code == 200, r.text
    a_ids = []
    for i, name in enumerate(["Ada", "Brian", "Chloé ünïcode"]):
        r = admin.post("/api/collections/authors/records", json={"name": name, "born": f"19{50 + i}-0{i + 1}-15 08:30:00.000Z"})
        assert r.status_code == 200, r.text
        a_ids.append(r.json()["id"])
    anon = Client(url)
    m_ids = []
    for i, (email, pw) in enumerate(PASSWORDS.items()):
        r = anon.post("/api/collections/members/records", json={
            "email": email, "password": pw, "passwordConfirm": pw, "nick": f"m{i}", "emailVisibility": i == 0})
        assert r.status_code == 200, r.text
        m_ids.append(r.json()["id"])
    rnd = random.Random(7)
    for i in range(40):
        r = admin.post("/api/collections/posts/records", json={
            "title": f"post {i} " + "".join(rnd.choice(string.ascii_letters) for _ in range(8)),
            "body": f"<p>body {i} with 'quotes' and \"double\" and \\ and emoji \U0001F600</p>",
            "views": rnd.choice([0, 1, 42, 1e15, -3.25, 0.1]),
            "published": i % 3 == 0,
            "meta": None if i % 5 == 0 else {"z": i, "a": [1, "two", None, True], "nested": {"k": "v" * i}},
            "tags": rnd.sample(["news", "tech", "life", "misc"], i % 4),
            "kind": ["short", "long", ""][i % 3],
            "author": a_ids[i % 3] if i % 4 else "",
            "readers": m_ids[: i % 4],
            "site": f"https://example.com/{i}" if i % 2 else "",
            "contact": f"c{i}@example.org" if i % 3 else "",
            "published_at": f"2024-0{1 + i % 9}-1{i % 10} 12:34:56.{i:03d}Z" if i % 2 else ""})
        assert r.status_code == 200, r.text
    # an update and a delete, so that insertion order and the ids differ
    posts = admin.get("/api/collections/posts/records?perPage=100&sort=@rowid").json()["items"]
    assert admin.patch(f"/api/collections/posts/records/{posts[3]['id']}", json={"title": "edited"}).status_code == 200
    assert admin.delete(f"/api/collections/posts/records/{posts[5]['id']}").status_code == 204
    tokens = {email: anon.login("members", email, pw) for email, pw in PASSWORDS.items()}
    return admin.token, tokens


def snapshot(url, admin_token):
    """Everything the API shows a superuser: definitions and records (in insertion order)."""
    admin = Client(url, admin_token)
    cols = admin.get("/api/collections?perPage=200").json()["items"]
    out = {"collections": sorted(cols, key=lambda c: c["id"]), "records": {}}
    for c in cols:
        r = admin.get(f"/api/collections/{c['name']}/records?perPage=500&sort=@rowid")
        assert r.status_code == 200, r.text
        out["records"][c["name"]] = r.json()["items"]
    r = admin.get("/api/collections/posts/records?perPage=500&sort=@rowid&expand=author,readers")
    out["expanded"] = r.json()["items"]
    return out


def check_deployment(url, admin_token, member_tokens, before):
    """The moved deployment answers as the original did."""
    after = snapshot(url, admin_token)
    assert after["collections"] == before["collections"]
    assert after["records"] == before["records"]
    assert after["expanded"] == before["expanded"]
    anon = Client(url)
    for email, pw in PASSWORDS.items():
        # the old password, and the token issued before the move (same tokenKey and secret)
        anon.login("members", email, pw)
        me = Client(url, member_tokens[email])
        r = me.post("/api/collections/members/auth-refresh")
        assert r.status_code == 200, r.text
        assert r.json()["record"]["email"] == email
        assert [x["email"] for x in me.get("/api/collections/members/records").json()["items"]] == [email]
        assert anon.post("/api/collections/members/auth-with-password",
                         json={"identity": email, "password": pw + "x"}).status_code == 400
    assert Client(url, admin_token).get("/api/collections").status_code == 200
    anon.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    # the moved deployment keeps working: new records, unique indexes still enforced
    admin = Client(url, admin_token)
    r = admin.post("/api/collections/posts/records", json={"title": "after the move"})
    assert r.status_code == 200, r.text
    r = admin.post("/api/collections/posts/records", json={"title": "dup", "site": "https://example.com/1"})
    assert r.status_code == 400, r.text
    last = admin.get("/api/collections/posts/records?perPage=500&sort=@rowid").json()["items"][-1]
    assert last["title"] == "after the move"
    assert admin.delete(f"/api/collections/posts/records/{last['id']}").status_code == 204


def assert_verified(out):
    assert out.returncode == 0, out.stderr
    assert "verified:" in out.stderr and "FAILED" not in out.stderr, out.stderr


def test_round_trip_sqlite_postgres_sqlite(work, pgdb):
    src = os.path.join(work, "src")
    os.makedirs(src)
    make_superuser(src)
    srv = serve(src)
    admin_token, member_tokens = build(srv.url)
    before = snapshot(srv.url, admin_token)
    # copied while the source is being served: the copy reads one snapshot
    pg = pgdb()
    out = copy(f"--from={src}", f"--to={pg}")
    assert_verified(out)
    assert "posts: 39/39 rows" in out.stderr, out.stderr
    stop(srv)

    # raw values arrived byte for byte: password hashes, token keys, dates
    con = sqlite3.connect(os.path.join(src, "data.db"))
    want = con.execute("SELECT id, password, tokenKey, email, created, updated FROM members ORDER BY rowid").fetchall()
    got = psql('SELECT id, password, "tokenKey", email, created, updated FROM members ORDER BY _rowid', pg)
    assert got == "\n".join("|".join(r) for r in want)
    want_defs = con.execute("SELECT id, name, data, created, updated FROM _collections ORDER BY rowid").fetchall()
    con.close()
    assert psql("SELECT id, name, data, created, updated FROM _collections ORDER BY _rowid", pg) == \
        "\n".join("|".join(r) for r in want_defs)

    srv = serve(os.path.join(work, "on-pg"), pg)
    check_deployment(srv.url, admin_token, member_tokens, before)
    # leave the PostgreSQL deployment as it was before the checks' own writes
    after_checks = snapshot(srv.url, admin_token)
    stop(srv)

    # back to SQLite, into a directory that does not exist yet
    back = os.path.join(work, "back", "deeper", "dir")
    out = copy(f"--from={pg}", f"--to={back}")
    assert_verified(out)
    srv = serve(back)
    assert snapshot(srv.url, admin_token) == after_checks
    check_deployment(srv.url, admin_token, member_tokens, after_checks)
    stop(srv)

    # PostgreSQL -> PostgreSQL (both through PgBouncer in transaction mode), SQLite -> SQLite
    pg2 = pgdb()

    def bouncer(url):
        return PGB_URL.rsplit("/", 1)[0] + "/" + url.rsplit("/", 1)[1] if PGB_URL else url

    assert_verified(copy(f"--from={bouncer(pg)}", f"--to={bouncer(pg2)}"))
    again = os.path.join(work, "again")
    assert_verified(copy(f"--from={back}", f"--to={again}"))
    for where, db in ((os.path.join(work, "on-pg2"), pg2), (again, None)):
        srv = serve(where, db)
        check_deployment(srv.url, admin_token, member_tokens, snapshot(srv.url, admin_token))
        stop(srv)

    # a second run finds everything there, writes nothing and verifies
    out = copy(f"--from={src}", f"--to={pg}")
    assert_verified(out)
    assert "done: 0 records written by this run" in out.stderr, out.stderr

    # a destination that holds a record the source has not: exit 1 and a report naming it
    psql("INSERT INTO authors (id, name) VALUES ('extra0000000001', 'not in the source')", pg)
    out = copy(f"--from={src}", f"--to={pg}")
    assert out.returncode == 1, out.stderr
    assert "verification FAILED" in out.stderr and "verified:" not in out.stderr, out.stderr
    line = [x for x in out.stderr.splitlines() if "authors" in x and "source" in x][0]
    assert "source 3 rows, destination 4 rows" in line and "the destination holds records" in line, line
    assert not [x for x in out.stderr.splitlines() if x.strip().startswith("posts ")], out.stderr


def big_source(work, n):
    """A deployment with n posts: the collection made through the API, the rows written
    straight into its table (the API would take minutes for this many)."""
    src = os.path.join(work, "big")
    os.makedirs(src)
    make_superuser(src)
    srv = serve(src)
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    r = admin.post("/api/collections", json={"name": "items", "fields": [
        {"name": "title", "type": "text"}, {"name": "n", "type": "number"}, {"name": "flag", "type": "bool"},
        {"name": "data", "type": "json"}, {"name": "labels", "type": "select", "values": ["a", "b", "c"], "maxSelect": 3},
        {"name": "created", "type": "autodate", "onCreate": True},
        {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True}]})
    assert r.status_code == 200, r.text
    stop(srv)
    con = sqlite3.connect(os.path.join(src, "data.db"))
    alphabet = string.ascii_lowercase + string.digits
    rnd = random.Random(n)
    rows = []
    for i in range(n):
        rid = "".join(rnd.choice(alphabet) for _ in range(15))
        rows.append((rid, f"item {i}", i * 1.5, i % 2, json.dumps({"i": i, "s": "x" * (i % 50)}),
                     json.dumps(["a", "c"] if i % 2 else []), "2025-01-01 00:00:00.000Z", "2025-01-01 00:00:00.000Z"))
    con.executemany("INSERT INTO items (id, title, n, flag, data, labels, created, updated) VALUES (?,?,?,?,?,?,?,?)",
                    rows)
    con.commit()
    con.close()
    return src


def pg_count(url, table):
    try:
        return int(psql(f'SELECT count(*) FROM "{table}"', url))
    except AssertionError:
        return 0  # the table is not there yet


def test_interrupted_copy_resumes(work, pgdb):
    n = 20000
    src = big_source(work, n)
    pg = pgdb()
    # killed half-way (SIGKILL: no chance to clean up), then run again
    proc = subprocess.Popen([BIN, "db", "copy", "--progress=lines", "--batch=200", f"--from={src}", f"--to={pg}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = 0
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        seen = pg_count(pg, "items")
        if seen >= 2000:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    at_kill = pg_count(pg, "items")
    assert 0 < at_kill < n, f"the copy was not caught half-way ({at_kill} rows)"
    out = copy(f"--from={src}", f"--to={pg}")
    assert_verified(out)
    assert "items: resuming after" in out.stderr, out.stderr
    assert pg_count(pg, "items") == n
    assert psql("SELECT count(DISTINCT id) FROM items", pg) == str(n)
    # the insertion order is kept across the interruption
    con = sqlite3.connect(os.path.join(src, "data.db"))
    want = [r[0] for r in con.execute("SELECT id FROM items ORDER BY rowid")]
    con.close()
    assert psql("SELECT id FROM items ORDER BY _rowid", pg).split("\n") == want

    # SIGINT: stops after the current batch, says how to finish, exit 130; a re-run finishes
    pg2 = pgdb()
    proc = subprocess.Popen([BIN, "db", "copy", "--progress=lines", "--batch=100", f"--from={src}", f"--to={pg2}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and pg_count(pg2, "items") < 1000:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    if proc.returncode != 0:  # (it may have finished before the signal arrived)
        assert proc.returncode == 130, err
        assert "interrupted" in err and "run the same command again" in err, err
    assert_verified(copy(f"--from={src}", f"--to={pg2}"))
    assert pg_count(pg2, "items") == n

    # a copy back from PostgreSQL, killed too, then finished
    back = os.path.join(work, "back")
    proc = subprocess.Popen([BIN, "db", "copy", "--progress=off", "--batch=200", f"--from={pg}", f"--to={back}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    out = copy(f"--from={pg}", f"--to={back}")
    assert_verified(out)
    con = sqlite3.connect(os.path.join(back, "data.db"))
    assert [r[0] for r in con.execute("SELECT id FROM items ORDER BY rowid")] == want
    con.close()


class Writer:
    """Creates records through the API in a thread until stopped."""

    def __init__(self, url, token):
        import threading
        self.client = Client(url, token)
        self.stop_at = threading.Event()
        self.made = 0
        self.errors = []
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        while not self.stop_at.is_set():
            r = self.client.post("/api/collections/items/records", json={"title": "written during the copy"})
            if r.status_code == 200:
                self.made += 1
            else:
                self.errors.append(r.text)

    def stop(self):
        self.stop_at.set()
        self.thread.join(timeout=30)
        assert not self.errors, self.errors[:3]


def test_copy_while_the_source_is_written(work, pgdb):
    """A served source may keep taking writes: the copy is one snapshot of it, and verifies."""
    n = 20000
    src = big_source(work, n)
    srv = serve(src)
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    w = Writer(srv.url, admin.token)
    pg = pgdb()
    out = copy(f"--from={src}", f"--to={pg}", "--batch=500")
    w.stop()
    stop(srv)
    assert_verified(out)
    assert w.made > 0
    got = pg_count(pg, "items")
    assert n <= got < n + w.made + 1
    # PostgreSQL as the served, written source
    srv = serve(os.path.join(work, "on-pg"), pg)
    w = Writer(srv.url, admin.token)
    back = os.path.join(work, "back")
    out = copy(f"--from={pg}", f"--to={back}", "--batch=500")
    w.stop()
    stop(srv)
    assert_verified(out)
    assert w.made > 0
    con = sqlite3.connect(os.path.join(back, "data.db"))
    assert got <= con.execute("SELECT count(*) FROM items").fetchone()[0] < got + w.made + 1
    con.close()


def test_copy_100k_records_verifies(work, pgdb):
    """Issue 13: `basalt db copy` of a 100,000-record deployment verifies."""
    n = 100000
    src = big_source(work, n)
    pg = pgdb()
    t0 = time.time()
    out = copy(f"--from={src}", f"--to={pg}")
    took = time.time() - t0
    assert_verified(out)
    assert "100,001 records" in out.stderr, out.stderr  # and the superuser
    assert pg_count(pg, "items") == n
    back = os.path.join(work, "back")
    out = copy(f"--from={pg}", f"--to={back}")
    assert_verified(out)
    print(f"100k: SQLite -> PostgreSQL {took:.1f} s, back {time.time() - t0 - took:.1f} s")


# ---- bad inputs ----

def test_bad_inputs(work, pgdb):
    src = os.path.join(work, "src")
    os.makedirs(src)
    make_superuser(src)
    pg = pgdb()

    def bad(*args, code=1):
        out = copy(*args)
        assert out.returncode == code, (args, out.returncode, out.stderr)
        assert out.stderr.startswith("basalt db copy: ") or "basalt db copy: " in out.stderr, out.stderr
        return out.stderr

    assert "--from and --to are both required" in bad(f"--to={pg}", code=2)
    assert "--from and --to are both required" in bad(f"--from={src}", code=2)
    assert "unknown argument" in bad(f"--from={src}", f"--to={pg}", "--bogus", code=2)
    assert "--batch must be a whole number" in bad(f"--from={src}", f"--to={pg}", "--batch=0", code=2)
    assert "--progress must be" in bad(f"--from={src}", f"--to={pg}", "--progress=fancy", code=2)
    # missing source: no directory, no database in it, not a directory
    e = bad(f"--from={work}/nope", f"--to={pg}")
    assert "--from=" in e and "no such data directory" in e
    os.makedirs(f"{work}/empty")
    e = bad(f"--from={work}/empty", f"--to={pg}")
    assert "holds no database" in e and "data.db" in e
    assert not os.path.exists(f"{work}/empty/data.db")  # not created by the attempt
    e = bad(f"--from={src}/data.db", f"--to={pg}")
    assert "not a directory" in e
    e = bad(f"--from=mysql://x/y", f"--to={pg}")
    assert "postgres://" in e
    # a PostgreSQL database without Basalt data
    e = bad(f"--from={pg}", f"--to={work}/out")
    assert "holds no Basalt data" in e and "--from=" in e
    # unreachable servers: the flag and the address, never the password
    port = 1
    for flag, other in (("--from", f"--to={work}/out2"), ("--to", f"--from={src}")):
        e = bad(f"{flag}=postgres://basalt:s3cret-pw@127.0.0.1:{port}/db?password=also-secret", other,
                "--connect-timeout-ms=2000")
        assert f"{flag}=" in e and "127.0.0.1" in e and str(port) in e, e
        assert "s3cret-pw" not in e and "also-secret" not in e, e
    assert not os.path.exists(f"{work}/out2")  # a failed copy leaves no destination behind
    # the destination is the source: same directory (another spelling), same database
    e = bad(f"--from={src}", f"--to={src}/../src/")
    assert "the same database" in e
    e = bad(f"--from={src}", f"--to={src}")
    assert "the same database" in e
    assert_verified(copy(f"--from={src}", f"--to={pg}"))
    e = bad(f"--from={pg}", f"--to={pg}")
    assert "the same database" in e
    if PGB_URL:  # one database reached through PgBouncer and directly
        alias = PGB_URL.rsplit("/", 1)[0] + "/" + pg.rsplit("/", 1)[1]
        e = bad(f"--from={pg}", f"--to={alias}")
        assert "the same database" in e
    # a destination that is a file
    open(f"{work}/afile", "w").close()
    assert "not a directory" in bad(f"--from={src}", f"--to={work}/afile")


def test_conflicting_destination(work, pgdb):
    src = os.path.join(work, "src")
    os.makedirs(src)
    make_superuser(src)
    srv = serve(src)
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    assert admin.post("/api/collections", json={"name": "notes", "fields": [{"name": "t", "type": "text"}]}).status_code == 200
    assert admin.post("/api/collections/notes/records", json={"t": "from the source"}).status_code == 200
    stop(srv)

    # a destination that `basalt serve` has opened once (its own _superusers, empty) takes
    # the copy as it is
    pg = pgdb()
    srv = serve(os.path.join(work, "d1"), pg)
    stop(srv)
    assert_verified(copy(f"--from={src}", f"--to={pg}"))

    # a destination with its own superuser and a different "notes": refused, nothing written
    pg2 = pgdb()
    d2 = os.path.join(work, "d2")
    os.makedirs(d2)
    out = subprocess.run([BIN, "superuser", "upsert", "other@example.com", "other-password", f"--dir={d2}", f"--db={pg2}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    srv = serve(d2, pg2)
    other = Client(srv.url)
    other.token = other.login("_superusers", "other@example.com", "other-password")
    assert other.post("/api/collections", json={"name": "notes", "fields": [{"name": "x", "type": "number"}]}).status_code == 200
    assert other.post("/api/collections/notes/records", json={"x": 5}).status_code == 200
    stop(srv)
    out = copy(f"--from={src}", f"--to={pg2}")
    assert out.returncode == 1
    assert '"notes"' in out.stderr and "different definition" in out.stderr and "--force" in out.stderr, out.stderr
    assert '"_superusers"' in out.stderr, out.stderr
    assert psql("SELECT count(*) FROM notes", pg2) == "1"
    assert psql("SELECT email FROM _superusers", pg2) == "other@example.com"
    # --force: replaced by the source's, records of the replaced collections gone
    out = copy(f"--from={src}", f"--to={pg2}", "--force")
    assert_verified(out)
    assert 'replaced collection "notes"' in out.stderr, out.stderr
    assert psql("SELECT t FROM notes", pg2) == "from the source"
    assert psql("SELECT email FROM _superusers", pg2) == ADMIN_EMAIL


def test_partitioned_collections(work, pgdb):
    """A partitioned collection (PostgreSQL's option) stays partitioned on PostgreSQL and
    becomes a plain collection on SQLite, which has no partitions; records all arrive."""
    pg = pgdb()
    d = os.path.join(work, "src")
    os.makedirs(d)
    out = subprocess.run([BIN, "superuser", "upsert", ADMIN_EMAIL, ADMIN_PASSWORD, f"--dir={d}", f"--db={pg}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    srv = serve(d, pg)
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    r = admin.post("/api/collections", json={
        "name": "orders", "listRule": "", "viewRule": "",
        "fields": [{"name": "placed", "type": "date", "required": True}, {"name": "total", "type": "number"}],
        "indexes": ["CREATE INDEX idx_orders_total ON orders (total)"],
        "partition": {"field": "placed", "interval": "quarter"}})
    assert r.status_code == 200, r.text
    for i, day in enumerate(["2026-01-15", "2026-05-01", "2026-12-31", "2031-06-01", "1999-01-01"]):
        r = admin.post("/api/collections/orders/records", json={"placed": f"{day} 10:00:00.000Z", "total": i})
        assert r.status_code == 200, r.text
    want = admin.get("/api/collections/orders/records?sort=@rowid").json()["items"]
    stop(srv)

    pg2 = pgdb()
    assert_verified(copy(f"--from={pg}", f"--to={pg2}"))
    assert int(psql("SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent "
                    "WHERE p.relname = 'orders'", pg2)) >= 17
    # run again: the partitioned table's key (id, placed) is what skips the rows there
    out = copy(f"--from={pg}", f"--to={pg2}")
    assert_verified(out)
    assert "done: 0 records written" in out.stderr, out.stderr
    srv = serve(os.path.join(work, "pg2"), pg2)
    got = Client(srv.url, admin.token).get("/api/collections/orders")
    assert got.json()["partition"] == {"field": "placed", "interval": "quarter"}
    assert Client(srv.url).get("/api/collections/orders/records?sort=@rowid").json()["items"] == want
    stop(srv)

    back = os.path.join(work, "back")
    out = copy(f"--from={pg}", f"--to={back}")
    assert_verified(out)
    assert "orders: partitioned at the source" in out.stderr, out.stderr
    srv = serve(back)
    c = Client(srv.url, admin.token)
    got = c.get("/api/collections/orders").json()
    assert "partition" not in got and [f["name"] for f in got["fields"]][:3] == ["id", "placed", "total"]
    assert got["indexes"] == ["CREATE INDEX idx_orders_total ON orders (total)"] or got["indexes"]
    assert Client(srv.url).get("/api/collections/orders/records?sort=@rowid").json()["items"] == want
    assert c.post("/api/collections/orders/records", json={"placed": "2027-01-01 00:00:00.000Z"}).status_code == 200
    stop(srv)
