"""examples/shop/schema.json's rules against an attacker, on both backends (make
integration / integration-pg): only staff change a product's stock (a signed-in user's
decrement is refused, alone or inside a checkout batch, and the whole batch with it),
nobody makes themselves staff, a user's checkout through /api/batch still works and
ties each line to the user's own new order and to the stock there is, and staff
fulfil an order (status and stock in one batch)."""
import json
import os

import pytest

from conftest import Client, assert_error

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PW = "shop-password-1"
PLACED = "2026-11-30 10:00:00.000Z"


@pytest.fixture(scope="module")
def shop(shared_server, shared_admin):
    a = shared_admin
    schema = json.load(open(os.path.join(ROOT, "examples/shop/schema.json")))
    r = a.req("PUT", "/api/collections/import", json={"collections": schema["collections"], "deleteMissing": False})
    assert r.status_code in (200, 204), r.text
    cat = a.post("/api/collections/categories/records", json={"name": "Lamps", "slug": "lamps"}).json()["id"]
    prods, inv = [], []
    for i, stock in enumerate((5, 3)):
        r = a.post("/api/collections/products/records", json={"name": f"Lamp {i}", "sku": f"L-{i}", "price": 10 + i,
                                                               "category": cat})
        assert r.status_code == 200, r.text
        prods.append(r.json()["id"])
        r = a.post("/api/collections/inventory/records", json={"product": prods[-1], "stock": stock})
        assert r.status_code == 200, r.text
        inv.append(r.json()["id"])
    people = {}
    for name, staff in (("staff", True), ("alice", False), ("mallory", False)):
        r = a.post("/api/collections/shop_users/records", json={
            "email": f"{name}@shop.test", "password": PW, "passwordConfirm": PW, "name": name, "staff": staff})
        assert r.status_code == 200, r.text
        c = Client(shared_server.url)
        c.token = c.login("shop_users", f"{name}@shop.test", PW)
        c.id = r.json()["id"]
        people[name] = c
    return {"admin": a, "prods": prods, "inv": inv, **people}


def stock(shop, i):
    return shop["admin"].get(f"/api/collections/inventory/records/{shop['inv'][i]}").json()["stock"]


def checkout(user, oid, lines, extra=()):
    reqs = [{"method": "POST", "url": "/api/collections/orders/records",
             "body": {"id": oid, "user": user.id, "status": "new", "total": 0, "placed": PLACED}}]
    reqs += [{"method": "POST", "url": "/api/collections/order_items/records",
              "body": {"purchase": oid, "product": p, "qty": q, "price": 1}} for p, q in lines]
    return user.post("/api/batch", json={"requests": reqs + list(extra)})


def failed_item(r):
    body = assert_error(r, 400, "requests")
    (index, item), = body["data"]["requests"].items()
    assert item["code"] == "batch_request_failed"
    return int(index), item["response"]["status"]


def test_a_users_stock_decrement_is_refused(shop):
    m, inv = shop["mallory"], shop["inv"]
    before = stock(shop, 0)
    # The old example let any signed-in user lower any stock: now only staff.
    for body in ({"stock-": 1}, {"stock": 0}, {"stock": before - 1}, {"stock+": 1}):
        assert_error(m.patch(f"/api/collections/inventory/records/{inv[0]}", json=body), 404)
    assert stock(shop, 0) == before
    # Inside a checkout: the whole batch is refused, the order and its lines with it.
    r = checkout(m, "mallorycheckout", [(shop["prods"][0], 1)],
                 [{"method": "PATCH", "url": f"/api/collections/inventory/records/{inv[0]}", "body": {"stock-": 5}}])
    assert failed_item(r) == (2, 404)
    assert stock(shop, 0) == before
    assert m.get("/api/collections/orders/records").json()["totalItems"] == 0
    assert shop["admin"].get("/api/collections/orders/records",
                             params={"filter": "id = 'mallorycheckout'"}).json()["totalItems"] == 0
    # Staff set and lower the stock.
    s = shop["staff"]
    r = s.patch(f"/api/collections/inventory/records/{inv[0]}", json={"stock-": 1})
    assert r.status_code == 200 and r.json()["stock"] == before - 1, r.text
    r = s.patch(f"/api/collections/inventory/records/{inv[0]}", json={"stock": before})
    assert r.status_code == 200 and r.json()["stock"] == before


