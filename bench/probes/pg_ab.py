#!/usr/bin/env python3
"""A/B of Basalt builds on PostgreSQL (through PgBouncer), alternating, same machine.

The full harness seeds 20,000 records through the API before it measures, which takes
minutes on a loaded machine; this probe seeds a small table once and then runs each
binary in turn (a fresh process per round, on the same database, the server on core 0
and wrk on core 1), so that the ratios between the binaries come from the same minutes.
It reuses bench/harness.py's wrk runner and scenarios' scripts.

Usage: bench/probes/pg_ab.py DB_URL LISTEN_URL [--rounds 3] [--secs 4] [--records 2000]
        [--scenarios view,list30,list30_skiptotal,create] [--also-pids PG,PGB]
        NAME=BINARY[:extra,args] ...
DB_URL: the database through PgBouncer (emptied first); LISTEN_URL: the same database
directly (LISTEN). Prints every run and the medians with CPU per request.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import harness as H  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("listen")
    ap.add_argument("builds", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=4)
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--conns", type=int, default=64, help="wrk's connections")
    ap.add_argument("--scenarios", default="view,list30,list30_skiptotal,create")
    ap.add_argument("--also-pids", default="", help="comma-separated PIDs whose process trees count in the CPU "
                    "per request (PostgreSQL's postmaster, PgBouncer)")
    ap.add_argument("--pgbench", action="append", default=[], metavar="NAME=MODE@URL",
                    help="also run pgbench -S each round (16 clients) with -M MODE against URL (a database that "
                    "`pgbench -i` filled; direct or through PgBouncer), e.g. prepared@postgres://.../pgbench")
    cfg = ap.parse_args()
    builds = []
    for b in cfg.builds:
        name, rest = b.split("=", 1)
        path, _, extra = rest.partition(":")
        builds.append((name, path, [x for x in extra.split(",") if x]))
    lab = H.Lab()
    lq = "/api/collections/bench/records?filter=status%3D%27doing%27%20%26%26%20priority%3E%3D5&sort=-priority&perPage=30"
    db = [f"--db={cfg.db}", f"--db-listen={cfg.listen}"]
    results = {}
    try:
        subprocess.run(["psql", cfg.listen, "-qAt", "-c", "DROP SCHEMA public CASCADE", "-c", "CREATE SCHEMA public"],
                       check=True, capture_output=True)
        data = os.path.join(lab.dir, "seed")
        subprocess.run([os.path.abspath(builds[0][1]), "superuser", "upsert", "bench@example.com", "bench-password-1",
                        f"--dir={data}"] + db, check=True, stdout=subprocess.DEVNULL)
        p, port = H.start_basalt_bin(lab, "seed", builds[0][1], data, db + ["--batch-timeout-ms=60000"])
        seeded = json.loads(subprocess.run([H.PY, os.path.join(H.ROOT, "bench", "seed.py"), f"http://127.0.0.1:{port}",
                                            H.superuser_token(port), str(cfg.records)],
                                           check=True, stdout=subprocess.PIPE, text=True).stdout)
        p.terminate()
        p.wait()
        lua = os.path.join(lab.dir, "create.lua")
        with open(lua, "w") as f:
            f.write(H.LUA_CREATE)
        env = dict(ID=seeded["id"], TOKEN=seeded["token"], OWNER=seeded["user"])
        scen = {
            "view": lambda b: H.wrk(f"{b}/api/collections/bench/records/{seeded['id']}", 64, cfg.secs,
                                    [f"Authorization: {seeded['token']}"]),
            "list30": lambda b: H.wrk(b + lq, 64, cfg.secs),
            "list30_skiptotal": lambda b: H.wrk(b + lq + "&skipTotal=1", 64, cfg.secs),
            "create": lambda b: H.wrk(f"{b}/api/collections/bench/records", cfg.conns, cfg.secs, script=lua, env=env),
        }
        for rnd in range(cfg.rounds):
            order = builds[rnd % len(builds):] + builds[:rnd % len(builds)]
            for name, path, extra in order:
                d = os.path.join(lab.dir, f"{name}-{rnd}")
                shutil.copytree(data, d)
                p, port = H.start_basalt_bin(lab, name, path, d, db + extra)
                also = [int(x) for x in cfg.also_pids.split(",") if x]
                # CPU per request of each part too: Basalt, then PostgreSQL and PgBouncer.
                parts = dict(zip(("basalt", "postgres", "pgbouncer"), [[p.pid]] + [[x] for x in also]))
                s = H.System(name, [p.pid] + also, port, parts=parts)
                for sc in cfg.scenarios.split(","):
                    c0 = counters(cfg.listen) + [writer_round_trips(port)]
                    b0 = batch_sizes(port)
                    fig, _ = H.measure(s, lambda: scen[sc](f"http://127.0.0.1:{port}"))
                    c1 = counters(cfg.listen) + [writer_round_trips(port)]
                    b1 = batch_sizes(port)
                    per = [(b - a) / fig["n"] if fig["n"] else float("nan") for a, b in zip(c0, c1)]
                    split = dict(kv.split("=") for kv in fig["parts"].split(";") if kv)
                    batch = (b1[0] - b0[0]) / (b1[1] - b0[1]) if b1[1] > b0[1] else float("nan")
                    results.setdefault((sc, name), []).append(
                        (fig["rps"], fig["cpu_us"], *per, batch, *[float(split.get(k, "nan")) for k in parts]))
                    H.log(f"  round {rnd + 1} {sc:<16} {name:<10} {fig['rps']:>9,.0f} /s  {fig['cpu_us']:7.1f} µs "
                          f"CPU/req  per request: {per[0]:.2f} commits, {per[1]:.2f} WAL flushes, "
                          f"{per[2]:.2f} writer round trips; {batch:.1f} writes per group commit  [{fig['parts']}]  "
                          f"errors {fig['errors']}  load {os.getloadavg()[0]:.1f}")
                p.terminate()
                p.wait()
            for spec in cfg.pgbench:  # PostgreSQL's own ceilings in the same minutes
                name, rest = spec.split("=", 1)
                mode, _, url = rest.partition("@")
                also = [int(x) for x in cfg.also_pids.split(",") if x]
                s = H.System(name, also, 0, parts=dict(zip(("postgres", "pgbouncer"), [[x] for x in also])))
                fig, _ = H.measure(s, lambda: pgbench(mode, url, cfg.secs))
                split = dict(kv.split("=") for kv in fig["parts"].split(";") if kv)
                results.setdefault(("pgbench_select", name), []).append(
                    (fig["rps"], fig["cpu_us"], nan, nan, nan, nan, nan,
                     *[float(split.get(k, "nan")) for k in ("postgres", "pgbouncer")]))
                H.log(f"  round {rnd + 1} pgbench -S -M {mode:<8} {name:<10} {fig['rps']:>9,.0f} /s  "
                      f"{fig['cpu_us']:7.1f} µs CPU/req  [{fig['parts']}]  load {os.getloadavg()[0]:.1f}")
    finally:
        lab.stop()
    for (sc, name), runs in sorted(results.items()):
        med = [sorted(col)[len(col) // 2] for col in zip(*runs)]
        H.log(f"median {sc:<16} {name:<10} {med[0]:>9,.0f} /s  {med[1]:7.1f} µs CPU/req  {med[2]:.2f} commits and "
              f"{med[3]:.2f} WAL flushes and {med[4]:.2f} writer round trips per request, {med[5]:.1f} writes per "
              f"group commit; µs CPU/req "
              + " ".join(f"{k}={v:.1f}" for k, v in zip(("basalt", "postgres", "pgbouncer"), med[6:])))


nan = float("nan")


def pgbench(mode, url, secs):
    out = subprocess.run([H.pg_bin("pgbench"), "-n", "-S", "-M", mode, "-c", "16", "-j", "1", "-T", str(secs), url],
                         capture_output=True, text=True).stdout
    n = int(H.re.search(r"number of transactions actually processed: (\d+)", out).group(1))
    return dict(rps=float(H.re.search(r"tps = ([\d.]+)", out).group(1)), n=n, errors=0, p50=nan, p99=nan), out


def batch_sizes(port):
    """basalt_store_batch_size's sum and count (writes, group commits) from /metrics."""
    out = [0.0, 0.0]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("basalt_store_batch_size_sum"):
                    out[0] = float(line.split()[-1])
                elif line.startswith("basalt_store_batch_size_count"):
                    out[1] = float(line.split()[-1])
    except OSError:
        pass
    return out


def writer_round_trips(port):
    """basalt_store_writer_round_trips_total from the server's /metrics (NaN for a build
    that does not count them: ADR 0017 added the counter)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("basalt_store_writer_round_trips_total "):
                    return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def counters(url):
    """The database's committed transactions and the server's WAL flushes so far (all
    databases: the flushes are the server's)."""
    out = subprocess.run(["psql", url, "-qAt", "-c", "SELECT xact_commit, (SELECT wal_sync FROM pg_stat_wal) "
                          "FROM pg_stat_database WHERE datname = current_database()"],
                         check=True, capture_output=True, text=True).stdout.strip()
    return [int(x) for x in out.split("|")]


if __name__ == "__main__":
    main()
