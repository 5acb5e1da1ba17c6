#!/usr/bin/env python3
"""Plan 003's shop at its peak hour: `make bench-shop` (and `--smoke` in make bench-smoke).

    bench/shop.py [--backend sqlite|pg|both] [--scale N] [--users 2000] [--rate 200]
                  [--secs 30] [--rounds 3] [--cgroup] [--rates 50,100,200,...]
                  [--warmup SECS] [--keep DIR | --reuse DIR] [--smoke] [--out DIR]

For each backend: a fresh Basalt (SQLite in a temporary folder, or PostgreSQL: the one
in BASALT_TEST_PG_URL, else one started here with scripts/pg-env.sh, a database of
its own), the shop generated at --scale (units of 1,000 orders) by examples/shop/generate.py (which checks
Basalt's counts), then the peak-hour mix sent by bench/shopload.c (open loop: requests
due at --rate per second whatever the server does, on --users keep-alive connections,
one per simulated signed-in user):

  browse    30%  products of a category (popular categories more often), sorted by
                 price or newest, 20 a page, anonymous
  search    15%  full-text search of products (the collection's search index)
  view      20%  one product (popular ones more often) with expand=category
  cart      10%  a user's cart updated (PATCH carts/:id)
  checkout   5%  POST /api/batch: an order and its two lines, as the user, in one
                 transaction (each line's rule checks the user's new order and the
                 stock; only staff change the stock: examples/shop/README.md)
  history   15%  the user's own orders, newest first (the list rule does the filter)
  stock      5%  a staff user sets a product's stock

plus --subscribers realtime connections (bench/rtload idle) subscribed to inventory/*,
and one SSE subscriber here that measures how long a stock change takes to reach a
subscriber (from the record's "updated" time, milliseconds, to its arrival).

Each request kind's p50/p99 is reported against the plan's budget (under 1 s) and
Basalt's direction (p99 under 50 ms). With --cgroup the Basalt process (only it) runs
in a cgroup v1 of 1 CPU (cfs quota 100000 of 100000) and 512 MB, and the rate is
stepped up (--rates) until p99 passes 50 ms or requests fail; the highest rate held is
reported. Results: OUT/{report.md,results.csv,raw/}. Timings are never asserted; the
smoke run fails only on errors, a kind with no answers or no realtime event.
"""
import argparse
import csv
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "examples", "shop"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import generate  # noqa: E402
from harness import Lab, free_port, wait_http, http, log, LOAD_CORE, SERVER_CORE, NOLIMITS  # noqa: E402
import rtclient  # noqa: E402

BUILD = os.environ.get("BENCH_BUILD", os.path.join(ROOT, "build-release"))
PY = "/usr/bin/python3"
ADMIN, ADMIN_PW = "bench@example.com", "bench-password-1"
MIX = (("browse", 30), ("search", 15), ("view", 20), ("cart", 10), ("checkout", 5), ("history", 15), ("stock", 5))
BUDGET_MS, DIRECTION_MS = 1000.0, 50.0
CG_CPU, CG_MEM = "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/memory"


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Cgroup:
    """A cgroup v1 pair (cpu, memory) holding one process: 1 CPU and 512 MB. Removed
    by remove() after the process has left it (ended or moved back)."""

    def __init__(self, name, cpus=1.0, mem_mb=512):
        self.paths = [os.path.join(CG_CPU, name), os.path.join(CG_MEM, name)]
        for p in self.paths:
            os.makedirs(p, exist_ok=True)
        self._w(self.paths[0], "cpu.cfs_period_us", "100000")
        self._w(self.paths[0], "cpu.cfs_quota_us", str(int(100000 * cpus)))
        self._w(self.paths[1], "memory.limit_in_bytes", f"{mem_mb}M")

    def wrap(self, argv):
        """argv run inside the group from its first instruction, so that every page it
        touches (the SQLite file's cache included) is charged to it: this kernel has
        no memory.move_charge_at_immigrate, and a process moved later would leave its
        memory charged outside."""
        joins = "; ".join(f"echo $$ > {p}/cgroup.procs" for p in self.paths)
        return ["sh", "-c", f'{joins}; exec "$@"', "sh"] + argv

    @staticmethod
    def _w(d, f, v):
        with open(os.path.join(d, f), "w") as fh:
            fh.write(v)

    def peak_mb(self):
        with open(os.path.join(self.paths[1], "memory.max_usage_in_bytes")) as f:
            return int(f.read()) / 1e6

    def throttled(self):
        with open(os.path.join(self.paths[0], "cpu.stat")) as f:
            return dict(line.split() for line in f)

    def remove(self):
        for p in self.paths:
            root = os.path.dirname(p)
            try:
                with open(os.path.join(p, "cgroup.procs")) as f:
                    left = [x for x in f.read().split() if x]
                for pid in left:  # back to the root group, so the group can go
                    self._w(root, "cgroup.procs", pid)
                os.rmdir(p)
            except OSError as ex:
                log(f"cgroup: could not remove {p}: {ex}")


