#!/usr/bin/env python3
"""Builds plan 003's shop at a chosen size: users (a few staff), categories, products
(searchable), inventory, carts, orders (partitioned by quarter on PostgreSQL) and
order items.

    examples/shop/generate.py --url http://127.0.0.1:8090 --email admin@example.com \
        --password '...' --scale 100 [--dir ./basalt_data | --pg postgres://...]

--scale sets the size: one unit is 1,000 orders with 3.15 lines each on average (and
their users, products, inventory and carts), which came out at 0.57 MB on SQLite and
0.85 MB on PostgreSQL; plan 003's year (50 GB) is about --scale 88000 on SQLite. The schema goes through
Basalt's API (PUT /api/collections/import), so the tables, indexes, search index and
partitions are Basalt's own; the rows are then written straight into those tables in
bulk, since a year of orders through HTTP would take days (81,840 rows took 15.6 s):

- SQLite: one writer connection on the data folder's file (the running server shares
  it, WAL), one prepared INSERT per table run over large batches, 200,000 rows per
  transaction; the secondary indexes are dropped before and made again after from
  Basalt's own SQL.
- PostgreSQL: one COPY per table streamed through psql (no driver needed), the
  secondary indexes dropped and made again after, ANALYZE at the end; the orders go
  through the partitioned table, so PostgreSQL routes each to its quarter.

Ids are 15 characters of [a-z0-9] like Basalt's, but ascending in the order rows are
written (a table letter, the row number, a scrambled tail): every primary-key insert
then goes to the end of its B-tree, which is what keeps 40 million inserts fast; the
orders are written in the order they were placed over the year, as a live shop's are.

Distributions (deterministic from --seed): product popularity is Zipf-like (s = 1.0,
so the top 1% of products take about a third of the order lines), categories are
uneven, users' order counts are skewed (s = 0.8: a few regulars, a long tail), orders
hold 1 to 6 lines (mean 3), and most orders of the last weeks are still new or paid.
Every generated user's password is --user-password; user0..user{staff-1} are staff.

At the end the generator asks Basalt (the API, as a superuser) how many records each
collection has and fails unless that is what it wrote; it prints one JSON line with
the counts, the seconds, rows/s and MB/min (the database's size before and after).
"""
import argparse
import bisect
import itertools
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
WORDS = ("red blue green black white steel oak linen wool cotton compact large small classic modern travel "
         "kitchen garden office outdoor wireless solar quiet fast light heavy soft warm cool smart mini pro "
         "lamp chair table mug bottle bag jacket shoe sock hat cable charger speaker book pen desk shelf "
         "pillow blanket knife pan kettle bike helmet tent rope map clock").split()
STATUS = ("new", "paid", "shipped", "cancelled")
BATCH = 20000


def make_id(letter, i):
    """15 characters of [0-9a-f...]: ascending with i within a table (see the module doc)."""
    return f"{letter}{i:09x}{(i * 2654435761) & 0xfffff:05x}"


def ts(epoch):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) + ".000Z"


def api(url, method, path, token=None, body=None, timeout=600):
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json", **({"Authorization": token} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read().decode()
            return json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        sys.exit(f"generate: {method} {path} failed: {e.code} {e.read().decode()[:400]}")


class Progress:
    """One line on a terminal (redrawn), a line per 10% otherwise."""

    def __init__(self, total):
        self.total, self.done, self.t0, self.last = max(total, 1), 0, time.time(), 0.0

    def add(self, n, what):
        self.done += n
        now = time.time()
        if now - self.last < 0.5 and self.done < self.total:
            return
        self.last = now
        frac = min(self.done / self.total, 1.0)
        rate = self.done / max(now - self.t0, 1e-6)
        eta = (self.total - self.done) / max(rate, 1e-6)
        line = (f"[{'#' * int(frac * 30):<30}] {frac * 100:5.1f}% {what:<12} {self.done:,}/{self.total:,} rows, "
                f"{rate:,.0f}/s, {eta:,.0f} s left")
        if sys.stderr.isatty():
            sys.stderr.write("\r" + line)
        elif self.done >= self.total or int(frac * 10) != int((self.done - n) / self.total * 10):
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


# Hash multipliers (primes below 2^32) for the independent choices of the bulk SQL.
M = dict(lines=2654435761, prod=2246822519, qty=3266489917, user=668265263, jitter=374761393, status=3405697037)


