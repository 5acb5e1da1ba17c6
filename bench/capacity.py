#!/usr/bin/env python3
"""The capacity model of docs/scaling.md, computed from one harness run's measured
per-request CPU costs (the `parts` column of results.csv: µs of CPU per request of the
Basalt instances, HAProxy, PgBouncer, PostgreSQL and Redis, from /proc).

A MODEL, not a measurement: it assumes the CPU each part spends per request on the
2-core benchmark machine is what it spends on bigger machines, that every part can be
run at a target utilisation (70%) without queueing collapse, and that the single-
threaded parts (Redis, one PgBouncer process) are capped by one core. It ignores
locks, the network (loopback here: the kernel's TCP work of both ends is billed to the
servers), disks (writes wait for PostgreSQL's WAL flush, not only for CPU) and cache
effects on bigger machines.

Usage: bench/capacity.py RESULTS_DIR [--system basalt_cluster2] [--rate N]...
Prints Markdown: the costs used, then for 8-, 16- and 64-core machines the cores and
machines each part needs for each rate, and the part that saturates first."""
import argparse
import csv
import math
import os
import statistics

UTIL = 0.7  # plan every part for 70% CPU (the HPA's target in deploy/k8s)
PARTS = ["basalt", "haproxy", "pgbouncer", "postgres", "redis"]
SINGLE = {"redis": "one Redis primary (single-threaded: one core)",
          "pgbouncer": "one PgBouncer process (single-threaded: one core)"}
LABEL = {"view": "cached record view (authenticated, rule)", "list30": "cached filtered list of 30 with total",
         "create": "create (durable, one commit)", "mixed_2000": "90% views / 10% creates (computed from the view and create rows)"}


def costs(results_dir, system):
    """scenario -> part -> median µs per request."""
    vals = {}
    with open(os.path.join(results_dir, "results.csv")) as f:
        for r in csv.DictReader(f):
            if r["system"] != system or not r.get("parts"):
                continue
            for kv in r["parts"].split(";"):
                k, v = kv.split("=")
                vals.setdefault(r["scenario"], {}).setdefault(k, []).append(float(v))
    return {sc: {k: statistics.median(v) for k, v in p.items()} for sc, p in vals.items()}


def fmt(x):
    return f"{x:,.0f}" if x >= 10 else f"{x:,.1f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--system", default="basalt_cluster2")
    ap.add_argument("--rate", type=int, action="append", help="requests/s to size for (repeatable)")
    ap.add_argument("--cores", type=int, action="append", help="cores per machine (repeatable)")
    ap.add_argument("--create-costs", metavar="PART=US,...",
                    help="per-create costs measured elsewhere (bench/cluster_cost.py), instead of this run's create "
                    "row; the 90/10 mix is then computed from view and these")
    ap.add_argument("--minus", metavar="PART=US,...", action="append", default=[],
                    help="subtract from every read scenario (e.g. the request log's measured cost, to model it off)")
    a = ap.parse_args()
    rates = a.rate or [10000, 100000]
    cores = a.cores or [8, 16, 64]
    c = costs(a.results, a.system)

    def kv(text):
        return {k: float(v) for k, v in (x.split("=") for x in text.split(","))}
    for m in a.minus:
        for sc in ("view", "list30"):
            for k, v in kv(m).items():
                if sc in c:
                    c[sc][k] = max(0.0, c[sc].get(k, 0) - v)
    if a.create_costs:
        c["create"] = kv(a.create_costs)
    if "view" in c and "create" in c:  # a mix of 90% views and 10% creates, from the two
        c["mixed_2000"] = {p: 0.9 * c["view"].get(p, 0) + 0.1 * c["create"].get(p, 0) for p in PARTS}
    print(f"Per-request CPU of `{a.system}` (µs, medians of {a.results}):\n")
    print("| scenario | " + " | ".join(PARTS) + " |\n|---|" + "---|" * len(PARTS))
    for sc in LABEL:
        if sc in c:
            print(f"| {sc} | " + " | ".join(f"{c[sc].get(p, 0):.1f}" for p in PARTS) + " |")
    print()
    for sc, label in LABEL.items():
        if sc not in c:
            continue
        cost = c[sc]
        print(f"**{label}** (`{sc}`): the most one part can serve, at {UTIL:.0%} CPU:\n")
        print("| machine | " + " | ".join(PARTS) + " | saturates first |\n|---|" + "---|" * (len(PARTS) + 1))
        for k in cores:
            cap = {}
            for p in PARTS:
                us = cost.get(p, 0)
                if us <= 0.05:
                    continue
                cap[p] = (1 if p in SINGLE else k) * UTIL * 1e6 / us
            first = min(cap, key=cap.get)
            print(f"| one {k}-core machine | " + " | ".join(fmt(cap[p]) + "/s" if p in cap else "—" for p in PARTS)
                  + f" | {first} |")
        print()
        sizes = " / ".join(str(k) for k in cores)
        print(f"| requests/s | Basalt cores | Basalt machines of {sizes} cores | HAProxy cores | PgBouncer processes "
              f"| PostgreSQL primary cores | Redis cores (one primary holds ≤ 1) |\n|---|---|---|---|---|---|---|")
        for n in rates:
            need = {p: n * cost.get(p, 0) / 1e6 / UTIL for p in PARTS}
            pg = fmt(need["postgres"])
            if need["postgres"] > max(cores):
                pg += " (beyond one primary)"
            print(f"| {n:,} | {fmt(need['basalt'])} | "
                  + " / ".join(str(max(1, math.ceil(need["basalt"] / k))) for k in cores)
                  + f" | {fmt(need['haproxy'])} | {math.ceil(need['pgbouncer']) if need['pgbouncer'] > 0 else 0} | "
                  f"{pg} | {fmt(need['redis'])}{' (beyond one Redis)' if need['redis'] > 1 else ''} |")
        print()


if __name__ == "__main__":
    main()
