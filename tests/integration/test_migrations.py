"""Migrations as files (issue 15, item 6; docs/migrations.md): every schema change made
through the API is written to DIR/migrations; `basalt migrate` replays them onto a
fresh database (either backend), reverts them, refuses destructive changes without
--allow-destructive, and changes nothing on --dry-run."""
import json
import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import BIN, Client, Server, ADMIN_EMAIL, ADMIN_PASSWORD, db_args, make_superuser


def migrate(data_dir, *args, mdir=None, extra_db=None):
    cmd = [BIN, "migrate", *args, f"--dir={data_dir}", *(extra_db if extra_db is not None else db_args(data_dir))]
    if mdir:
        cmd.append(f"--migrations-dir={mdir}")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def strip_times(v):
    if isinstance(v, dict):
        return {k: strip_times(x) for k, x in v.items() if k not in ("created", "updated")}
    if isinstance(v, list):
        return [strip_times(x) for x in v]
    return v


def schema_of(admin):
    """GET /api/collections apart from timestamps; _superusers and the default users
    collection are each database's own (made at bootstrap with their own field ids,
    never by a migration): only their shape."""
    r = admin.get("/api/collections", params={"perPage": 500})
    assert r.status_code == 200, r.text
    items = strip_times(r.json()["items"])
    for c in items:
        if c["name"] == "_superusers" or c["id"] == "_pb_users_auth_":
            for f in c["fields"]:
                f.pop("id")
    return sorted(items, key=lambda c: c["name"])


def build_schema(admin):
    """A schema with every kind of change: creates, a relation, an auth collection,
    renames, a dropped field, indexes, rules, an import, a deleted collection."""
    r = admin.post("/api/collections", json={
        "name": "authors", "type": "auth",
        "fields": [{"name": "display", "type": "text", "max": 80}],
        "listRule": "", "viewRule": "id = @request.auth.id"})
    assert r.status_code == 200, r.text
    authors = r.json()
    r = admin.post("/api/collections", json={
        "name": "posts",
        "fields": [{"name": "title", "type": "text", "required": True},
                   {"name": "body", "type": "editor"},
                   {"name": "views", "type": "number", "onlyInt": True},
                   {"name": "author", "type": "relation", "collectionId": authors["id"], "maxSelect": 1,
                    "cascadeDelete": True},
                   {"name": "tags", "type": "select", "values": ["a", "b", "c"], "maxSelect": 3}],
        "indexes": ["CREATE INDEX idx_posts_title ON posts (title)"],
        "listRule": "author = @request.auth.id"})
    assert r.status_code == 200, r.text
    posts = r.json()
    fields = [f for f in posts["fields"] if f["name"] != "views"]
    for f in fields:
        if f["name"] == "body":
            f["name"] = "content"
    fields.append({"name": "published", "type": "bool"})
    r = admin.patch(f"/api/collections/{posts['id']}", json={"fields": fields, "viewRule": ""})
    assert r.status_code == 200, r.text
    r = admin.post("/api/collections", json={"name": "scratch", "fields": [{"name": "x", "type": "text"}]})
    assert r.status_code == 200, r.text
    r = admin.delete("/api/collections/scratch")
    assert r.status_code == 204, r.text
    r = admin.post("/api/collections", json={"name": "post_titles", "type": "view",
                                              "viewQuery": "SELECT id, title FROM posts", "listRule": ""})
    assert r.status_code == 200, r.text
    r = admin.req("PUT", "/api/collections/import", json={"collections": [
        {"name": "notes", "type": "base", "fields": [{"name": "text", "type": "text"},
                                                      {"name": "meta", "type": "json"}],
         "search": ["text"]},
        {"name": "labels", "type": "base", "fields": [{"name": "label", "type": "text"}]}]})
    assert r.status_code == 204, r.text


@pytest.fixture
def fresh_dir():
    d = tempfile.mkdtemp(prefix="basalt-mig-")
    yield d
    if not os.environ.get("BASALT_KEEP_TMP"):
        shutil.rmtree(d, ignore_errors=True)


