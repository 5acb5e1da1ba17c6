#!/usr/bin/env python3
"""Builds plan 003's shop at a chosen size: users, categories, products (searchable),
inventory, orders (partitioned by quarter on PostgreSQL) and order items.

    examples/shop/generate.py --url http://127.0.0.1:8090 --email admin@example.com \
        --password '...' --scale 100 [--dir ./basalt_data | --pg postgres://...]

--scale is the target size in MB (roughly: 1 MB is about 1,000 orders with their
items). The schema goes through Basalt's API (PUT /api/collections/import); the rows
are written straight into the database in large transactions (SQLite: the data
folder's file, which the running server shares; PostgreSQL: COPY through psql), since
a year of orders through HTTP would take hours. Basalt notices the outside writes
(SQLite's data version, PostgreSQL's NOTIFY sent at the end) and drops its cached
answers. Every generated user's password is the one given with --user-password.
"""
import argparse
import json
import os
import random
import sqlite3
import string
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ALNUM = string.ascii_lowercase + string.digits
WORDS = ("red blue green black white steel oak linen wool cotton compact large small classic modern travel "
         "kitchen garden office outdoor wireless solar quiet fast light heavy soft warm cool smart mini pro "
         "lamp chair table mug bottle bag jacket shoe sock hat cable charger speaker book pen desk shelf "
         "pillow blanket knife pan kettle bike helmet tent rope map clock").split()


def rid(rng):
    return "".join(rng.choice(ALNUM) for _ in range(15))


def ts(epoch):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) + ".000Z"


def api(url, method, path, token=None, body=None):
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json", **({"Authorization": token} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            text = r.read().decode()
            return json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        sys.exit(f"generate: {method} {path} failed: {e.code} {e.read().decode()[:400]}")


class Progress:
    def __init__(self, total):
        self.total, self.done, self.t0, self.last = max(total, 1), 0, time.time(), 0.0

    def add(self, n, what):
        self.done += n
        now = time.time()
        if now - self.last < 0.2 and self.done < self.total:
            return
        self.last = now
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(frac * 30)
        rate = self.done / max(now - self.t0, 1e-6)
        line = f"[{bar:<30}] {frac * 100:5.1f}% {what:<12} {self.done:,}/{self.total:,} rows, {rate:,.0f}/s"
        if sys.stderr.isatty():
            sys.stderr.write("\r" + line)
        elif self.done >= self.total or int(frac * 10) != int((self.done - n) / self.total * 10):
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


class SqliteSink:
    def __init__(self, path):
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA busy_timeout = 30000")

    def columns(self, table):
        return [r[1] for r in self.db.execute(f'PRAGMA table_info("{table}")')]

    def write(self, table, cols, rows):
        q = f'INSERT INTO "{table}" ({", ".join(chr(34) + c + chr(34) for c in cols)}) VALUES ({", ".join("?" * len(cols))})'
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany(q, rows)
        self.db.execute("COMMIT")

    def one(self, sql, args=()):
        return self.db.execute(sql, args).fetchone()

    def done(self):
        self.db.close()


