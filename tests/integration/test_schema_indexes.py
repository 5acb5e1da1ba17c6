"""A collection's update keeps the indexes and the search index whose definition it
does not change (a rule, one more index, one more field), instead of building them
all again: on a collection of a million rows that took longer than the statement
deadline (the 50 GB shop). A change of the columns (a rename) still rebuilds them.
Both backends; the database is inspected to tell a kept index from a rebuilt one."""
import os
import sqlite3
import subprocess

from conftest import BACKEND, db_args

URL = "/api/collections/things/records"


def identities(server, names):
    """Each index's physical identity: its root page (SQLite) or OID (PostgreSQL)."""
    if BACKEND == "postgres":
        url = [a for a in db_args(server.dir) if a.startswith("--db-listen=")][0].split("=", 1)[1]
        out = subprocess.run(["psql", url, "-qAt", "-c",
                              "SELECT relname || '=' || oid FROM pg_class WHERE relname IN (%s)"
                              % ",".join(f"'{n}'" for n in names)], capture_output=True, text=True, check=True)
        return dict(line.split("=") for line in out.stdout.split())
    db = sqlite3.connect(f"file:{os.path.join(server.dir, 'data.db')}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT name, rootpage FROM sqlite_master WHERE name IN (%s)" % ",".join("?" * len(names)),
                          names).fetchall()
    finally:
        db.close()
    return {n: str(p) for n, p in rows}


def search_index(cid):
    return f"_fts_{cid}" if BACKEND == "postgres" else f"_fts_{cid}_data"  # FTS5's shadow table


def titles(admin, q):
    r = admin.get(URL, params={"search": q, "sort": "n"})
    assert r.status_code == 200, r.text
    return [x["title"] for x in r.json()["items"]]


def test_an_update_keeps_what_it_does_not_change(server, admin):
    r = admin.post("/api/collections", json={
        "name": "things", "listRule": "", "fields": [{"name": "title", "type": "text"}, {"name": "n", "type": "number"}],
        "indexes": ["CREATE INDEX idx_things_n ON things (n)"], "search": ["title"]})
    assert r.status_code == 200, r.text
    cid = r.json()["id"]
    for i, t in enumerate(["red oak", "blue steel", "red wool"]):
        assert admin.post(URL, json={"title": t, "n": i}).status_code == 200
    names = ["idx_things_n", "idx_things_title", search_index(cid)]
    first = identities(server, names)
    assert set(first) == {"idx_things_n", search_index(cid)}, first

    # A rule, one more index, one more field: the others stay as they were.
    r = admin.patch("/api/collections/things", json={"listRule": "n >= 0"})
    assert r.status_code == 200, r.text
    r = admin.patch("/api/collections/things", json={
        "indexes": ["CREATE INDEX idx_things_n ON things (n)", "CREATE INDEX idx_things_title ON things (title)"],
        "fields": r.json()["fields"] + [{"name": "note", "type": "text"}]})
    assert r.status_code == 200, r.text
    kept = identities(server, names)
    assert kept["idx_things_n"] == first["idx_things_n"]
    assert kept[search_index(cid)] == first[search_index(cid)]
    assert "idx_things_title" in kept
    assert titles(admin, "red") == ["red oak", "red wool"]
    assert admin.post(URL, json={"title": "red linen", "n": 9}).status_code == 200  # the index follows writes
    assert titles(admin, "red") == ["red oak", "red wool", "red linen"]

    # Dropping an index drops it; the search's fields changed rebuild the search index.
    r = admin.patch("/api/collections/things", json={"indexes": ["CREATE INDEX idx_things_n ON things (n)"],
                                                      "search": ["title", "note"]})
    assert r.status_code == 200, r.text
    now = identities(server, names)
    assert "idx_things_title" not in now and now["idx_things_n"] == first["idx_things_n"]
    assert titles(admin, "red") == ["red oak", "red wool", "red linen"]

    # A renamed column: its index and the search index are made again, and work.
    fields = [dict(f, name="num") if f["name"] == "n" else f for f in r.json()["fields"]]
    r = admin.patch("/api/collections/things", json={"fields": fields, "listRule": "num >= 0",
                                                      "indexes": ["CREATE INDEX idx_things_n ON things (num)"]})
    assert r.status_code == 200, r.text
    r = admin.get(URL, params={"search": "red", "sort": "num"})
    assert r.status_code == 200, r.text
    assert [x["title"] for x in r.json()["items"]] == ["red oak", "red wool", "red linen"]
    assert "idx_things_n" in identities(server, names)