def test_api_changes_replay_onto_a_fresh_database(server, admin, fresh_dir):
    build_schema(admin)
    want = schema_of(admin)
    mdir = os.path.join(server.dir, "migrations")
    files = sorted(os.listdir(mdir))
    assert len(files) == 7, files
    assert files[0].endswith("_created_authors.json") and "_deleted_scratch" in files[4] and "_created_post_titles" in files[5], files
    doc = json.load(open(os.path.join(mdir, files[1])))
    assert doc["basalt_migration"] == 1 and doc["changes"][0]["before"] is None
    assert "secret" not in json.dumps(doc), "a token secret must not be in a migration file"
    # The server's own database has them all applied.
    out = migrate(server.dir, "status")
    assert out.returncode == 0, out.stderr
    assert "7 applied, 0 pending" in out.stdout, out.stdout

    # Replayed onto a fresh folder (and a fresh PostgreSQL database on that backend).
    shutil.copytree(mdir, os.path.join(fresh_dir, "migrations"))
    out = migrate(fresh_dir, "status")
    assert "0 applied, 7 pending" in out.stdout, out.stdout + out.stderr
    out = migrate(fresh_dir, "up")
    assert out.returncode == 0, out.stderr
    assert "Applied 7 migration(s)" in out.stdout, out.stdout
    out = migrate(fresh_dir, "up")
    assert out.returncode == 0 and "Nothing to apply" in out.stdout, out.stdout + out.stderr
    make_superuser(fresh_dir)
    # No new files when the server starts on it: the applied ones are recorded.
    srv = Server(fresh_dir).start()
    try:
        c = Client(srv.url)
        c.token = c.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        assert schema_of(c) == want
        # The replayed schema works: a record through the new definition.
        r = c.post("/api/collections/notes/records", json={"text": "hello there", "meta": {"a": 1}})
        assert r.status_code == 200, r.text
        r = c.get("/api/collections/notes/records", params={"search": "hello"})
        assert r.status_code == 200 and r.json()["totalItems"] == 1, r.text
    finally:
        assert srv.stop() == 0


@pytest.mark.skipif(not os.environ.get("BASALT_TEST_PG_URL"), reason="needs BASALT_TEST_PG_URL")
def test_sqlite_files_replay_onto_postgresql(tmpdir_path, fresh_dir):
    """Files made by a SQLite server apply to a fresh PostgreSQL database and give the
    same schema (and the other way round is the same code)."""
    make_superuser_sqlite = subprocess.run([BIN, "superuser", "upsert", ADMIN_EMAIL, ADMIN_PASSWORD,
                                            f"--dir={tmpdir_path}"], capture_output=True, text=True, timeout=30)
    assert make_superuser_sqlite.returncode == 0, make_superuser_sqlite.stderr
    # A SQLite server whatever the suite's backend, and one process whatever the
    # topology (instances never share an SQLite file; the PostgreSQL side below is a
    # cluster in cluster mode).
    srv = Server(tmpdir_path, topology="single")
    import conftest
    saved = conftest.BACKEND
    conftest.BACKEND = "sqlite"
    try:
        srv.start()
    finally:
        conftest.BACKEND = saved
    try:
        c = Client(srv.url)
        c.token = c.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        build_schema(c)
        want = schema_of(c)
    finally:
        assert srv.stop() == 0
    saved = conftest.BACKEND
    conftest.BACKEND = "postgres"
    try:
        pg = conftest.db_args(fresh_dir)
        shutil.copytree(os.path.join(tmpdir_path, "migrations"), os.path.join(fresh_dir, "migrations"))
        out = migrate(fresh_dir, "up", extra_db=pg)
        assert out.returncode == 0, out.stderr
        assert "on postgres" in out.stdout, out.stdout
        make_superuser(fresh_dir)
        srv = Server(fresh_dir).start()
        try:
            c = Client(srv.url)
            c.token = c.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
            assert schema_of(c) == want
        finally:
            assert srv.stop() == 0
    finally:
        conftest.BACKEND = saved


def test_down_then_up_round_trips(server, admin, fresh_dir):
    build_schema(admin)
    want = schema_of(admin)
    shutil.copytree(os.path.join(server.dir, "migrations"), os.path.join(fresh_dir, "migrations"))
    assert migrate(fresh_dir, "up").returncode == 0
    before = migrate(fresh_dir, "status").stdout
    # Revert the import, the delete and the scratch create, then everything.
    out = migrate(fresh_dir, "down", "3")
    assert out.returncode == 0, out.stderr
    assert "Reverted 3 migration(s)" in out.stdout
    assert "4 applied, 3 pending" in migrate(fresh_dir, "status").stdout
    out = migrate(fresh_dir, "down", "4")
    assert out.returncode == 0, out.stderr
    assert "0 applied, 7 pending" in migrate(fresh_dir, "status").stdout
    out = migrate(fresh_dir, "up")
    assert out.returncode == 0, out.stderr
    assert migrate(fresh_dir, "status").stdout == before
    make_superuser(fresh_dir)
    srv = Server(fresh_dir).start()
    try:
        c = Client(srv.url)
        c.token = c.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        assert schema_of(c) == want
    finally:
        assert srv.stop() == 0