def bulk_sql(d, table, a, b, v):
    """The INSERT ... SELECT that makes orders a..b-1 (or their lines) in dialect d
    ('sqlite' or 'pg'); v holds seed, n_orders, year_ago, year, now."""
    def h(x, m):
        return f"((({x}) * {M[m]} + {v['seed']}) % 4294967291)"

    def rid(letter, k):
        if d == "sqlite":
            return f"printf('{letter}%09x%05x', {k}, (({k}) * 2654435761) & 1048575)"
        return f"'{letter}' || lpad(to_hex({k}), 9, '0') || lpad(to_hex((({k}) * 2654435761) & 1048575), 5, '0')"

    def lines(o):
        r = h(o, "lines") + " % 100"
        return f"(CASE WHEN {r} < 20 THEN 1 WHEN {r} < 40 THEN 2 WHEN {r} < 60 THEN 3 WHEN {r} < 75 THEN 4 " \
               f"WHEN {r} < 90 THEN 5 ELSE 6 END)"
    if d == "sqlite":
        cte, series = f"WITH RECURSIVE x(o) AS (SELECT {a} UNION ALL SELECT o + 1 FROM x WHERE o + 1 < {b}) ", "x"
    else:
        cte, series = "", f"generate_series({a}::bigint, {b - 1}) AS x(o)"
    join = "CROSS JOIN" if d == "sqlite" else "JOIN"  # SQLite: the order of the loops, so ids ascend
    k = "(x.o * 8 + l.n)"
    slot = f"{h(k, 'prod')} % 1048576"
    if table == "order_items":
        return (f'INSERT INTO "order_items" ("id", "purchase", "product", "qty", "price") '
                f"{cte}SELECT {rid('l', k)}, {rid('o', 'x.o')}, g.pid, 1 + {h(k, 'qty')} % 3, g.price "
                f"FROM {series} CROSS JOIN _gen_lines l {join} _gen_prod g "
                f"ON g.slot = {slot} WHERE l.n < {lines('x.o')}"
                + (" ORDER BY x.o, l.n" if d == "pg" else ""))
    total = f"sum((1 + {h(k, 'qty')} % 3) * g.price)"
    total = f"round({total}, 2)" if d == "sqlite" else f"round(({total})::numeric, 2)"
    placed = f"{v['year_ago']} + x.o * {v['year']} / {v['n_orders']} + {h('x.o', 'jitter')} % 60"
    if d == "sqlite":
        placed_ts = "strftime('%Y-%m-%d %H:%M:%S', y.placed, 'unixepoch') || '.000Z'"
    else:
        placed_ts = "to_char(to_timestamp(y.placed) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '.000Z'"
    r = h("y.o", "status") + " % 100"
    age = f"({v['now']} - y.placed)"
    status = (f"CASE WHEN {age} < 259200 THEN (CASE WHEN {r} < 60 THEN 'new' ELSE 'paid' END) "
              f"WHEN {age} < 1209600 THEN (CASE WHEN {r} < 50 THEN 'paid' ELSE 'shipped' END) "
              f"WHEN {r} < 93 THEN 'shipped' ELSE 'cancelled' END")
    ky = k.replace("x.o", "y.o")
    tot = total.replace(k, ky)
    return (f'INSERT INTO "orders" ("id", "user", "status", "total", "placed") '
            f"{cte}SELECT {rid('o', 'y.o')}, u.uid, {status}, "
            f"(SELECT {tot} FROM _gen_lines l JOIN _gen_prod g ON g.slot = {slot.replace(k, ky)} "
            f"WHERE l.n < {lines('y.o')}), {placed_ts} "
            f"FROM (SELECT x.o AS o, {placed} AS placed FROM {series}) y "
            f"{join} _gen_user u ON u.slot = {h('y.o', 'user')} % 1048576"
            + (" ORDER BY y.o" if d == "pg" else ""))