def start_pg(lab, keep=None, reuse=None):
    """A new database in BASALT_TEST_PG_URL's server, else in one of our own (stopped at
    the end), dropped at the end; with keep (a folder) left there and named in
    keep/pg-db; with reuse (a folder made by keep) the database it names."""
    url = os.environ.get("BASALT_TEST_PG_URL")
    if reuse:
        with open(os.path.join(reuse, "pg-db")) as f:
            return f.read().strip()
    if not url:
        d = os.path.join(lab.dir, "pg")
        out = subprocess.run([os.path.join(ROOT, "scripts", "pg-env.sh"), "start", d], check=True,
                             capture_output=True, text=True).stdout
        env = dict(line.replace("export ", "", 1).split("=", 1) for line in out.splitlines() if "=" in line)
        url = env["BASALT_TEST_PG_URL"].strip("'\"")
        lab.stops.append(lambda: subprocess.run([os.path.join(ROOT, "scripts", "pg-env.sh"), "stop", d],
                                                capture_output=True))
    base = url.rsplit("/", 1)[0]
    db = f"shop{'kept' if keep else 'bench'}_{os.getpid()}_{len(lab.stops)}"
    subprocess.run(["psql", base + "/postgres", "-qAt", "-c", f"CREATE DATABASE {db}"], check=True)
    if keep:
        os.makedirs(keep)
        with open(os.path.join(keep, "pg-db"), "w") as f:
            f.write(f"{base}/{db}\n")
        return f"{base}/{db}"
    lab.stops.append(lambda: subprocess.run(["psql", base + "/postgres", "-qAt", "-c",
                                             f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], capture_output=True))
    return f"{base}/{db}"


