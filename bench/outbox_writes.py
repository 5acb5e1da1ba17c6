#!/usr/bin/env python3
"""Server CPU per create with --realtime-outbox=1 and =0 (ADR 0006): one client, sequential
creates on SQLite, one worker. Usage: BUILD=build-release /usr/bin/python3 bench/outbox_writes.py"""
import os, subprocess, sys, time, tempfile, requests, shutil
BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", os.environ.get("BUILD", "build-release"), "basalt")
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().split(")")[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
def run(mode, n, port):
    d = tempfile.mkdtemp(prefix="evwb-")
    subprocess.run([BIN, "superuser", "upsert", "b@example.com", "bench-password-1", f"--dir={d}"], check=True, capture_output=True)
    p = subprocess.Popen([BIN, "serve", f"--http=127.0.0.1:{port}", f"--dir={d}", "--threads=1", "--log-level=warn",
                          "--rate-limit-anon=0", "--rate-limit-user=0", "--rate-limit-burst=0", "--rate-limit-auth=0",
                          f"--realtime-outbox={mode}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    u = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.get(u + "/api/health"); break
        except Exception: time.sleep(0.1)
    s = requests.Session()
    t = s.post(u + "/api/collections/_superusers/auth-with-password", json={"identity": "b@example.com", "password": "bench-password-1"}).json()["token"]
    s.headers["Authorization"] = t
    s.post(u + "/api/collections", json={"name": "w", "listRule": "", "createRule": "", "fields": [{"name": "t", "type": "text"}]})
    for i in range(200): s.post(u + "/api/collections/w/records", json={"t": "warm"})
    c0 = cpu(p.pid); t0 = time.time()
    for i in range(n): s.post(u + "/api/collections/w/records", json={"t": f"row {i} " + "x" * 100})
    c1 = cpu(p.pid); t1 = time.time()
    p.terminate(); p.wait(); shutil.rmtree(d)
    return (c1 - c0) / n * 1e6, n / (t1 - t0)
for rnd in range(2):
    for mode in (1, 0):
        us, rate = run(mode, 3000, 18300 + mode)
        print(f"round {rnd} outbox={mode}: server CPU {us:.1f} us per create, {rate:.0f} creates/s (one client, sequential)", flush=True)