def test_destructive_migration_refused_without_flag(server, admin):
    r = admin.post("/api/collections", json={"name": "items", "fields": [{"name": "a", "type": "text"},
                                                                           {"name": "b", "type": "text"}]})
    assert r.status_code == 200, r.text
    coll = r.json()
    assert admin.post("/api/collections/items/records", json={"a": "1", "b": "2"}).status_code == 200
    # Dropping field b through the API writes a migration; reverting it re-adds b (fine),
    # re-applying it drops b again while a record holds a value: refused.
    fields = [f for f in coll["fields"] if f["name"] != "b"]
    assert admin.patch("/api/collections/items", json={"fields": fields}).status_code == 200
    out = migrate(server.dir, "down")
    assert out.returncode == 0, out.stderr
    out = migrate(server.dir, "up", "--dry-run")
    assert out.returncode == 1
    assert "refused" in out.stderr and "b" in out.stderr and "items" in out.stderr and "1 record" in out.stderr, out.stderr
    out = migrate(server.dir, "up")
    assert out.returncode == 1 and "--allow-destructive" in out.stderr, out.stderr
    assert "Nothing was changed" in out.stderr
    assert "1 pending" in migrate(server.dir, "status").stdout
    out = migrate(server.dir, "up", "--allow-destructive")
    assert out.returncode == 0, out.stderr
    # Reverting the collection's creation would delete its record: refused too.
    out = migrate(server.dir, "down", "2")
    assert out.returncode == 1 and "dropping collection items would delete its 1 record" in out.stderr, out.stderr


def test_dry_run_changes_nothing(server, admin, fresh_dir):
    build_schema(admin)
    shutil.copytree(os.path.join(server.dir, "migrations"), os.path.join(fresh_dir, "migrations"))
    out = migrate(fresh_dir, "up", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "+ collection posts" in out.stdout
    assert "- field posts.views" in out.stdout
    assert "~ field posts.body renamed to content" in out.stdout
    assert "+ field posts.published (bool)" in out.stdout
    assert "+ index" in out.stdout and "- collection scratch" in out.stdout
    assert "+ collection post_titles" in out.stdout
    assert "nothing was changed" in out.stdout
    assert "0 applied, 7 pending" in migrate(fresh_dir, "status").stdout
    make_superuser(fresh_dir)
    srv = Server(fresh_dir).start()
    try:
        c = Client(srv.url)
        c.token = c.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        assert [x["name"] for x in schema_of(c)] == ["_superusers", "users"]  # what every fresh folder gets
    # (the view was in the plan too)
    finally:
        assert srv.stop() == 0


def test_create_and_bad_files(tmpdir_path):
    out = migrate(tmpdir_path, "create", "add_tags")
    assert out.returncode == 0, out.stderr
    mdir = os.path.join(tmpdir_path, "migrations")
    [name] = os.listdir(mdir)
    assert name.endswith("_add_tags.json")
    doc = json.load(open(os.path.join(mdir, name)))
    doc["changes"] = [{"before": None, "after": {"id": "pbc_tags0001", "name": "tags", "type": "base",
                                                 "fields": [{"name": "label", "type": "text"}]}}]
    json.dump(doc, open(os.path.join(mdir, name), "w"))
    out = migrate(tmpdir_path, "up")
    assert out.returncode == 0, out.stderr
    assert "+ collection tags" in out.stdout
    assert migrate(tmpdir_path, "create", "Bad-Name").returncode == 2
    open(os.path.join(mdir, "9999999999999_broken.json"), "w").write("{not json")
    out = migrate(tmpdir_path, "up")
    assert out.returncode == 1 and "9999999999999_broken.json" in out.stderr, out.stderr
    open(os.path.join(mdir, "9999999999999_broken.json"), "w").write('{"basalt_migration": 1, "changes": [{}]}')
    out = migrate(tmpdir_path, "up")
    assert out.returncode == 1 and "change 0" in out.stderr, out.stderr
    # An invalid collection in a change: the field error is named and nothing applies.
    open(os.path.join(mdir, "9999999999999_broken.json"), "w").write(json.dumps(
        {"basalt_migration": 1, "changes": [{"before": None, "after": {"name": "9bad", "fields": []}}]}))
    out = migrate(tmpdir_path, "up")
    assert out.returncode == 1 and "name" in out.stderr, out.stderr
    assert migrate(tmpdir_path, "down", "zero").returncode == 2


def test_bad_name_on_a_collection_with_indexes_is_refused(server, admin):
    """Found by fuzz_migration: a refused name on a collection with indexes used to
    crash the server (the indexes were rebuilt on a collection without a name)."""
    r = admin.post("/api/collections", json={"name": "idx", "fields": [{"name": "a", "type": "text"}],
                                          "indexes": ["CREATE INDEX idx_a ON idx (a)"]})
    assert r.status_code == 200, r.text
    r = admin.patch("/api/collections/idx", json={"name": "bad'name"})
    assert r.status_code == 400 and "name" in r.json()["data"], r.text
    assert admin.get("/api/collections/idx").status_code == 200