class PgSink:
    def __init__(self, url):
        self.url = url

    def psql(self, sql, data=None):
        out = subprocess.run(["psql", self.url, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql], input=data,
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"generate: psql failed: {out.stderr.strip()[:400]}")
        return out.stdout

    def columns(self, table):
        out = self.psql(f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}' "
                        "AND is_identity = 'NO' ORDER BY ordinal_position")
        return [c for c in out.split("\n") if c]

    def write(self, table, cols, rows):
        def cell(v):
            if v is None:
                return "\\N"
            if isinstance(v, bool):
                return "true" if v else "false"
            return str(v).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
        data = "".join("\t".join(cell(v) for v in row) + "\n" for row in rows)
        self.psql(f'COPY "{table}" ({", ".join(chr(34) + c + chr(34) for c in cols)}) FROM STDIN', data)

    def one(self, sql, args=()):
        for a in args:
            sql = sql.replace("?", "'" + str(a).replace("'", "''") + "'", 1)
        return tuple(self.psql(sql).strip().split("|"))

    def done(self):
        self.psql("NOTIFY basalt_changes, 'generator'")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8090")
    ap.add_argument("--email", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--scale", type=float, default=10, help="target size in MB (default 10)")
    ap.add_argument("--dir", help="the server's data folder (SQLite)")
    ap.add_argument("--pg", help="the server's PostgreSQL URL (direct, not through PgBouncer)")
    ap.add_argument("--user-password", default="shop-password-1")
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    if bool(args.dir) == bool(args.pg):
        sys.exit("generate: give exactly one of --dir (SQLite) or --pg (PostgreSQL)")
    if args.scale <= 0:
        sys.exit("generate: --scale must be a positive size in MB")
    rng = random.Random(args.seed)
    tok = api(args.url, "POST", "/api/collections/_superusers/auth-with-password", body={
        "identity": args.email, "password": args.password})["token"]
    schema = json.load(open(os.path.join(HERE, "schema.json")))
    if args.pg:  # plan 003: orders partitioned by quarter (PostgreSQL only)
        for c in schema["collections"]:
            if c["name"] == "orders":
                c["partition"] = {"field": "placed", "interval": "quarter"}
    api(args.url, "PUT", "/api/collections/import", tok, {"collections": schema["collections"], "deleteMissing": False})
    # One user through the API, for a password hash every generated user shares.
    tmpl = api(args.url, "POST", "/api/collections/shop_users/records", tok, {
        "email": f"template-{rng.randrange(10**9)}@shop.example", "password": args.user_password,
        "passwordConfirm": args.user_password, "name": "template"})
    sink = SqliteSink(os.path.join(args.dir, "data.db")) if args.dir else PgSink(args.pg)
    pw_hash = sink.one('SELECT "password" FROM "shop_users" WHERE "id" = ?', (tmpl["id"],))[0]

    n_orders = max(20, int(args.scale * 1000))
    n_users = max(5, n_orders // 20)
    n_products = max(50, n_orders // 50)
    n_categories = 40
    items_per_order = 3
    total = n_categories + 2 * n_products + n_users + n_orders * (1 + items_per_order)
    prog = Progress(total)
    now = int(time.time())
    year_ago = now - 365 * 86400
    chunk = 20000

    def load(table, make, count, what):
        cols = [c for c in sink.columns(table) if c not in ("_rowid",)]
        batch = []
        for i in range(count):
            row = make(i)
            batch.append([row.get(c, "" if c not in ("price", "stock", "total", "qty", "emailVisibility",
                                                         "verified") else 0) for c in cols])
            if len(batch) == chunk:
                sink.write(table, cols, batch)
                prog.add(len(batch), what)
                batch = []
        if batch:
            sink.write(table, cols, batch)
            prog.add(len(batch), what)

    cats = [rid(rng) for _ in range(n_categories)]
    load("categories", lambda i: {"id": cats[i], "name": f"Category {i}", "slug": f"cat-{i}"}, n_categories,
         "categories")
    prods = [rid(rng) for _ in range(n_products)]
    prices = [round(rng.uniform(2, 400), 2) for _ in range(n_products)]

    def product(i):
        words = rng.sample(WORDS, 3)
        return {"id": prods[i], "name": " ".join(words).title(), "sku": f"SKU-{i:08d}", "price": prices[i],
                "description": f"<p>A {words[0]} {words[1]} {words[2]} for every day. " +
                               " ".join(rng.sample(WORDS, 12)) + ".</p>",
                "category": cats[i % n_categories], "created": ts(year_ago + rng.randrange(365 * 86400))}
    load("products", product, n_products, "products")
    load("inventory", lambda i: {"id": rid(rng), "product": prods[i], "stock": rng.randrange(0, 500),
                                 "updated": ts(now)}, n_products, "inventory")
    users = [rid(rng) for _ in range(n_users)]

    def user(i):
        t = ts(year_ago + rng.randrange(365 * 86400))
        return {"id": users[i], "email": f"user{i}@shop.example", "emailVisibility": False, "verified": True,
                "password": pw_hash, "tokenKey": "".join(rng.choice(ALNUM) for _ in range(50)), "name": f"User {i}",
                "created": t, "updated": t}
    load("shop_users", user, n_users, "users")
    order_ids = []

    def order(i):
        oid = rid(rng)
        order_ids.append(oid)
        return {"id": oid, "user": users[rng.randrange(n_users)], "total": round(rng.uniform(5, 900), 2),
                "status": rng.choice(["new", "paid", "paid", "shipped", "shipped", "shipped", "cancelled"]),
                "placed": ts(year_ago + rng.randrange(365 * 86400))}
    load("orders", order, n_orders, "orders")

    def item(i):
        p = rng.randrange(n_products)
        return {"id": rid(rng), "purchase": order_ids[i // items_per_order], "product": prods[p],
                "qty": rng.randrange(1, 5), "price": prices[p]}
    load("order_items", item, n_orders * items_per_order, "order items")
    sink.done()
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    print(json.dumps({"users": n_users + 1, "categories": n_categories, "products": n_products,
                      "inventory": n_products, "orders": n_orders, "order_items": n_orders * items_per_order,
                      "user_password": args.user_password, "seconds": round(time.time() - prog.t0, 1)}))


if __name__ == "__main__":
    main()
