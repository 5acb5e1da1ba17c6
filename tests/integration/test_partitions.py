"""Partitioned collections (plan 003 partitions orders by quarter): a Basalt option of
the collection, `"partition": {"field": <date field>, "interval": "month"|"quarter"|
"year"}`, that range-partitions its table on PostgreSQL and keeps every API behaviour
the same; SQLite refuses it with a clear error."""
import os
import subprocess

import pytest

from conftest import BACKEND, assert_error, db_args

ORDERS = {"name": "orders", "listRule": "", "viewRule": "", "createRule": "", "updateRule": "", "deleteRule": "",
          "fields": [{"name": "placed", "type": "date", "required": True}, {"name": "total", "type": "number"},
                     {"name": "status", "type": "select", "maxSelect": 1, "values": ["new", "paid"]}],
          "indexes": ["CREATE INDEX idx_orders_status ON orders (status)"],
          "partition": {"field": "placed", "interval": "quarter"}}


def psql(server, sql):
    db = [a for a in db_args(server.dir) if a.startswith("--db-listen=")][0].split("=", 1)[1]
    out = subprocess.run(["psql", db, "-qAt", "-c", sql], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(BACKEND != "sqlite", reason="the SQLite refusal")
def test_sqlite_refuses_partitioned_collections(admin):
    body = assert_error(admin.post("/api/collections", json=ORDERS), 400, "partition")
    assert "PostgreSQL" in body["data"]["partition"]["message"]
    assert admin.get("/api/collections/orders").status_code == 404


def test_invalid_partition_options_are_400(admin):
    for part in [{"field": "total", "interval": "quarter"}, {"field": "nope", "interval": "month"},
                 {"field": "placed", "interval": "week"}, "placed"]:
        assert_error(admin.post("/api/collections", json=dict(ORDERS, partition=part)), 400, "partition")
    uniq = dict(ORDERS, indexes=["CREATE UNIQUE INDEX idx_orders_total ON orders (total)"])
    assert_error(admin.post("/api/collections", json=uniq), 400, "indexes")


@pytest.mark.skipif(BACKEND != "postgres", reason="partitioning is PostgreSQL's")
def test_partitioned_orders_behave_like_any_collection(server, admin):
    r = admin.post("/api/collections", json=ORDERS)
    assert r.status_code == 200, r.text
    assert r.json()["partition"] == {"field": "placed", "interval": "quarter"}
    cid = r.json()["id"]
    # Partitions exist ahead of time, plus the default one.
    parts = psql(server, "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent "
                         "WHERE p.relname = 'orders'")
    assert int(parts) >= 17, parts
    url = "/api/collections/orders/records"
    dates = ["2026-01-15 10:00:00.000Z", "2026-04-01 00:00:00.000Z", "2026-12-31 23:59:59.999Z",
             "2031-06-01 00:00:00.000Z", "1999-01-01 00:00:00.000Z"]
    ids = []
    for i, d in enumerate(dates):
        r = admin.post(url, json={"placed": d, "total": 10 * (i + 1), "status": "new"})
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    # Each row sits in the partition of its quarter (far dates: the default partition).
    where = psql(server, f"SELECT tableoid::regclass || ':' || total FROM orders ORDER BY total")
    assert where.split("\n") == [f"_p_{cid}_2026q1:10", f"_p_{cid}_2026q2:20", f"_p_{cid}_2026q4:30",
                                 f"_p_{cid}_default:40", f"_p_{cid}_default:50"], where
    # List, filter, sort, count, view: as on any collection.
    body = admin.get(url, params={"filter": "placed >= '2026-01-01' && placed < '2027-01-01'",
                                  "sort": "-placed"}).json()
    assert [x["total"] for x in body["items"]] == [30, 20, 10] and body["totalItems"] == 3
    assert admin.get(f"{url}/{ids[1]}").json()["placed"] == dates[1]
    # An update that moves the record to another quarter moves it to that partition.
    r = admin.patch(f"{url}/{ids[0]}", json={"placed": "2026-08-08 08:00:00.000Z", "status": "paid"})
    assert r.status_code == 200, r.text
    assert psql(server, f"SELECT tableoid::regclass FROM orders WHERE id = '{ids[0]}'") == f"_p_{cid}_2026q3"
    # The id stays unique across partitions.
    dup = admin.post(url, json={"id": ids[1], "placed": "2026-10-10 00:00:00.000Z", "total": 1})
    assert_error(dup, 400, "id", "validation_not_unique")
    # Delete, and the id is free again.
    assert admin.delete(f"{url}/{ids[1]}").status_code == 204
    again = admin.post(url, json={"id": ids[1], "placed": "2026-10-10 00:00:00.000Z", "total": 1})
    assert again.status_code == 200, again.text
    # Schema changes still work: add and rename a field, rename the collection.
    r = admin.patch("/api/collections/orders", json={"name": "orders2", "fields": [
        {"name": "placed", "type": "date", "required": True}, {"name": "amount", "type": "number"},
        {"name": "status", "type": "select", "maxSelect": 1, "values": ["new", "paid"]},
        {"name": "note", "type": "text"}], "partition": {"field": "placed", "interval": "quarter"}})
    assert r.status_code == 200, r.text
    assert admin.get("/api/collections/orders2/records", params={"perPage": 1}).json()["totalItems"] == 5
    # The partitioning itself cannot change.
    assert_error(admin.patch("/api/collections/orders2", json={"partition": {"field": "placed", "interval": "year"}}),
                 400, "partition")
    assert_error(admin.patch("/api/collections/orders2", json={"partition": None}), 400, "partition")
    # Restart: the definition and the data stay.
    server.stop()
    server.start()
    admin.url = server.url  # a new port
    assert admin.get("/api/collections/orders2").json()["partition"]["interval"] == "quarter"
    assert admin.get("/api/collections/orders2/records").json()["totalItems"] == 5
    # Deleting the collection removes its partitions and id table.
    assert admin.delete("/api/collections/orders2").status_code == 204
    left = psql(server, f"SELECT count(*) FROM pg_class WHERE relname LIKE '%{cid.lower()}%' "
                        f"OR relname LIKE '%{cid}%'")
    assert left == "0", left


@pytest.mark.skipif(BACKEND != "postgres", reason="partitioning is PostgreSQL's")
def test_a_running_server_keeps_making_partitions_ahead(tmpdir_path):
    """A server that runs for months must not start writing a new quarter into the
    default partition: its maintenance round recreates the partitions ahead of today,
    here one dropped by hand, without a restart."""
    import time
    from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Client, Server, make_superuser
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path, ["--maintenance-interval-s=1"]).start()
    try:
        admin = Client(srv.url)
        admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        r = admin.post("/api/collections", json=ORDERS)
        assert r.status_code == 200, r.text
        cid = r.json()["id"]
        ahead = psql(srv, "SELECT max(c.relname) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                          "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'orders' "
                          "AND c.relname <> " f"'_p_{cid}_default'")
        psql(srv, f'DROP TABLE "{ahead}"')
        gone = psql(srv, f"SELECT count(*) FROM pg_class WHERE relname = '{ahead}'")
        assert gone == "0"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if psql(srv, f"SELECT count(*) FROM pg_class WHERE relname = '{ahead}'") == "1":
                break
            time.sleep(0.5)
        assert psql(srv, f"SELECT count(*) FROM pg_class WHERE relname = '{ahead}'") == "1", \
            "the maintenance round did not recreate the partition"
    finally:
        assert srv.stop() == 0