class SqliteSink:
    def __init__(self, path):
        self.path = path
        self.db = sqlite3.connect(path, timeout=60, isolation_level=None)
        self.db.execute("PRAGMA busy_timeout = 60000")
        self.db.execute("PRAGMA synchronous = OFF")  # a failed generation is run again, never resumed
        self.db.execute("PRAGMA cache_size = -1000000")  # 1 GB, for the index builds
        self.saved = []

    def size(self):
        return sum(os.path.getsize(self.path + s) for s in ("", "-wal") if os.path.exists(self.path + s))

    def columns(self, table):
        return [r[1] for r in self.db.execute(f'PRAGMA table_info("{table}")')]

    def drop_indexes(self, tables):
        for name, sql in self.db.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN (%s)"
                % ",".join("?" * len(tables)), tables).fetchall():
            self.saved.append(sql)
            self.db.execute(f'DROP INDEX "{name}"')

    def make_indexes(self):
        # Each index is built in one transaction, its pages through the WAL; a log
        # copied back and cut after each keeps it at the largest index, not the sum of
        # all of them (at --scale 88000 it reached 7 GB with the disk nearly full).
        for sql in self.saved:
            self.db.execute(sql)
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.execute("PRAGMA analysis_limit = 1000")
        self.db.execute("ANALYZE")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        # The rows went in without fsync (synchronous = OFF): the file is checked whole
        # before anyone is told it is ready.
        t = time.time()
        check = self.db.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            sys.exit(f"generate: the database fails SQLite's quick_check: {check[:5]}")
        self.check_s = round(time.time() - t, 1)

    def load(self, table, cols, batches, prog, what):
        q = f'INSERT INTO "{table}" ({", ".join(chr(34) + c + chr(34) for c in cols)}) VALUES ({", ".join("?" * len(cols))})'
        n_in_tx = 0
        self.db.execute("BEGIN IMMEDIATE")
        for rows in batches:
            self.db.executemany(q, rows)
            n_in_tx += len(rows)
            if n_in_tx >= 200000:
                self.db.execute("COMMIT")
                self.db.execute("BEGIN IMMEDIATE")
                n_in_tx = 0
            prog.add(len(rows), what)
        self.db.execute("COMMIT")

    def lookup(self, name, cols, rows):
        self.db.execute(f"CREATE TEMP TABLE {name} ({cols.replace('slot', 'slot INTEGER PRIMARY KEY', 1)})")
        self.db.execute("BEGIN")
        self.db.executemany(f"INSERT INTO {name} VALUES ({', '.join('?' * len(cols.split(',')))})", rows)
        self.db.execute("COMMIT")
        if not self.one("SELECT name FROM sqlite_temp_master WHERE name = '_gen_lines'"):
            self.db.execute("CREATE TEMP TABLE _gen_lines (n INTEGER PRIMARY KEY)")
            self.db.executemany("INSERT INTO _gen_lines VALUES (?)", [(i,) for i in range(6)])

    def bulk(self, table, a, b, v):
        before = self.db.total_changes
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute(bulk_sql("sqlite", table, a, b, v))
        self.db.execute("COMMIT")
        return self.db.total_changes - before

    def drop_lookups(self):
        for t in ("_gen_prod", "_gen_user", "_gen_lines"):
            self.db.execute(f"DROP TABLE temp.{t}")

    def one(self, sql, args=()):
        return self.db.execute(sql, args).fetchone()

    def done(self):
        self.db.close()


def _cell(v):
    if v is None:
        return "\\N"
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, str):
        return v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
    return str(v)