def start_basalt(lab, name, data, db_args, extra=(), wrap=None):
    subprocess.run([f"{BUILD}/basalt", "superuser", "upsert", ADMIN, ADMIN_PW, f"--dir={data}"] + db_args,
                   check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    argv = [f"{BUILD}/basalt", "serve", f"--http=127.0.0.1:{port}", f"--dir={data}", "--log-level=warn"] + \
        NOLIMITS + db_args + list(extra)
    p = lab.start(name, wrap(argv) if wrap else argv)
    wait_http(port, "/api/health", timeout=120)
    return p, port


def superuser(port):
    return http("POST", port, "/api/collections/_superusers/auth-with-password",
                {"identity": ADMIN, "password": ADMIN_PW})["token"]


def requests_file(path, made, tokens, staff_tokens, seed, n_lines):
    """The mix as shopload's request file, shuffled from the seed."""
    rng = random.Random(seed)
    n_prod, n_cat = made["products"], made["categories"]
    prod_cum = generate.zipf_cum(n_prod, 1.0)
    cat_cum = generate.zipf_cum(n_cat, 0.7)
    import bisect

    def popular_product():
        return min(bisect.bisect(prod_cum, rng.random() * prod_cum[-1]), n_prod - 1)
    users = sorted(tokens)
    kinds = rng.choices([k for k, _ in MIX], [w for _, w in MIX], k=n_lines)
    q = urllib.parse.quote
    with open(path, "w") as f:
        for kind in kinds:
            u = users[rng.randrange(len(users))]
            tok = tokens[u]
            uid = generate.make_id("u", u)
            if kind == "browse":
                c = generate.make_id("c", min(bisect.bisect(cat_cum, rng.random() * cat_cum[-1]), n_cat - 1))
                line = ("GET", f"/api/collections/products/records?filter={q(f'category=' + chr(39) + c + chr(39))}"
                        f"&sort={rng.choice(['-price', 'price', '-created'])}&perPage=20", "-", "-")
            elif kind == "search":
                # Sorted by price: ranked by relevance (no sort) costs a bm25 per match
                # on SQLite, quadratic in the matches (see ranked_search below).
                line = ("GET", f"/api/collections/products/records?search={q(' '.join(rng.sample(generate.WORDS, rng.choice([1, 1, 2]))))}"
                        "&sort=price&perPage=20", "-", "-")
            elif kind == "view":
                line = ("GET", f"/api/collections/products/records/{generate.make_id('p', popular_product())}"
                        "?expand=category", "-", "-")
            elif kind == "cart":
                items = [{"product": generate.make_id("p", popular_product()), "qty": rng.randrange(1, 4)}
                         for _ in range(rng.randrange(1, 4))]
                line = ("PATCH", f"/api/collections/carts/records/{generate.make_id('k', u)}", tok,
                        json.dumps({"items": items}))
            elif kind == "checkout":
                oid = "zz{n}"
                lines = [popular_product() for _ in range(2)]
                reqs = [{"method": "POST", "url": "/api/collections/orders/records",
                         "body": {"id": oid, "user": uid, "status": "new", "total": 0,
                                  "placed": generate.ts(int(time.time()))}}]
                reqs += [{"method": "POST", "url": "/api/collections/order_items/records",
                          "body": {"purchase": oid, "product": generate.make_id("p", p), "qty": 1, "price": 1}}
                         for p in lines]
                line = ("POST", "/api/batch", tok, json.dumps({"requests": reqs}))
            elif kind == "history":
                line = ("GET", "/api/collections/orders/records?sort=-placed&perPage=20", tok, "-")
            else:  # stock, by staff
                line = ("PATCH", f"/api/collections/inventory/records/{generate.make_id('i', popular_product())}",
                        rng.choice(staff_tokens), json.dumps({"stock": rng.randrange(100, 1000)}))
            f.write(kind + "\t" + "\t".join(line) + "\n")


class StockWatch(threading.Thread):
    """One SSE subscriber of inventory/*: the delay of each stock change (the record's
    "updated", set when it was written, to its arrival here)."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.sse = rtclient.SSE(url)
        body = json.dumps({"clientId": self.sse.client_id, "subscriptions": ["inventory/*"]})
        port = int(url.rsplit(":", 1)[1])
        import urllib.request
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/realtime", data=body.encode(), method="POST",
                                     headers={"content-type": "application/json"})
        urllib.request.urlopen(req, timeout=30).read()
        self.delays, self.halt = [], threading.Event()

    def run(self):
        while not self.halt.is_set():
            ev = self.sse.next(timeout=0.5)
            if ev is None or not ev.get("data"):
                continue
            try:
                rec = json.loads(ev["data"])["record"]
                t = time.mktime(time.strptime(rec["updated"][:19], "%Y-%m-%d %H:%M:%S")) - time.timezone
                self.delays.append((time.time() - t - float("0." + rec["updated"][20:23])) * 1000)
            except (KeyError, ValueError, TypeError):
                pass

    def stop(self):
        self.halt.set()
        self.join(timeout=5)
        self.sse.close()
        d = sorted(self.delays)
        pct = (lambda p: d[min(len(d) - 1, int(len(d) * p))] if d else 0.0)
        return dict(events=len(d), p50=round(pct(0.5), 1), p99=round(pct(0.99), 1))


def ranked_search(port, n):
    """Search ranked by relevance, one request at a time: p50 and max in ms, the matches."""
    times, total = [], 0
    for w in generate.WORDS[:n]:
        t = time.time()
        try:
            r = http("GET", port, f"/api/collections/products/records?search={w}&perPage=20")
        except OSError:  # the set-up client's 30 s: say so rather than stop the run
            return f"a request took more than 30 s ('{w}'; {len(times)} answered before: " \
                   f"{', '.join(f'{x:.0f}' for x in times)} ms)"
        times.append((time.time() - t) * 1000)
        total = max(total, r["totalItems"])
    times.sort()
    return f"p50 {times[len(times) // 2]:.0f} ms, max {times[-1]:.0f} ms (up to {total:,} matches)"


def shopload(port, reqfile, rate, secs, conns, start_n):
    argv = ["taskset", "-c", LOAD_CORE, f"{BUILD}/shopload", "-c", str(conns), "-r", str(rate), "-d", str(secs),
            "-w", str(min(2, secs / 4)), "-n", str(start_n), "-f", reqfile, f"http://127.0.0.1:{port}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 120)
    if out.returncode != 0:
        raise RuntimeError(f"shopload failed: {out.stderr[-800:]}")
    rows = {}
    for line in out.stdout.splitlines():
        kv = dict(x.split("=", 1) for x in line.split())
        rows[kv["kind"]] = kv
    return rows, out.stdout + out.stderr


def main():
    ap = argparse.ArgumentParser(description="Plan 003's shop at its peak hour")
    ap.add_argument("--backend", choices=("sqlite", "pg", "both"), default="both")
    ap.add_argument("--scale", type=float, default=1000, help="generator scale, units of 1,000 orders (~0.57 MB on SQLite; default 1000)")
    ap.add_argument("--users", type=int, default=2000, help="simulated users = connections (default 2000)")
    ap.add_argument("--rate", type=float, default=200, help="requests per second (default 200)")
    ap.add_argument("--rates", default="1,2,5,10,25,50,100,200,400,800,1600",
                    help="with --cgroup: the rates to step through, comma-separated")
    ap.add_argument("--secs", type=float, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--subscribers", type=int, default=500)
    ap.add_argument("--cgroup", action="store_true",
                    help="after the rounds: Basalt moved into a cgroup of 1 CPU and 512 MB, --rates stepped up")
    ap.add_argument("--bulk", choices=("c", "python", "sql"), default="c",
                    help="who writes the rows (generate.py --bulk): bench/shopgen.c by default")
    ap.add_argument("--warmup", type=float, default=0,
                    help="an unrecorded round of this many seconds at --rate before the rounds (the "
                         "first round after the generation otherwise meets a server whose caches are cold)")
    ap.add_argument("--cgroup-warmup-rate", type=float,
                    help="with --cgroup: the unrecorded warm-up of the new server in the cgroup runs at this "
                         "rate (default: the first step's) for --warmup seconds (default 15)")
    ap.add_argument("--keep", metavar="DIR",
                    help="generate into DIR (a new folder; PostgreSQL: a database of BASALT_TEST_PG_URL's server, "
                         "named in DIR/pg-db) and leave it there, for --reuse")
    ap.add_argument("--reuse", metavar="DIR",
                    help="no generation: the shop made by --keep DIR")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out")
    cfg = ap.parse_args()
    if (cfg.keep or cfg.reuse) and cfg.backend == "both":
        ap.error("--keep and --reuse work with one --backend (sqlite or pg)")
    if (cfg.keep or cfg.reuse) and cfg.backend == "pg" and not os.environ.get("BASALT_TEST_PG_URL"):
        ap.error("--keep and --reuse with --backend pg need BASALT_TEST_PG_URL (a server that outlives "
                 "this script, e.g. scripts/pg-env.sh start DIR): the database is left there")
    if cfg.keep and cfg.reuse:
        ap.error("--keep and --reuse exclude each other")
    if cfg.keep and os.path.exists(cfg.keep):
        ap.error(f"--keep {cfg.keep}: the folder exists; give a new one")
    if cfg.reuse and not os.path.exists(os.path.join(cfg.reuse, "shop-made.json")):
        ap.error(f"--reuse {cfg.reuse}: no shop-made.json there (make the folder with --keep)")
    if cfg.smoke:
        cfg.scale, cfg.users, cfg.rate, cfg.secs, cfg.rounds, cfg.subscribers = 0.3, 40, 60, 3, 1, 20
    started = time.strftime("%Y-%m-%d-%H%M", time.gmtime())
    out = cfg.out or (tempfile.mkdtemp(prefix="shop-smoke-") if cfg.smoke else
                      os.path.join(ROOT, "bench", "results", f"{started}-shop"))
    os.makedirs(os.path.join(out, "raw"), exist_ok=True)
    backends = ["sqlite", "pg"] if cfg.backend == "both" else [cfg.backend]
    results, failures, notes = [], [], []
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    lab = Lab()
    try:
        for be in backends:
            data = os.path.abspath(cfg.reuse or cfg.keep or os.path.join(lab.dir, f"basalt-{be}"))
            db_args = []
            if be == "pg":
                url = start_pg(lab, cfg.keep, cfg.reuse)
                db_args = [f"--db={url}", f"--db-listen={url}"]
            p, port = start_basalt(lab, f"basalt-{be}", data, db_args)
            tok = superuser(port)
            if cfg.reuse:
                with open(os.path.join(data, "shop-made.json")) as f:
                    made = json.load(f)
                log(f"{be}: the shop of {data}: {made['rows']:,} rows, {made['mb']:,} MB (load average {loadavg()})")
                notes.append(f"{be}: the shop generated earlier into {data} ({made['rows']:,} rows, {made['mb']:,} MB)")
            else:
                log(f"{be}: generating the shop at scale {cfg.scale} (load average {loadavg()})...")
                where = ["--pg", url] if be == "pg" else ["--dir", data]
                g = subprocess.run([PY, os.path.join(ROOT, "examples", "shop", "generate.py"), "--url",
                                    f"http://127.0.0.1:{port}", "--email", ADMIN, "--password", ADMIN_PW,
                                    "--scale", str(cfg.scale), "--bulk", cfg.bulk] + where, capture_output=True, text=True,
                                   env={**os.environ, "SHOPGEN": os.path.join(BUILD, "shopgen")})
                if g.returncode != 0:
                    raise RuntimeError(f"generate failed on {be}: {g.stderr[-800:]}")
                made = json.loads(g.stdout.strip().splitlines()[-1])
                log(f"  {made['rows']:,} rows, {made['mb']:,} MB in {made['seconds']} s: {made['rows_per_s']:,} rows/s, "
                    f"{made['mb_per_min']:,} MB/min (generator CPU {made['cpu_s']} s; load average {loadavg()})")
                notes.append(f"{be}: generated {made['rows']:,} rows ({made['mb']:,} MB) in {made['seconds']} s = "
                             f"{made['rows_per_s']:,} rows/s, {made['mb_per_min']:,} MB/min; Basalt's counts matched")
                if cfg.keep:
                    with open(os.path.join(data, "shop-made.json"), "w") as f:
                        json.dump(made, f)
                # The generator writes without fsync: gigabytes of dirty pages that the
                # kernel writes back over the next minutes, during which every fsync
                # (SQLite's checkpoints, PostgreSQL's commits) waits behind them. A shop
                # does not open its peak hour on that, so the data goes to disk first.
                t0 = time.time()
                if be == "pg":
                    subprocess.run(["psql", url, "-qAt", "-c", "CHECKPOINT"], check=True, capture_output=True)
                os.sync()
                log(f"  on disk (sync{', CHECKPOINT' if be == 'pg' else ''}) in {time.time() - t0:.1f} s")
            # Tokens without a password hash each: impersonation by the superuser.
            n_users = min(cfg.users, made["users"])
            picks = sorted(random.Random(7).sample(range(made["users"]), n_users))
            tokens = {u: http("POST", port, f"/api/collections/shop_users/impersonate/{generate.make_id('u', u)}",
                              {"duration": 7200}, tok)["token"] for u in picks}
            staff = [http("POST", port, f"/api/collections/shop_users/impersonate/{generate.make_id('u', u)}",
                          {"duration": 7200}, tok)["token"] for u in range(made["staff"])]
            reqfile = os.path.join(lab.dir, f"requests-{be}.tsv")
            requests_file(reqfile, made, tokens, staff, 11, 50000 if not cfg.smoke else 2000)
            notes.append(f"{be}: ranked search (no sort, one word, 5 one at a time, before the load): "
                         f"{ranked_search(port, 5 if not cfg.smoke else 2)}")
            log("  " + notes[-1])
            rt = None
            if cfg.subscribers:
                rt = lab.start(f"rtload-{be}", [f"{BUILD}/rtload", "idle", str(port), str(cfg.subscribers)],
                               env={"RTLOAD_TOPIC": "inventory/*"}, core=LOAD_CORE)
                time.sleep(min(10, 1 + cfg.subscribers / 200))
            cg = None
            try:
                # The checkouts' new order ids come from this counter: from the clock, so
                # that a run on a reused shop makes ids no earlier run made.
                counter = (int(time.time()) % 10**8) * 10**5
                if cfg.warmup > 0:
                    log(f"  warm-up: {cfg.warmup:g} s at {cfg.rate:g}/s, not recorded")
                    shopload(port, reqfile, cfg.rate, cfg.warmup, n_users, counter)
                    counter += int(cfg.rate * cfg.warmup) + 1000
                steps = [float(r) for r in (cfg.rates or "").split(",") if r]
                # The rounds at --rate, then (--cgroup) the same server moved into the
                # cgroup and the rate stepped up until p99 passes 50 ms.
                plan = [(cfg.rate, k + 1, False) for k in range(cfg.rounds)] + \
                    [(r, 1, True) for r in (steps if cfg.cgroup else [])]
                held = None
                for rate, rnd, in_cg in plan:
                    if in_cg and cg is None:
                        # The same data, served by a new Basalt started inside the cgroup.
                        cg = Cgroup(f"basalt-shopbench-{os.getpid()}")
                        if rt is not None and rt.poll() is None:
                            rt.terminate()
                            rt.wait(timeout=30)
                        p.terminate()
                        p.wait(timeout=60)
                        p, port = start_basalt(lab, f"basalt-{be}-cgroup", data, db_args, wrap=cg.wrap)
                        if cfg.subscribers:
                            rt = lab.start(f"rtload-{be}-cg", [f"{BUILD}/rtload", "idle", str(port),
                                                              str(cfg.subscribers)],
                                           env={"RTLOAD_TOPIC": "inventory/*"}, core=LOAD_CORE)
                            time.sleep(min(10, 1 + cfg.subscribers / 200))
                        # A new process starts with cold caches: one unrecorded run at the
                        # first step's rate warms them, as the rounds before were warm.
                        wrate = cfg.cgroup_warmup_rate or rate
                        wsecs = cfg.warmup if cfg.warmup > 0 else min(cfg.secs, 15)
                        log(f"  cgroup warm-up: {wsecs:g} s at {wrate:g}/s, not recorded")
                        shopload(port, reqfile, wrate, wsecs, n_users, counter)
                        counter += int(wrate * wsecs) + 1000
                    try:
                        watch = StockWatch(f"http://127.0.0.1:{port}")
                        watch.start()
                    except (OSError, AssertionError) as ex:  # a server too busy to subscribe: say so, go on
                        log(f"  realtime subscriber could not subscribe: {ex!r}")
                        watch = None
                    la = loadavg()
                    rows, raw = shopload(port, reqfile, rate, cfg.secs, n_users, counter)
                    counter += int(rate * cfg.secs) + 1000
                    rtd = watch.stop() if watch else dict(events=-1, p50=0.0, p99=0.0)
                    with open(os.path.join(out, "raw", f"{be}-{'cg-' if cg else ''}{rate:g}-{rnd}.txt"), "w") as f:
                        f.write(raw + f"\nrealtime {json.dumps(rtd)}\nloadavg {la}\n")
                    extra = dict(cgroup_peak_mb=round(cg.peak_mb()), throttled=cg.throttled().get("nr_throttled")) \
                        if cg else {}
                    for kind, kv in rows.items():
                        results.append(dict(backend=be, cgroup=int(bool(cg)), rate=rate, round=rnd, kind=kind,
                                            count=kv["count"], errors=kv["errors"], p50=kv["p50"], p99=kv["p99"],
                                            max=kv["max"], loadavg=la, mb=made["mb"], **extra))
                    results.append(dict(backend=be, cgroup=int(bool(cg)), rate=rate, round=rnd, kind="realtime",
                                        count=rtd["events"], errors=0, p50=rtd["p50"], p99=rtd["p99"], max="",
                                        loadavg=la, mb=made["mb"], **extra))
                    a = rows["all"]
                    log(f"  {be}{' cgroup' if cg else ''} rate {rate:g}/s round {rnd}: achieved {a['rate']}/s "
                        f"p50 {a['p50']} ms p99 {a['p99']} ms errors {a['errors']}; realtime {rtd}; load {la}"
                        + (f"; cgroup peak {extra['cgroup_peak_mb']} MB, throttled {extra['throttled']}" if cg else ""))
                    for kind, kv in rows.items():
                        if kind != "all":
                            log(f"    {kind:<9} {kv['count']:>7} p50 {float(kv['p50']):8.2f} ms  "
                                f"p99 {float(kv['p99']):8.2f} ms  errors {kv['errors']}")
                        if int(kv["errors"]) and cfg.smoke:
                            failures.append(f"{be}: {kind}: {kv['errors']} errors")
                    if cfg.smoke:
                        for kind, _ in MIX:
                            if kind not in rows or int(rows[kind]["count"]) == 0:
                                failures.append(f"{be}: {kind}: no answers")
                        if rtd["events"] == 0 and "stock" in rows:
                            failures.append(f"{be}: no realtime stock event reached the subscriber")
                    if cg:
                        if int(a["errors"]) == 0 and float(a["p99"]) < DIRECTION_MS and float(a["rate"]) >= 0.95 * rate:
                            held = rate
                        else:
                            break
                if cfg.cgroup:
                    notes.append(f"{be} in a cgroup of 1 CPU and 512 MB: highest rate held with p99 < 50 ms and no "
                                 f"errors: {f'{held:g}/s' if held is not None else 'none of ' + str(cfg.rates)}")
                    log("  " + notes[-1])
            finally:
                if cg:
                    cg.remove()
                if rt is not None and rt.poll() is None:
                    rt.terminate()
            p.terminate()
            p.wait(timeout=30)
    finally:
        for logf in glob.glob(os.path.join(lab.dir, "*.log")):  # the servers' logs, for the errors
            shutil.copy(logf, os.path.join(out, "raw"))
        lab.stop()
        write_results(cfg, out, results, notes)
    if cfg.smoke:
        for x in failures:
            log(f"FAILED: {x}")
        log(f"{len(backends) - len({x.split(':')[0] for x in failures})} passed, "
            f"{len({x.split(':')[0] for x in failures})} failed")
        if not failures:
            shutil.rmtree(out, ignore_errors=True)
        sys.exit(1 if failures else 0)


def write_results(cfg, out, results, notes):
    fields = ["backend", "cgroup", "rate", "round", "kind", "count", "errors", "p50", "p99", "max", "loadavg", "mb",
              "cgroup_peak_mb", "throttled"]
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(results)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(report(cfg, results, notes))
    log(f"report: {out}/report.md")


def report(cfg, results, notes):
    lines = [f"# Shop peak hour ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"`bench/shop.py {' '.join(sys.argv[1:])}`: {cfg.users} simulated users (connections), "
             f"{cfg.secs:g} s per run; budget {BUDGET_MS:g} ms (plan 003), direction p99 < {DIRECTION_MS:g} ms.", ""]
    lines += [f"- {n}" for n in notes] + [""]
    lines += ["| backend | cgroup | rate/s | round | kind | count | errors | p50 ms | p99 ms | max ms | p99 < 1 s | "
              "p99 < 50 ms | load avg |", "|" + "---|" * 13]
    for r in results:
        p99 = float(r["p99"] or 0)
        lines.append(f"| {r['backend']} | {'yes' if r['cgroup'] else 'no'} | {r['rate']:g} | {r['round']} | {r['kind']} | "
                     f"{r['count']} | {r['errors']} | {r['p50']} | {r['p99']} | {r['max']} | "
                     f"{'yes' if p99 < BUDGET_MS else 'NO'} | {'yes' if p99 < DIRECTION_MS else 'no'} | {r['loadavg']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
