"""A sorted list walks an index in order on PostgreSQL instead of sorting every match.

Basalt's fields are NOT NULL columns (all but JSON fields), and on them a sort needs no
NULLS FIRST/LAST: SQLite's NULL order (first ascending, last descending) is the
opposite of PostgreSQL's, so Basalt spelled it out on every term, and then PostgreSQL
could not read an index such as (status, priority) backwards for `sort=-priority`:
it fetched every matching row and sorted them for a page of 30 (measured in make
bench: 8.4 ms instead of 0.1 ms per list on 100,000 records; the cache-off list at
0.08x Fastify's).

The test takes the list statement Basalt ran from pg_stat_statements (scripts/pg-env.sh
preloads it), prepares it on a direct connection and asks for its plan with sorts and
sequential scans disabled: a plan that can follow the index has no Sort node, one that
cannot keeps it whatever the table's size, so the answer does not depend on statistics.

PostgreSQL only (BASALT_TEST_BACKEND=postgres, make integration-pg).
"""
import subprocess

import pytest

from conftest import BACKEND, ADMIN_EMAIL, ADMIN_PASSWORD, Client, Server, db_args, make_superuser

pytestmark = pytest.mark.skipif(BACKEND != "postgres", reason="PostgreSQL only (make integration-pg)")


def psql(url, sql):
    out = subprocess.run(["psql", url, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def plan_of(url, statement, args):
    """The plan of a statement with $n parameters, as PostgreSQL would run it with sorts,
    sequential and bitmap scans disabled (each is then only a last resort)."""
    return psql(url, "SET enable_sort = off; SET enable_seqscan = off; SET enable_bitmapscan = off; "
                     f"PREPARE q AS {statement}; EXPLAIN EXECUTE q({args})")


def test_a_sort_on_fields_follows_the_index_and_json_sorts_keep_their_null_order(tmpdir_path):
    make_superuser(tmpdir_path)
    direct = [a for a in db_args(tmpdir_path) if a.startswith("--db-listen=")][0].split("=", 1)[1]
    if psql(direct, "SELECT count(*) FROM pg_settings WHERE name = 'shared_preload_libraries' AND "
                    "setting LIKE '%pg_stat_statements%'").strip() != "1":
        pytest.skip("needs PostgreSQL started with shared_preload_libraries=pg_stat_statements "
                    "(scripts/pg-env.sh does since this test)")
    psql(direct, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    srv = Server(tmpdir_path, ["--cache-budget-mb=0"]).start()
    try:
        admin = Client(srv.url)
        admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        r = admin.post("/api/collections", json={
            "name": "plan_tasks", "listRule": "",
            "fields": [{"name": "status", "type": "text"}, {"name": "priority", "type": "number"},
                       {"name": "meta", "type": "json"}],
            "indexes": ["CREATE INDEX idx_plan_tasks_sp ON plan_tasks (status, priority)"]})
        assert r.status_code == 200, r.text
        reqs = [{"method": "POST", "url": "/api/collections/plan_tasks/records",
                 "body": {"status": ("doing", "done")[i % 2], "priority": i % 10,
                          **({"meta": {"n": i}} if i % 3 else {})}} for i in range(40)]
        r = admin.post("/api/batch", json={"requests": reqs})
        assert r.status_code == 200, r.text
        psql(direct, "SELECT pg_stat_statements_reset()")

        r = admin.get("/api/collections/plan_tasks/records",
                      params={"filter": "status = 'doing' && priority >= 5", "sort": "-priority",
                              "perPage": 5, "skipTotal": 1})
        assert r.status_code == 200, r.text
        got = [(x["status"], x["priority"]) for x in r.json()["items"]]
        assert got == sorted(got, key=lambda t: -t[1]) and len(got) == 5 and all(s == "doing" for s, _ in got)

        stmt = psql(direct, "SELECT query FROM pg_stat_statements WHERE query LIKE '%FROM \"plan_tasks\"%' "
                            "AND query LIKE '%ORDER BY%' ORDER BY calls DESC LIMIT 1").strip()
        assert "ORDER BY" in stmt, stmt
        assert "NULLS" not in stmt, f"a NOT NULL field sorted with a NULLS clause: {stmt}"
        assert "$4" in stmt and "$5" not in stmt, stmt  # status, priority, LIMIT, OFFSET
        plan = plan_of(direct, stmt, "'doing', 5, 5, 0")
        assert "Sort" not in plan, plan
        assert "idx_plan_tasks_sp" in plan, plan

        # A JSON field may be NULL: its sort keeps SQLite's NULL order (NULL first ascending).
        r = admin.get("/api/collections/plan_tasks/records", params={"sort": "meta.n,priority", "perPage": 40,
                                                                      "skipTotal": 1})
        assert r.status_code == 200, r.text
        metas = [x.get("meta") for x in r.json()["items"]]
        nulls = sum(1 for m in metas if m is None)
        assert nulls == 14 and all(m is None for m in metas[:nulls]), metas
        assert [m["n"] for m in metas[nulls:]] == sorted(m["n"] for m in metas[nulls:])
    finally:
        rc = srv.stop()
        assert srv.killed or rc == 0, f"basalt exited with {rc}; see {tmpdir_path}/server.log"