def test_nobody_makes_themselves_staff(shop, shared_server):
    anon = Client(shared_server.url)
    body = {"email": "eve@shop.test", "password": PW, "passwordConfirm": PW, "staff": True}
    assert_error(anon.post("/api/collections/shop_users/records", json=body), 400)
    r = anon.post("/api/collections/shop_users/records", json={**body, "staff": False})
    assert r.status_code == 200 and r.json()["staff"] is False, r.text
    r = anon.post("/api/collections/shop_users/records", json={k: v for k, v in body.items() if k != "staff"}
                  | {"email": "eve2@shop.test"})
    assert r.status_code == 200 and r.json()["staff"] is False, r.text
    m = shop["mallory"]
    assert_error(m.patch(f"/api/collections/shop_users/records/{m.id}", json={"staff": True}), 404)
    r = m.patch(f"/api/collections/shop_users/records/{m.id}", json={"name": "M", "staff": False})
    assert r.status_code == 200 and r.json()["staff"] is False, r.text
    # A staff flag of another auth collection is no staff of the shop.
    admin = shop["admin"]
    r = admin.post("/api/collections", json={"name": "fakestaff", "type": "auth", "createRule": "",
                                             "fields": [{"name": "staff", "type": "bool"}]})
    assert r.status_code == 200, r.text
    r = anon.post("/api/collections/fakestaff/records", json={"email": "f@shop.test", "password": PW,
                                                              "passwordConfirm": PW, "staff": True})
    assert r.status_code == 200, r.text
    fake = Client(shared_server.url)
    fake.token = fake.login("fakestaff", "f@shop.test", PW)
    assert_error(fake.patch(f"/api/collections/inventory/records/{shop['inv'][0]}", json={"stock": 0}), 404)


def test_checkout_works_and_is_tied_to_the_users_order(shop):
    al, m, p = shop["alice"], shop["mallory"], shop["prods"]
    r = checkout(al, "alicecheckout01", [(p[0], 2), (p[1], 3)])
    assert r.status_code == 200, r.text
    assert [x["status"] for x in r.json()] == [200, 200, 200]
    mine = al.get("/api/collections/order_items/records").json()
    assert mine["totalItems"] == 2 and {i["purchase"] for i in mine["items"]} == {"alicecheckout01"}
    assert m.get("/api/collections/order_items/records").json()["totalItems"] == 0
    # A line for someone else's order, an order that is not new, more than the stock.
    assert_error(m.post("/api/collections/order_items/records", json={
        "purchase": "alicecheckout01", "product": p[0], "qty": 1, "price": 1}), 400)
    r = al.post("/api/collections/orders/records", json={"user": al.id, "status": "shipped", "placed": PLACED})
    assert_error(r, 400)
    r = al.post("/api/collections/orders/records", json={"user": m.id, "status": "new", "placed": PLACED})
    assert_error(r, 400)
    assert failed_item(checkout(al, "alicecheckout02", [(p[0], 1), (p[1], 4)])) == (2, 400)  # stock 3
    assert al.get("/api/collections/orders/records").json()["totalItems"] == 1
    # Staff fulfil: the order shipped and the stock lowered, in one batch; a user cannot.
    fulfil = {"requests": [
        {"method": "PATCH", "url": "/api/collections/orders/records/alicecheckout01", "body": {"status": "shipped"}},
        {"method": "PATCH", "url": f"/api/collections/inventory/records/{shop['inv'][0]}", "body": {"stock-": 2}},
        {"method": "PATCH", "url": f"/api/collections/inventory/records/{shop['inv'][1]}", "body": {"stock-": 3}}]}
    assert failed_item(al.post("/api/batch", json=fulfil))[1] == 404
    s0, s1 = stock(shop, 0), stock(shop, 1)
    r = shop["staff"].post("/api/batch", json=fulfil)
    assert r.status_code == 200, r.text
    assert (stock(shop, 0), stock(shop, 1)) == (s0 - 2, s1 - 3)
    # A shipped order takes no more lines.
    assert_error(al.post("/api/collections/order_items/records", json={
        "purchase": "alicecheckout01", "product": p[0], "qty": 1, "price": 1}), 400)
