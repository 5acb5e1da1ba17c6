#!/usr/bin/env python3
"""Per-request costs on the local cluster (deploy/local/cluster.sh), for the capacity
model in docs/scaling.md: wrk through HAProxy with 1 instance (the other put in
maintenance) and with 2, plus one instance directly; for each run the requests per
second and the CPU each part used per request (user + system time from /proc, in
microseconds, beyond what each part uses when idle), so that the model can say which part saturates first on bigger machines.

Usage: bench/cluster_cost.py CLUSTER_DIR [SECONDS] [CONNECTIONS]
(a running cluster; up with --admin admin@example.com:admin-password-1 and no rate
limits: --basalt-arg=--rate-limit-anon=0 ...). Prints a Markdown table. Not a test."""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import requests

d = sys.argv[1]
secs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
conns = int(sys.argv[3]) if len(sys.argv) > 3 else 32
HERE = os.path.dirname(os.path.abspath(__file__))
SH = os.path.join(HERE, "..", "deploy", "local", "cluster.sh")
env = dict(l.split("=", 1) for l in subprocess.run([SH, "status", "--dir", d], capture_output=True, text=True)
           .stdout.split() if "=" in l)
lb = env["BASALT_URL"]
inst = env["BASALT_INSTANCE_URLS"].split(",")
CLK = os.sysconf("SC_CLK_TCK")


def pids():
    """The cluster's processes by part: Basalt instances, HAProxy, PgBouncer and every
    PostgreSQL process of either node (the postmaster's children included)."""
    out = {}
    for n in os.listdir(os.path.join(d, "pids")):
        out[n] = [int(open(os.path.join(d, "pids", n)).read())]
    pg = []
    for n in (1, 2):
        try:
            pm = int(open(os.path.join(d, f"node{n}", "data", "postmaster.pid")).readline())
        except OSError:
            continue
        kids = subprocess.run(["pgrep", "-P", str(pm)], capture_output=True, text=True).stdout.split()
        pg += [pm] + [int(k) for k in kids]
    out["postgres"] = pg
    return out


def cpu(pidlist):
    t = 0
    for p in pidlist:
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            t += int(f[11]) + int(f[12])  # utime, stime
            # Threads' time is in the process's; exited children's is not counted.
        except OSError:
            pass
    return t / CLK


def part(name):
    return "basalt" if name.startswith("basalt") else name


IDLE = {}  # part -> CPU seconds per second with no load (health checks, Patroni, etcd)


def idle_baseline(secs=5):
    p = pids()
    b = {k: cpu(v) for k, v in p.items()}
    time.sleep(secs)
    for k, v in p.items():
        IDLE[part(k)] = IDLE.get(part(k), 0) + (cpu(v) - b[k]) / secs


def run(url, script, label):
    before_pids = pids()
    before = {k: cpu(v) for k, v in before_pids.items()}
    out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{secs}s", "--latency", "-s", script, url],
                         capture_output=True, text=True, timeout=secs + 60).stdout
    after = {k: cpu(v) for k, v in before_pids.items()}
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    p99 = re.search(r"99%\s+(\S+)", out).group(1)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    n = rps * secs
    costs = {}
    for k in before:
        costs[part(k)] = costs.get(part(k), 0) + (after[k] - before[k])
    # The load's own cost: what each part used beyond its idle rate.
    us = {k: round(max(0.0, v - IDLE.get(k, 0) * secs) / n * 1e6, 1) for k, v in costs.items() if v > 0}
    return {"label": label, "rps": round(rps), "p99": p99, "non2xx": int(errors.group(1)) if errors else 0,
            "us_per_request": us}


def main():
    tok = requests.post(lb + "/api/collections/_superusers/auth-with-password",
                        json={"identity": "admin@example.com", "password": "admin-password-1"}).json()["token"]
    name = "bench" + os.urandom(3).hex()
    r = requests.post(lb + "/api/collections", headers={"Authorization": tok}, json={
        "name": name, "listRule": "", "viewRule": "", "createRule": "",
        "fields": [{"name": "title", "type": "text"}, {"name": "n", "type": "number"}]})
    assert r.status_code == 200, r.text
    # Every instance loads the new collection (a schema change reaches the others only
    # when they restart; see docs/scaling.md).
    for i in range(1, len(inst) + 1):
        subprocess.run([SH, "restart-instance", str(i), "--dir", d], check=True, capture_output=True)
    rid = requests.post(lb + f"/api/collections/{name}/records", json={"title": "hello", "n": 1}).json()["id"]
    tmp = tempfile.mkdtemp()
    get = os.path.join(tmp, "get.lua")
    open(get, "w").write(f'wrk.path = "/api/collections/{name}/records/{rid}"\n')
    post = os.path.join(tmp, "post.lua")
    open(post, "w").write(f'wrk.method = "POST"\nwrk.path = "/api/collections/{name}/records"\n'
                          'wrk.headers["Content-Type"] = "application/json"\n'
                          'wrk.body = \'{"title": "bench", "n": 2}\'\n')
    sock = os.path.join(d, "haproxy.sock")

    def hap(cmd):
        subprocess.run(["/usr/bin/python3", "-c", "import socket,sys; s=socket.socket(socket.AF_UNIX); "
                        "s.connect(sys.argv[1]); s.sendall(sys.argv[2].encode()+b'\\n'); s.recv(65536)", sock, cmd],
                       check=True)

    idle_baseline()
    rows = []
    for script, kind in ((get, "GET one record (view rule \"\")"), (post, "POST create")):
        rows.append(run(inst[0], script, f"{kind}: 1 instance, direct"))
        for b in ("basalt", "basalt_live"):
            hap(f"set server {b}/basalt2 state maint")
        time.sleep(1)
        rows.append(run(lb, script, f"{kind}: 1 instance behind HAProxy"))
        for b in ("basalt", "basalt_live"):
            hap(f"set server {b}/basalt2 state ready")
        time.sleep(2)
        rows.append(run(lb, script, f"{kind}: 2 instances behind HAProxy"))
    print(f"wrk -t2 -c{conns} -d{secs}s, {os.cpu_count()} cores shared by every process of the cluster and wrk; "
          "CPU per request beyond each part's idle rate, which was (CPU ms per second): " +
          ", ".join(f"{k} {v * 1000:.1f}" for k, v in sorted(IDLE.items())))
    parts = sorted({k for r in rows for k in r["us_per_request"]})
    print("| run | req/s | p99 | non-2xx | " + " | ".join(f"{p} CPU µs/req" for p in parts) + " |")
    print("|---|---|---|---|" + "---|" * len(parts))
    for r in rows:
        print(f"| {r['label']} | {r['rps']:,} | {r['p99']} | {r['non2xx']} | " +
              " | ".join(str(r["us_per_request"].get(p, "")) for p in parts) + " |")
    print(json.dumps(rows))


main()
