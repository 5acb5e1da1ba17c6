"""Storage errors: when the database cannot grow, writes get a clear 503/507, reads
keep working, nothing is corrupted, and writes recover without a restart."""
import os
import shutil
import sqlite3
import subprocess

import pytest

from conftest import Client, assert_error, sqlite_only

# The embedded file's own failure modes; PostgreSQL's are in test_pg_faults.py.
pytestmark = sqlite_only("the embedded database file's size limit and integrity")


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
def test_file_size_limit_then_recovery(server, admin):
    admin.post("/api/collections", json={"name": "blobs", "createRule": "", "listRule": "", "viewRule": "",
                                         "fields": [{"name": "data", "type": "text"}]})
    c = Client(server.url)
    ok_ids = [c.post("/api/collections/blobs/records", json={"data": "x" * 2000}).json()["id"] for _ in range(20)]
    pid = server.proc.pid
    # No file of the process may grow past 4 KiB: every database write now fails.
    subprocess.run(["prlimit", f"--pid={pid}", "--fsize=4096:unlimited"], check=True)
    try:
        for _ in range(5):
            r = c.post("/api/collections/blobs/records", json={"data": "y" * 4000})
            body = assert_error(r, r.status_code)
            assert r.status_code in (503, 507), r.text
            assert "database" in body["message"].lower() or "space" in body["message"].lower()
        # Reads and health still work.
        assert c.get("/api/health").status_code == 200
        assert c.get(f"/api/collections/blobs/records/{ok_ids[0]}").status_code == 200
    finally:
        subprocess.run(["prlimit", f"--pid={pid}", "--fsize=unlimited:unlimited"], check=True)
    # Recovery without restart.
    r = c.post("/api/collections/blobs/records", json={"data": "after"})
    assert r.status_code == 200, r.text
    total = c.get("/api/collections/blobs/records").json()["totalItems"]
    assert total == 21
    assert server.stop() == 0
    con = sqlite3.connect(os.path.join(server.dir, "data.db"))
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT COUNT(*) FROM blobs").fetchone()[0] == 21
    con.close()
