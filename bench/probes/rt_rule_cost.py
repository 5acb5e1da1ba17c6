#!/usr/bin/env python3
# Usage: bench/probes/rt_rule_cost.py BIN SUBSCRIBERS EVENTS (SQLite, one server thread, loopback).
"""CPU per realtime delivery under a rule through a relation (each delivery asks the
database): N SSE subscribers, E creates; server CPU (utime+stime) over the run."""
import os, shutil, socket, subprocess, sys, tempfile, time
import requests
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "integration"))
from rtclient import SSE

BIN, SUBS, EVENTS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
d = tempfile.mkdtemp()
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
subprocess.run([BIN, "superuser", "upsert", "b@example.com", "password-123", f"--dir={d}"], check=True, capture_output=True)
p = subprocess.Popen([BIN, "serve", f"--http=127.0.0.1:{port}", f"--dir={d}", "--threads=1", "--log-level=warn",
                      "--rate-limit-anon=0", "--rate-limit-user=0", "--rate-limit-burst=0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
url = f"http://127.0.0.1:{port}"
for _ in range(100):
    try:
        requests.get(url + "/api/health", timeout=0.2); break
    except Exception:
        time.sleep(0.05)
tok = requests.post(url + "/api/collections/_superusers/auth-with-password", json={"identity": "b@example.com", "password": "password-123"}).json()["token"]
h = {"Authorization": tok}
teams = requests.post(url + "/api/collections", headers=h, json={"name": "teams", "listRule": "", "viewRule": "", "fields": [{"name": "open", "type": "bool"}, {"name": "name", "type": "text"}]}).json()["id"]
requests.post(url + "/api/collections", headers=h, json={"name": "notes", "listRule": "team.open = true", "viewRule": "team.open = true", "fields": [
    {"name": "title", "type": "text"}, {"name": "body", "type": "text"}, {"name": "n", "type": "number"},
    {"name": "team", "type": "relation", "collectionId": teams, "maxSelect": 1}]})
team = requests.post(url + "/api/collections/teams/records", headers=h, json={"open": True, "name": "t"}).json()["id"]
subs = []
for _ in range(SUBS):
    c = SSE(url)
    assert requests.post(url + "/api/realtime", json={"clientId": c.client_id, "subscriptions": ["notes/*"]}).status_code == 204
    subs.append(c)
def cpu():
    f = open(f"/proc/{p.pid}/stat").read().split(")")[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
sess = requests.Session()
c0, t0 = cpu(), time.time()
for i in range(EVENTS):
    sess.post(url + "/api/collections/notes/records", headers=h, json={"title": f"t{i}", "body": "x" * 100, "n": i, "team": team})
deadline = time.time() + 60
got = 0
for c in subs:
    n = 0
    while n < EVENTS and time.time() < deadline:
        if c.next(timeout=5) is None: break
        n += 1
    got += n
c1, t1 = cpu(), time.time()
print(f"{os.path.basename(os.path.dirname(BIN))}: {got} deliveries of {SUBS*EVENTS}, server CPU {c1-c0:.2f} s, {1e6*(c1-c0)/max(got,1):.1f} us per delivery (incl. {EVENTS} creates)")
for c in subs: c.close()
p.terminate()
p.wait()
shutil.rmtree(d)
