#!/usr/bin/env python3
"""pool_lanes.py BIN [BIN ...]: point reads while slow lists fill PostgreSQL's read pool.

For each binary, alternately (ROUNDS times): a new database on BASALT_TEST_PG_URL's
server with a public collection of ROWS records (written with SQL), Basalt on it with
the record cache off and --db-pool-size 4, then for SECS seconds LISTERS clients loop
over uncached lists sorted by an unindexed field (each reads and sorts every row) while
one client reads records by id, one at a time (at most POINT_RATE a second). Prints the point reads' p50/p99/max and
the lists' count per binary. Environment: ROWS (200000), SECS (15), LISTERS (8),
ROUNDS (2), POINT_RATE (100)."""
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import free_port, http, wait_http  # noqa: E402

PG = os.environ["BASALT_TEST_PG_URL"]
ROWS = int(os.environ.get("ROWS", "200000"))
SECS = float(os.environ.get("SECS", "15"))
LISTERS = int(os.environ.get("LISTERS", "8"))
ROUNDS = int(os.environ.get("ROUNDS", "2"))
POINT_RATE = float(os.environ.get("POINT_RATE", "100"))  # point reads per second at most (0: no pause)
PSQL = next((p for p in ("/usr/lib/postgresql/15/bin/psql", "/usr/bin/psql") if os.path.exists(p)), "psql")


def psql(url, sql):
    subprocess.run([PSQL, "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql], check=True,
                   stdout=subprocess.DEVNULL)


def one_round(binp, tag):
    db = f"pool_lanes_{tag}"
    base = PG.rsplit("/", 1)[0]
    psql(PG, f"DROP DATABASE IF EXISTS {db}")
    psql(PG, f"CREATE DATABASE {db}")
    url = f"{base}/{db}"
    d = tempfile.mkdtemp(prefix="pool-lanes-")
    subprocess.run([binp, "superuser", "upsert", "a@example.com", "password123", f"--dir={d}", f"--db={url}"],
                   check=True, capture_output=True)
    port = free_port()
    p = subprocess.Popen([binp, "serve", f"--http=127.0.0.1:{port}", f"--dir={d}", f"--db={url}",
                          "--db-pool-size=4", "--cache-budget-mb=0", "--log-level=warn",
                          "--rate-limit-anon=0", "--rate-limit-user=0", "--rate-limit-burst=0"], stdout=subprocess.DEVNULL)
    try:
        wait_http(port, "/api/health")
        tok = http("POST", port, "/api/collections/_superusers/auth-with-password",
                   {"identity": "a@example.com", "password": "password123"})["token"]
        http("POST", port, "/api/collections", {"name": "items", "type": "base", "listRule": "", "viewRule": "",
                                               "fields": [{"name": "n", "type": "number"},
                                                          {"name": "t", "type": "text"}]}, tok)
        psql(url, "INSERT INTO items (id, n, t) SELECT lpad(i::text, 15, '0'), i, md5(i::text)"
                  " FROM generate_series(1, %d) i" % ROWS)
        psql(url, "ANALYZE items")
        stop = time.monotonic() + SECS
        lists = [0]
        point = []

        def lister(seed):
            rng = random.Random(seed)
            while time.monotonic() < stop:
                q = urllib.parse.quote(f"n >= {rng.randint(1, ROWS // 10)}")
                try:
                    http("GET", port, f"/api/collections/items/records?filter={q}&sort=-t&perPage=20&skipTotal=1")
                    lists[0] += 1
                except (urllib.error.URLError, OSError):
                    pass

        ts = [threading.Thread(target=lister, args=(i,)) for i in range(LISTERS)]
        for t in ts:
            t.start()
        rng = random.Random(7)
        time.sleep(1)
        while time.monotonic() < stop:
            rid = str(rng.randint(1, ROWS)).rjust(15, "0")
            t0 = time.perf_counter()
            http("GET", port, f"/api/collections/items/records/{rid}")
            took = time.perf_counter() - t0
            point.append(took * 1000)
            if POINT_RATE > 0 and took < 1 / POINT_RATE:
                time.sleep(1 / POINT_RATE - took)
        for t in ts:
            t.join()
        return point, lists[0]
    finally:
        p.terminate(); p.wait()
        psql(PG, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def main():
    res = {b: ([], 0) for b in sys.argv[1:]}
    for r in range(ROUNDS):
        for i, b in enumerate(sys.argv[1:]):
            pt, n = one_round(b, f"{r}_{i}")
            res[b] = (res[b][0] + pt, res[b][1] + n)
    for b, (pt, n) in res.items():
        pt.sort()
        k = len(pt)
        print(f"{b}: {k} point reads p50 {pt[k // 2]:.1f} ms p99 {pt[min(k - 1, int(k * .99))]:.1f} ms "
              f"max {pt[-1]:.1f} ms; {n} slow lists in {ROUNDS} x {SECS:.0f} s")


if __name__ == "__main__":
    main()