class PgSink:
    def __init__(self, url):
        self.url = url
        self.saved = []

    def psql(self, sql):
        out = subprocess.run(["psql", self.url, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True,
                             text=True)
        if out.returncode != 0:
            sys.exit(f"generate: psql failed: {out.stderr.strip()[:400]}")
        return out.stdout

    def size(self):
        return int(self.psql("SELECT pg_database_size(current_database())").strip())

    def columns(self, table):
        out = self.psql(f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}' "
                        "AND table_schema = current_schema() AND is_identity = 'NO' ORDER BY ordinal_position")
        return [c for c in out.split("\n") if c]

    def drop_indexes(self, tables):
        """Secondary indexes only (a constraint's index stays): Basalt's own definitions
        are kept and run again after the load, a partitioned index over every partition."""
        names = ",".join("'" + t + "'" for t in tables)
        out = self.psql("SELECT i.indexname || '|' || i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema() "
                        f"AND i.tablename IN ({names}) AND NOT EXISTS (SELECT 1 FROM pg_constraint k "
                        "WHERE k.conname = i.indexname)")
        for line in filter(None, out.split("\n")):
            name, sql = line.split("|", 1)
            self.saved.append(sql.replace(" ON ONLY ", " ON "))
            self.psql(f'DROP INDEX "{name}"')

    def make_indexes(self):
        for sql in self.saved:
            self.psql("SET maintenance_work_mem = '512MB'; " + sql)
        self.psql("ANALYZE")

    def load(self, table, cols, batches, prog, what):
        p = subprocess.Popen(["psql", self.url, "-qAt", "-v", "ON_ERROR_STOP=1", "-c",
                              f'COPY "{table}" ({", ".join(chr(34) + c + chr(34) for c in cols)}) FROM STDIN'],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            for rows in batches:
                p.stdin.write("".join("\t".join(map(_cell, r)) + "\n" for r in rows).encode())
                if prog:
                    prog.add(len(rows), what)
            p.stdin.close()
        except BrokenPipeError:
            pass
        err = p.stderr.read().decode()
        if p.wait() != 0:
            sys.exit(f"generate: COPY into {table} failed: {err.strip()[:400]}")

    def lookup(self, name, cols, rows):
        self.psql(f"DROP TABLE IF EXISTS {name}; CREATE UNLOGGED TABLE {name} "
                  f"({cols.replace('slot', 'slot integer PRIMARY KEY', 1).replace('pid', 'pid text').replace('uid', 'uid text').replace('price', 'price double precision')})")
        it = iter(rows)
        self.load(name, [c.strip() for c in cols.split(",")], iter(lambda: list(itertools.islice(it, BATCH)), []),
                  None, "")
        self.psql("DROP TABLE IF EXISTS _gen_lines; CREATE UNLOGGED TABLE _gen_lines (n integer PRIMARY KEY); "
                  f"INSERT INTO _gen_lines SELECT generate_series(0, 5); ANALYZE {name}; ANALYZE _gen_lines")

    def bulk(self, table, a, b, v):
        out = subprocess.run(["psql", self.url, "-At", "-v", "ON_ERROR_STOP=1", "-c", bulk_sql("pg", table, a, b, v)],
                             capture_output=True, text=True)
        if out.returncode != 0 or not out.stdout.startswith("INSERT 0 "):
            sys.exit(f"generate: making {table} failed: {out.stderr.strip()[:400]}")
        return int(out.stdout.split()[2])

    def drop_lookups(self):
        self.psql("DROP TABLE _gen_prod, _gen_user, _gen_lines")

    def one(self, sql, args=()):
        for a in args:
            sql = sql.replace("?", "'" + str(a).replace("'", "''") + "'", 1)
        return tuple(self.psql(sql).strip().split("|"))

    def done(self):
        self.psql("NOTIFY basalt_changes, 'generator'")


def find_shopgen(given):
    """bench/shopgen.c's binary: given, $SHOPGEN, next to $BASALT_BIN, build-release/, build/."""
    root = os.path.dirname(os.path.dirname(HERE))
    bb = os.environ.get("BASALT_BIN")
    for p in (given, os.environ.get("SHOPGEN"), bb and os.path.join(os.path.dirname(bb), "shopgen"),
              os.path.join(root, "build-release", "shopgen"), os.path.join(root, "build", "shopgen")):
        if p and os.access(p, os.X_OK):
            return p
    return None


def zipf_cum(n, s):
    """Cumulative weights of ranks 1..n with weight 1/rank^s."""
    return list(itertools.accumulate(1.0 / (k + 1) ** s for k in range(n)))


def sizes(scale):
    n_orders = max(20, int(scale * 1000))
    return dict(orders=n_orders, users=max(5, n_orders // 20), products=max(50, n_orders // 50), categories=40)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8090")
    ap.add_argument("--email", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--scale", type=float, default=10, help="size in units of 1,000 orders, ~0.57 MB on SQLite, ~0.85 on PostgreSQL (default 10)")
    ap.add_argument("--dir", help="the server's data folder (SQLite)")
    ap.add_argument("--pg", help="the server's PostgreSQL URL (direct, not through PgBouncer)")
    ap.add_argument("--user-password", default="shop-password-1")
    ap.add_argument("--staff", type=int, default=5, help="how many of the users are staff (default 5)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--bulk", choices=("c", "python", "sql"), default=None,
                    help="who makes the rows: bench/shopgen.c (c, the default when it is built), Python rows "
                         "(python, the default otherwise), or for the orders and their lines the database's "
                         "own INSERT ... SELECT (sql)")
    ap.add_argument("--shopgen", help="the shopgen binary (default: $SHOPGEN, else next to $BASALT_BIN, else "
                                      "build-release/ or build/)")
    args = ap.parse_args()
    shopgen = find_shopgen(args.shopgen)
    if args.bulk is None:
        args.bulk = "c" if shopgen else "python"
    if args.bulk == "c" and not shopgen:
        sys.exit("generate: --bulk c needs the shopgen binary (make build; or --shopgen PATH)")
    if bool(args.dir) == bool(args.pg):
        sys.exit("generate: give exactly one of --dir (SQLite) or --pg (PostgreSQL)")
    if not 0 < args.scale <= 100000:
        sys.exit("generate: --scale must be above 0 and at most 100000 (units of 1,000 orders)")
    rng = random.Random(args.seed)
    tok = api(args.url, "POST", "/api/collections/_superusers/auth-with-password", body={
        "identity": args.email, "password": args.password})["token"]
    schema = json.load(open(os.path.join(HERE, "schema.json")))
    if args.pg:  # plan 003: orders partitioned by quarter (PostgreSQL only)
        for c in schema["collections"]:
            if c["name"] == "orders":
                c["partition"] = {"field": "placed", "interval": "quarter"}
    api(args.url, "PUT", "/api/collections/import", tok, {"collections": schema["collections"], "deleteMissing": False})
    tables = [c["name"] for c in schema["collections"]]
    for t in tables:
        if api(args.url, "GET", f"/api/collections/{t}/records?perPage=1", tok)["totalItems"]:
            sys.exit(f"generate: {t} already has records; generate into an empty data folder or database")
    # One user through the API, for a password hash every generated user shares (and
    # removed at the end, so that the counts are the generated ones).
    tmpl = api(args.url, "POST", "/api/collections/shop_users/records", tok, {
        "email": f"template-{rng.randrange(10**9)}@shop.example", "password": args.user_password,
        "passwordConfirm": args.user_password, "name": "template"})
    sink = SqliteSink(os.path.join(args.dir, "data.db")) if args.dir else PgSink(args.pg)
    pw_hash = sink.one('SELECT "password" FROM "shop_users" WHERE "id" = ?', (tmpl["id"],))[0]
    api(args.url, "DELETE", f"/api/collections/shop_users/records/{tmpl['id']}", tok)

    n = sizes(args.scale)
    n_orders, n_users, n_products, n_categories = n["orders"], n["users"], n["products"], n["categories"]
    # Order lines: 1..6 with weights 20/20/20/15/15/10 (mean 3.15), so the total of rows
    # for the progress bar is an estimate until the lines are made.
    total = n_categories + 2 * n_products + 2 * n_users + int(n_orders * 4.15)
    size0 = sink.size()
    t0 = time.time()
    prog = Progress(total)
    now = int(time.time())
    year = 365 * 86400
    year_ago = now - year

    def batched(gen):
        it = iter(gen)
        while True:
            b = list(itertools.islice(it, BATCH))
            if not b:
                return
            yield b

    def load(table, rows, what, defaults=None):
        """rows yields dicts; every column of the table gets a value (Basalt's NOT NULL
        columns: empty text, 0, false, or [] for JSON)."""
        cols = [c for c in sink.columns(table) if c != "_rowid"]
        fill = {c: (defaults or {}).get(c, "") for c in cols}

        def as_rows():
            for r in rows:
                yield [r[c] if c in r else fill[c] for c in cols]
        sink.load(table, cols, batched(as_rows()), prog, what)

    sink.drop_indexes(tables)
    if args.bulk == "c":
        # Every row by bench/shopgen.c (the same shapes, its own random stream; its
        # progress bar on our stderr). SQLite: its connection beside ours, which is idle.
        g = subprocess.run([shopgen, *(["--sqlite", sink.path] if args.dir else ["--pg", args.pg]),
                            "--scale", repr(args.scale), "--seed", str(args.seed), "--staff", str(args.staff),
                            "--pw-hash", pw_hash, "--now", str(now)], stdout=subprocess.PIPE, text=True)
        if g.returncode != 0:
            sys.exit(f"generate: shopgen failed ({g.returncode}); see its message above")
        made = json.loads(g.stdout.strip().splitlines()[-1])
        n_items = made["order_items"]
        phase = {"shopgen_rows": made["row_seconds"], "shopgen_cpu": made["cpu_s"]}
    else:
        cats = [make_id("c", i) for i in range(n_categories)]
        load("categories", ({"id": cats[i], "name": f"Category {i}", "slug": f"cat-{i}"} for i in range(n_categories)),
             "categories")
        # Categories are uneven (Zipf s = 0.7 over the 40).
        cat_cum = zipf_cum(n_categories, 0.7)
        prods = [make_id("p", i) for i in range(n_products)]
        prices = [round(rng.lognormvariate(3.3, 0.9), 2) for _ in range(n_products)]

        def products():
            for i in range(n_products):
                w = rng.sample(WORDS, 15)
                yield {"id": prods[i], "name": f"{w[0]} {w[1]} {w[2]}".title(), "sku": f"SKU-{i:08d}", "price": prices[i],
                       "description": f"<p>A {w[0]} {w[1]} {w[2]} for every day. {' '.join(w[3:])}.</p>",
                       "category": cats[bisect.bisect(cat_cum, rng.random() * cat_cum[-1])],
                       "created": ts(year_ago + i * year // n_products)}
        load("products", products(), "products", {"price": 0})
        stamp = ts(now)
        load("inventory", ({"id": make_id("i", i), "product": prods[i], "stock": rng.randrange(200, 5000),
                            "updated": stamp} for i in range(n_products)), "inventory", {"stock": 0})
        users = [make_id("u", i) for i in range(n_users)]

        def user_rows():
            for i in range(n_users):
                t = ts(year_ago + i * year // n_users)
                yield {"id": users[i], "email": f"user{i}@shop.example", "emailVisibility": False, "verified": True,
                       "password": pw_hash, "tokenKey": f"{rng.getrandbits(200):050x}", "name": f"User {i}",
                       "staff": i < args.staff, "created": t, "updated": t}
        load("shop_users", user_rows(), "users", {"emailVisibility": False, "verified": False, "staff": False})
        # One cart per user; a third hold something.
        prod_cum = zipf_cum(n_products, 1.0)
        pick = lambda: bisect.bisect(prod_cum, rng.random() * prod_cum[-1])  # noqa: E731

        def carts():
            for i in range(n_users):
                items = [{"product": prods[pick()], "qty": rng.randrange(1, 4)} for _ in range(rng.randrange(1, 4))] \
                    if i % 3 == 0 else []
                yield {"id": make_id("k", i), "user": users[i], "items": json.dumps(items), "updated": stamp}
        load("carts", carts(), "carts")
        # Users' order counts are skewed: user ranks in a shuffled order, Zipf s = 0.8.
        user_rank = list(range(n_users))
        rng.shuffle(user_rank)
        user_cum = zipf_cum(n_users, 0.8)
        n_items = 0
        if args.bulk == "python":
            # The orders and their lines in Python, in the order they were placed.
            totals = [0.0] * n_orders
            weights = (20, 20, 20, 15, 15, 10)

            def items():
                nonlocal n_items
                for o in range(n_orders):
                    oid = make_id("o", o)
                    t = 0.0
                    for n in range(rng.choices((1, 2, 3, 4, 5, 6), weights)[0]):
                        p = pick()
                        q = rng.randrange(1, 4)
                        t += q * prices[p]
                        yield {"id": make_id("l", o * 8 + n), "purchase": oid, "product": prods[p], "qty": q,
                               "price": prices[p]}
                        n_items += 1
                    totals[o] = round(t, 2)
            load("order_items", items(), "order items", {"qty": 1, "price": 0})
            user_pick = lambda: user_rank[min(bisect.bisect(user_cum, rng.random() * user_cum[-1]), n_users - 1)]  # noqa

            def orders():
                for o in range(n_orders):
                    placed = year_ago + o * year // n_orders + rng.randrange(0, 60)
                    age, r = now - placed, rng.randrange(100)
                    st = (0 if r < 60 else 1) if age < 3 * 86400 else (1 if r < 50 else 2) if age < 14 * 86400 else \
                        (2 if r < 93 else 3)
                    yield {"id": make_id("o", o), "user": users[user_pick()], "status": STATUS[st], "total": totals[o],
                           "placed": ts(placed)}
            load("orders", orders(), "orders", {"total": 0})
            phase = {"python_rows": round(time.time() - t0, 1)}
        else:
            # The orders and their lines, 95% of the rows, are made by the database itself
            # (INSERT ... SELECT over a range of order numbers, 50,000 orders a statement and a
            # transaction): a Python loop formats 60,000 rows a second, the engine several times
            # that. Every value is a hash of the order (and line) number and the seed, so a run
            # is as deterministic as the Python part; the skewed choices go through lookup
            # tables of 2^20 slots built here (slot -> product by popularity, slot -> user).
            slots = 1 << 20
            pick_prod = [min(bisect.bisect(prod_cum, (s + 0.5) / slots * prod_cum[-1]), n_products - 1) for s in range(slots)]
            pick_user = [user_rank[min(bisect.bisect(user_cum, (s + 0.5) / slots * user_cum[-1]), n_users - 1)]
                         for s in range(slots)]
            tl = time.time()
            sink.lookup("_gen_prod", "slot, pid, price", ((s, prods[p], prices[p]) for s, p in enumerate(pick_prod)))
            sink.lookup("_gen_user", "slot, uid", ((s, users[u]) for s, u in enumerate(pick_user)))
            seed = rng.randrange(1 << 30)
            phase = {"python_rows": round(tl - t0, 1), "lookups": round(time.time() - tl, 1)}
            n_items = 0
            step = 50000
            for table, what in (("order_items", "order items"), ("orders", "orders")):
                for a in range(0, n_orders, step):
                    b = min(a + step, n_orders)
                    made = sink.bulk(table, a, b, dict(seed=seed, n_orders=n_orders, year_ago=year_ago, year=year, now=now))
                    if table == "order_items":
                        n_items += made
                    prog.add(made, what)
                phase[table] = round(time.time() - t0 - sum(phase.values()), 1)
            sink.drop_lookups()
    rows = n_categories + 2 * n_products + 2 * n_users + n_orders + n_items
    t_rows = time.time() - t0
    sys.stderr.write(("\n" if sys.stderr.isatty() else "") + "generate: making the indexes again...\n")
    sink.make_indexes()
    sink.done()
    secs = time.time() - t0
    mb = (sink.size() - size0) / 1e6
    # Basalt serves what was written: its own counts, through the API.
    want = {"categories": n_categories, "products": n_products, "inventory": n_products, "shop_users": n_users,
            "carts": n_users, "orders": n_orders, "order_items": n_items}
    # The server learns of another process's writes when its writer next looks (SQLite's
    # data version, at most once a second, on a write; PostgreSQL's NOTIFY): a write
    # through the API (a category made and removed) and up to 20 s for the counts.
    def db_count(t):
        if hasattr(sink, "psql"):
            return int(sink.psql(f'SELECT count(*) FROM "{t}"').strip())
        db = sqlite3.connect(f"file:{sink.path}?mode=ro", uri=True, timeout=60)
        try:
            return db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
        finally:
            db.close()

    def count(t):
        # Basalt's own count, but on PostgreSQL not for the tables past 20 M rows (one
        # COUNT(*) over 200 M order lines is minutes of reading), nor where Basalt's
        # count ran past its time budget (--count-budget-ms: totalItems -1). Those are
        # counted by the database, and Basalt must list one of their rows.
        if not hasattr(sink, "psql") or want[t] < 20_000_000:
            n = api(args.url, "GET", f"/api/collections/{t}/records?perPage=1", tok)["totalItems"]
            if n >= 0:
                return n
        if not api(args.url, "GET", f"/api/collections/{t}/records?perPage=1&skipTotal=1", tok)["items"]:
            return 0
        return db_count(t)

    for attempt in range(20):
        c = api(args.url, "POST", "/api/collections/categories/records", tok,
                {"name": "generator check", "slug": f"generator-check-{attempt}"})
        api(args.url, "DELETE", f"/api/collections/categories/records/{c['id']}", tok)
        got = {t: count(t) for t in want}
        if got == want:
            break
        time.sleep(1)
    if got != want:
        sys.exit(f"generate: Basalt counts {got}, the generator wrote {want}")
    print(json.dumps({"users": n_users, "categories": n_categories, "products": n_products,
                      "inventory": n_products, "carts": n_users, "orders": n_orders, "order_items": n_items,
                      "rows": rows, "staff": args.staff, "user_password": args.user_password,
                      "seconds": round(secs, 1), "row_seconds": round(t_rows, 1), "mb": round(mb, 1),
                      "rows_per_s": round(rows / t_rows), "mb_per_min": round(mb / secs * 60, 1),
                      "phases_s": {**phase, **({"quick_check": sink.check_s} if args.dir else {})},
                      "cpu_s": round(sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF,
                                     resource.RUSAGE_CHILDREN) for f in ("ru_utime", "ru_stime")), 1),
                      "verified": True}))


if __name__ == "__main__":
    main()
