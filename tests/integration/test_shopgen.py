"""bench/shopgen.c, the shop's C row generator (examples/shop/generate.py --bulk c), on
its own against a bare SQLite file that has the shop's tables: deterministic for a
seed, a scale and --now; the shapes generate.py documents (ids ascending as make_id
writes them, 1 to 6 lines an order, staff first, every line's product and order
real, totals the sums of their lines); bad arguments and a missing table are clear
failures. The whole path through Basalt, on both backends, is
test_shop_example.py's."""
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from conftest import sqlite_only

pytestmark = sqlite_only("shopgen's PostgreSQL path runs in test_shop_example.py; this file needs no server")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "shop"))
import generate  # noqa: E402

BIN = os.path.join(os.path.dirname(os.environ.get("BASALT_BIN", "build/basalt")), "shopgen")
TABLES = {
    "categories": ["id", "name", "slug"],
    "products": ["id", "name", "description", "sku", "price", "category", "created"],
    "inventory": ["id", "product", "stock", "updated"],
    "shop_users": ["id", "email", "emailVisibility", "verified", "password", "tokenKey", "name", "staff",
                   "created", "updated"],
    "carts": ["id", "user", "items", "updated"],
    "orders": ["id", "user", "status", "total", "placed"],
    "order_items": ["id", "purchase", "product", "qty", "price"],
}
NOW = 1764590400  # 2025-12-01 12:00 UTC


def make_db(path, skip=()):
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = WAL")
    for t, cols in TABLES.items():
        if t not in skip:
            db.execute(f'CREATE TABLE "{t}" ({", ".join(chr(34) + c + chr(34) for c in cols)}, '
                       '"_rowid" INTEGER)')
    db.commit()
    db.close()


def run(path, *args):
    return subprocess.run([BIN, "--sqlite", path, "--pw-hash", "$2a$10$hash", "--now", str(NOW), *args],
                          capture_output=True, text=True, timeout=120)


def dump(path):
    db = sqlite3.connect(path)
    out = {t: db.execute(f'SELECT {", ".join(chr(34) + c + chr(34) for c in cols)} FROM "{t}" ORDER BY rowid')
           .fetchall() for t, cols in TABLES.items()}
    db.close()
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    if not os.access(BIN, os.X_OK):
        pytest.fail(f"{BIN} is not built (make build builds it beside basalt)")
    d = tmp_path_factory.mktemp("shopgen")
    runs = {}
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        path = str(d / f"{name}.db")
        make_db(path)
        r = run(path, "--scale", "0.5", "--seed", seed, "--staff", "2")
        assert r.returncode == 0, r.stderr
        runs[name] = (json.loads(r.stdout.strip().splitlines()[-1]), dump(path), r.stderr)
    return runs


def test_deterministic_for_a_seed(made):
    assert made["a"][1] == made["b"][1]
    assert made["a"][1]["orders"] != made["c"][1]["orders"]
    # The progress bar went to stderr (no terminal: lines up to 100%).
    assert "100.0%" in made["a"][2]


def test_shapes_as_generate_py_documents(made):
    info, rows = made["a"][0], made["a"][1]
    assert (info["orders"], info["users"], info["products"], info["categories"]) == (500, 25, 50, 40)
    assert info["order_items"] == len(rows["order_items"]) and 500 <= info["order_items"] <= 3000
    assert info["rows"] == sum(len(v) for v in rows.values()) and info["cpu_s"] >= 0
    for t, letter in (("categories", "c"), ("products", "p"), ("inventory", "i"), ("shop_users", "u"),
                      ("carts", "k"), ("orders", "o")):
        assert [r[0] for r in rows[t]] == [generate.make_id(letter, i) for i in range(len(rows[t]))], t
    users = rows["shop_users"]
    assert [u[7] for u in users[:3]] == [1, 1, 0] and users[1][1] == "user1@shop.example"
    assert all(len(u[5]) == 50 and u[4] == "$2a$10$hash" for u in users)
    prods = {p[0]: p for p in rows["products"]}
    assert all(p[3].startswith("SKU-") and p[4] >= 0 and p[5] in {c[0] for c in rows["categories"]}
               for p in prods.values())
    assert all(200 <= s[2] < 5000 for s in rows["inventory"])
    lines = {}
    for lid, order, product, qty, price in rows["order_items"]:
        assert product in prods and 1 <= qty <= 3 and price == prods[product][4]
        lines.setdefault(order, []).append((lid, qty * price))
    orders = rows["orders"]
    assert set(lines) == {o[0] for o in orders}
    for oid, user, status, total, placed in orders:
        n = int(oid[1:10], 16)
        assert [lid for lid, _ in lines[oid]] == [generate.make_id("l", n * 8 + k) for k in range(len(lines[oid]))]
        assert 1 <= len(lines[oid]) <= 6 and abs(total - round(sum(v for _, v in lines[oid]), 2)) < 0.011
        assert status in ("new", "paid", "shipped", "cancelled") and user.startswith("u")
        assert placed.endswith(".000Z") and "2024-11-30" < placed[:10] <= "2025-12-01"
    assert [o[4] for o in orders] == sorted(o[4] for o in orders)  # 60 s of jitter, 17 h apart here
    carts = [json.loads(c[2]) for c in rows["carts"]]
    assert all(c == [] for i, c in enumerate(carts) if i % 3) and all(1 <= len(c) <= 3 for c in carts[::3])


def test_failures_are_clear(tmp_path):
    path = str(tmp_path / "x.db")
    make_db(path, skip=("orders",))
    r = run(path, "--scale", "0.1")
    assert r.returncode == 1 and "no table orders" in r.stderr
    r = run(path, "--scale", "0")
    assert r.returncode == 1 and "--scale" in r.stderr
    r = subprocess.run([BIN, "--scale", "1"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
    r = run(str(tmp_path / "missing" / "x.db"), "--scale", "1")
    assert r.returncode == 1 and "shopgen:" in r.stderr
