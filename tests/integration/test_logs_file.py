"""SQLite: the request log lives in logs.db, a database file of its own in the data folder
(ADR 0020), never in data.db; it survives a restart; a data folder from before, whose
data.db holds a _logs table (with or without the authId column), opens with its rows moved
into logs.db once, none lost or doubled; a user erased from the command line loses her
entries in logs.db too."""
import os
import sqlite3
import subprocess
import time

import requests

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, BIN, Client, Server, make_superuser, sqlite_only

pytestmark = sqlite_only("the request log's own file beside data.db")


def tables(path):
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def log_rows(path, where="1", args=()):
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT id, url FROM _logs WHERE {where}", args).fetchall()


def admin_of(srv):
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    return admin


def api_total(admin, flt):
    r = admin.get("/api/logs", params={"filter": flt, "perPage": 500})
    assert r.status_code == 200, r.text
    return r.json()["totalItems"]


def wait_total(admin, flt, n, timeout=10):
    deadline = time.time() + timeout
    while api_total(admin, flt) < n and time.time() < deadline:
        time.sleep(0.2)
    return api_total(admin, flt)


def test_entries_live_in_logs_db_and_survive_a_restart(tmpdir_path):
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path).start()
    try:
        admin = admin_of(srv)
        for _ in range(3):
            admin.get("/api/collections/filecheck/records")
        assert wait_total(admin, 'url = "/api/collections/filecheck/records"', 3) == 3
        item = admin.get("/api/logs", params={"filter": 'url = "/api/collections/filecheck/records"'}).json()["items"][0]
    finally:
        assert srv.stop() == 0
    data, logs = os.path.join(tmpdir_path, "data.db"), os.path.join(tmpdir_path, "logs.db")
    assert "_logs" not in tables(data)  # nothing of the log in the records' file
    assert len(log_rows(logs, "url = ?", ("/api/collections/filecheck/records",))) == 3
    srv = Server(tmpdir_path).start()
    try:
        admin = admin_of(srv)
        assert api_total(admin, 'url = "/api/collections/filecheck/records"') == 3
        again = admin.get(f"/api/logs/{item['id']}")
        assert again.status_code == 200 and again.json() == item
        stats = admin.get("/api/logs/stats", params={"filter": 'url = "/api/collections/filecheck/records"'})
        assert stats.status_code == 200 and sum(s["total"] for s in stats.json()) == 3
    finally:
        assert srv.stop() == 0


OLD_COLUMNS = ("id TEXT PRIMARY KEY NOT NULL, created TEXT NOT NULL, level INTEGER NOT NULL, message TEXT "
               "NOT NULL, method TEXT NOT NULL, url TEXT NOT NULL, status INTEGER NOT NULL, \"execTime\" "
               "DOUBLE PRECISION NOT NULL, \"remoteIP\" TEXT NOT NULL, \"userIP\" TEXT NOT NULL, referer TEXT "
               "NOT NULL, \"userAgent\" TEXT NOT NULL, auth TEXT NOT NULL")


def plant_old_log(data, n, with_auth_id):
    """A data.db as a build before logs.db left it: _logs and its index in the file."""
    with sqlite3.connect(data) as db:
        db.execute("DROP TABLE IF EXISTS _logs")
        extra = ", \"authId\" TEXT NOT NULL DEFAULT ''" if with_auth_id else ""
        db.execute(f"CREATE TABLE _logs ({OLD_COLUMNS}{extra})")
        db.execute("CREATE INDEX _logs_created ON _logs (created)")
        for i in range(n):
            db.execute("INSERT INTO _logs (id, created, level, message, method, url, status, \"execTime\", "
                       "\"remoteIP\", \"userIP\", referer, \"userAgent\", auth) VALUES (?, ?, 0, ?, 'GET', ?, "
                       "200, 1.5, '127.0.0.1', '127.0.0.1', '', 'old/1', '')",
                       (f"old{i:012d}", time.strftime("%Y-%m-%d %H:%M:%S.000Z", time.gmtime()),
                        f"GET /api/old/{i}", f"/api/old/{i}"))


def test_a_data_folder_with_old_log_rows_opens_and_keeps_them(tmpdir_path):
    make_superuser(tmpdir_path)
    data, logs = os.path.join(tmpdir_path, "data.db"), os.path.join(tmpdir_path, "logs.db")
    for with_auth_id, n in ((False, 2050), (True, 7)):  # more than one chunk (2,000) of the move
        plant_old_log(data, n, with_auth_id)
        srv = Server(tmpdir_path).start()
        try:
            admin = admin_of(srv)
            assert api_total(admin, 'url ~ "/api/old/"') == n
            one = admin.get("/api/logs/old000000000001")
            assert one.status_code == 200, one.text
            assert one.json()["data"]["url"] == "/api/old/1" and one.json()["data"]["userAgent"] == "old/1"
        finally:
            assert srv.stop() == 0
        assert "_logs" not in tables(data)
        assert len(log_rows(logs, "url LIKE '/api/old/%'")) == n
        # The next start finds nothing to move and doubles nothing.
        srv = Server(tmpdir_path).start()
        try:
            assert api_total(admin_of(srv), 'url ~ "/api/old/"') == n
        finally:
            assert srv.stop() == 0
        with sqlite3.connect(logs) as db:
            db.execute("DELETE FROM _logs WHERE url LIKE '/api/old/%'")


def test_a_move_cut_short_is_finished_without_doubles(tmpdir_path):
    """Rows already in logs.db (a start that stopped before the data file's table was
    dropped) are skipped; the rest come over."""
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path).start()
    assert srv.stop() == 0
    data, logs = os.path.join(tmpdir_path, "data.db"), os.path.join(tmpdir_path, "logs.db")
    plant_old_log(data, 10, True)
    with sqlite3.connect(data) as src, sqlite3.connect(logs) as dst:
        rows = src.execute("SELECT * FROM _logs ORDER BY id LIMIT 4").fetchall()
        dst.executemany(f"INSERT INTO _logs VALUES ({', '.join('?' * 14)})", rows)
    srv = Server(tmpdir_path).start()
    try:
        assert api_total(admin_of(srv), 'url ~ "/api/old/"') == 10
    finally:
        assert srv.stop() == 0
    assert len(log_rows(logs, "url LIKE '/api/old/%'")) == 10


def test_command_line_erasure_forgets_entries_in_logs_db(tmpdir_path):
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path).start()
    try:
        admin = admin_of(srv)
        r = admin.post("/api/collections", json={"name": "members", "type": "auth", "fields": [],
                                                 "createRule": "", "viewRule": "id = @request.auth.id"})
        assert r.status_code == 200, r.text
        r = admin.post("/api/collections/members/records", json={
            "email": "m@example.com", "password": "password-123", "passwordConfirm": "password-123"})
        assert r.status_code == 200, r.text
        uid = r.json()["id"]
        m = Client(srv.url)
        m.token = m.login("members", "m@example.com", "password-123")
        assert m.get(f"/api/collections/members/records/{uid}").status_code == 200
        assert wait_total(admin, f'url ~ "{uid}"', 1) >= 1
    finally:
        assert srv.stop() == 0
    logs = os.path.join(tmpdir_path, "logs.db")
    assert log_rows(logs, "url LIKE ?", (f"%{uid}%",))
    out = subprocess.run([BIN, "user", "erase", "members", uid, f"--dir={tmpdir_path}"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert log_rows(logs, "url LIKE ? OR \"authId\" = ?", (f"%{uid}%", uid)) == []
    assert log_rows(logs)  # the others' entries stay
