#!/usr/bin/env python3
"""pg_watch.py PGURL SECS INTERVAL: every INTERVAL seconds for SECS, the CPU of each of the
running basalt's threads (by name), of all postgres processes, and what pg_stat_activity
shows active (wait events, the statements), for a load run on PostgreSQL."""
import os, sys, time, subprocess, collections
url, secs, iv = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
HZ = os.sysconf("SC_CLK_TCK")
def pids(name):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if open(f"/proc/{p}/comm").read().strip() == name: out.append(int(p))
            except OSError: pass
    return out
def tcpu(pid):
    r = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            s = open(f"/proc/{pid}/task/{t}/stat").read()
            comm = s[s.index("(")+1:s.rindex(")")]; f = s[s.rindex(")")+2:].split()
            r[t] = (comm, int(f[11]) + int(f[12]), int(f[39]) if len(f) > 39 else 0)
        except OSError: pass
    return r
def pgcpu():
    tot = 0
    for p in pids("postgres"):
        try:
            f = open(f"/proc/{p}/stat").read(); f = f[f.rindex(")")+2:].split(); tot += int(f[11]) + int(f[12])
        except OSError: pass
    return tot
def psql(q):
    return subprocess.run(["psql", url, "-qAt", "-F", "\t", "-c", q], capture_output=True, text=True).stdout
b = pids("basalt")[0]
prev, pprev, t0 = tcpu(b), pgcpu(), time.time()
while time.time() - t0 < secs:
    time.sleep(iv)
    cur, pc = tcpu(b), pgcpu()
    by = collections.Counter()
    for t, (comm, c, _) in cur.items():
        if t in prev: by[comm] += c - prev[t][1]
    line = " ".join(f"{k}={v*100/HZ/iv:.0f}%" for k, v in by.most_common(8) if v)
    print(f"{time.strftime('%H:%M:%S')} basalt {line} | postgres {(pc-pprev)*100/HZ/iv:.0f}%", flush=True)
    act = psql("select coalesce(wait_event_type,'-')||':'||coalesce(wait_event,'-'), state, left(regexp_replace(query,'\\s+',' ','g'),90) from pg_stat_activity where backend_type='client backend' and state<>'idle' and pid<>pg_backend_pid()")
    c = collections.Counter(l.split("\t")[0] + " " + l.split("\t")[1] for l in act.splitlines() if l)
    q = collections.Counter(l.split("\t")[2] for l in act.splitlines() if l.count("\t") >= 2)
    print("   waits:", dict(c.most_common(6)))
    for k, v in q.most_common(4): print(f"   {v:3d} {k}")
    prev, pprev = cur, pc
