"""examples/shop: plan 003's schema and its generator, at a tiny scale, on both
backends: every table gets its rows, the rules hold for a generated user, search and
statistics answer over the generated data."""
import json
import os
import subprocess
import sys

import pytest
from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, BACKEND, Client, assert_error, db_args

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("bulk", ["c", "python", "sql"])
def test_generated_shop_serves_as_the_plan_says(server, admin, bulk):
    target = [a.split("=", 1)[1] for a in db_args(server.dir) if a.startswith("--db-listen=")]
    where = ["--pg", target[0]] if BACKEND == "postgres" else ["--dir", server.dir]
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples/shop/generate.py"), "--url", server.url,
                          "--email", ADMIN_EMAIL, "--password", ADMIN_PASSWORD, "--scale", "0.2", "--bulk", bulk, "--staff", "1", *where],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout.strip().splitlines()[-1])
    assert made["orders"] == 200 and 200 <= made["order_items"] <= 1200 and made["verified"]
    for coll, n in [("categories", 40), ("products", made["products"]), ("inventory", made["products"]),
                    ("orders", 200), ("order_items", made["order_items"]), ("shop_users", made["users"]),
                    ("carts", made["users"])]:
        body = admin.get(f"/api/collections/{coll}/records", params={"perPage": 1}).json()
        assert body["totalItems"] == n, (coll, body)
    if BACKEND == "postgres":
        assert admin.get("/api/collections/orders").json()["partition"]["interval"] == "quarter"
    # A generated user signs in with the shared password and sees only their orders.
    u = Client(server.url)
    u.token = u.login("shop_users", "user1@shop.example", made["user_password"])
    mine = u.get("/api/collections/orders/records", params={"perPage": 500}).json()
    everyone = admin.get("/api/collections/orders/records", params={"perPage": 500,
                                                                    "filter": "user.email = 'user1@shop.example'"})
    assert mine["totalItems"] == everyone.json()["totalItems"]
    items = u.get("/api/collections/order_items/records", params={"perPage": 500}).json()
    theirs = admin.get("/api/collections/order_items/records", params={
        "perPage": 1, "filter": "purchase.user.email = 'user1@shop.example'"}).json()
    assert items["totalItems"] == theirs["totalItems"] and items["totalItems"] >= mine["totalItems"]
    assert {i["purchase"] for i in items["items"]} <= {o["id"] for o in mine["items"]}
    # Stock: only staff change it, a user may neither raise nor lower it (the attacks are
    # in test_shop_rules.py).
    inv = admin.get("/api/collections/inventory/records", params={"perPage": 1}).json()["items"][0]
    assert_error(u.patch(f"/api/collections/inventory/records/{inv['id']}", json={"stock": inv["stock"] + 10}), 404)
    assert_error(u.patch(f"/api/collections/inventory/records/{inv['id']}", json={"stock-": 1}), 404)
    staff = Client(server.url)
    staff.token = staff.login("shop_users", "user0@shop.example", made["user_password"])
    r = staff.patch(f"/api/collections/inventory/records/{inv['id']}", json={"stock": inv["stock"] + 10})
    assert r.status_code == 200 and r.json()["stock"] == inv["stock"] + 10
    # Search, statistics and a cursor over the generated data.
    hits = u.get("/api/collections/products/records", params={"search": "lamp"}).json()["items"]
    assert all("lamp" in (p["name"] + p["description"]).lower() for p in hits)
    st = admin.get("/api/basalt/collections/orders/stats", params={"groupBy": "status,placed:month",
                                                                  "aggregates": "count,sum(total)"}).json()
    assert sum(i["count"] for i in st["items"]) == 200
    page = u.get("/api/collections/products/records", params={"cursor": "", "sort": "-price", "perPage": 7}).json()
    assert page["nextCursor"] and len(page["items"]) == 7
