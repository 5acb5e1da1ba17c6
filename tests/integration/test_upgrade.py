"""The zero-downtime upgrade of one instance (issue 15, item 7; docs/upgrade.md): under
a constant load of keep-alive and new-connection requests, reads and writes, the
running server hands its listening sockets to a new binary (SIGUSR2 or `basalt
upgrade --pid-file`); not one request fails, no connection is reset, the pid
changes, and realtime clients are told to reconnect and resume on the new process."""
import http.client
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from conftest import BIN, Client, Server, ADMIN_EMAIL, ADMIN_PASSWORD, make_superuser
from rtclient import SSE, WS


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def read_pid(path):
    try:
        return int(open(path).read().strip())
    except (OSError, ValueError):
        return None


class Load:
    """Bounded loops in threads: keep-alive clients (one connection reused; the server
    may end it with Connection: close, then the client opens a new one, as any HTTP
    client does) and new-connection clients, each mixing list reads and creates."""

    def __init__(self, port, token, keepalive=3, fresh=3, max_requests=20000):
        self.port, self.token = port, token
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []
        self.resets = 0
        self.latencies = []  # (monotonic start, seconds), for the report printed below
        self.max_requests = max_requests
        self.threads = [threading.Thread(target=self.run, args=(True, i), daemon=True) for i in range(keepalive)]
        self.threads += [threading.Thread(target=self.run, args=(False, i), daemon=True) for i in range(fresh)]

    def run(self, keepalive, idx):
        conn = None
        n = 0
        while not self.stop.is_set() and n < self.max_requests:
            n += 1
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            write = n % 3 == 0
            headers = {"Authorization": self.token}
            if not keepalive:
                headers["Connection"] = "close"
            t0 = time.monotonic()
            try:
                if write:
                    body = json.dumps({"title": f"t{idx}-{n}"})
                    headers["Content-Type"] = "application/json"
                    conn.request("POST", "/api/collections/items/records", body=body, headers=headers)
                else:
                    conn.request("GET", "/api/collections/items/records?perPage=5", headers=headers)
                r = conn.getresponse()
                data = r.read()
                with self.lock:
                    self.latencies.append((t0, time.monotonic() - t0))
                    if r.status == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"{r.status} {data[:200]!r}")
                if not keepalive or r.will_close:
                    conn.close()
                    conn = None
            except ConnectionResetError as e:
                with self.lock:
                    self.resets += 1
                    self.failures.append(f"reset: {e!r}")
                conn.close()
                conn = None
            except (OSError, http.client.HTTPException) as e:
                with self.lock:
                    self.failures.append(f"{type(e).__name__}: {e!r}")
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def wait_for(cond, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def upgradable(tmpdir_path):
    """A server started with a pid file and a copy of the binary to upgrade to; stops
    whichever process serves at the end."""
    copy = os.path.join(tmpdir_path, "basalt-new")
    shutil.copy2(BIN, copy)
    pid_file = os.path.join(tmpdir_path, "basalt.pid")
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path, [f"--pid-file={pid_file}", f"--upgrade-binary={copy}", "--shutdown-grace=10000"])
    srv.start()
    pids = []
    yield srv, pid_file, pids
    for pid in {read_pid(pid_file), *pids} - {None, srv.proc.pid}:
        if alive(pid):
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not alive(pid), 30, f"process {pid} to stop")
    if srv.proc.poll() is None:
        srv.stop()
    srv.log.close()
    # Every process of the chain wrote to the same log: none may report a memory error
    # or a leak (under ASan they exit non-zero too, but only the first one is our child).
    log = open(os.path.join(srv.dir, "server.log"), errors="replace").read()
    assert "Sanitizer" not in log and "runtime error" not in log, log[-3000:]


def setup_items(url):
    c = Client(url)
    c.token = c.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    r = c.post("/api/collections", json={"name": "items", "fields": [{"name": "title", "type": "text"}],
                                          "listRule": "", "viewRule": "", "createRule": ""})
    assert r.status_code == 200, r.text
    r = c.post("/api/collections", json={"name": "quiet", "fields": [{"name": "title", "type": "text"}],
                                          "listRule": "", "viewRule": "", "createRule": ""})
    assert r.status_code == 200, r.text
    return c


def test_upgrade_under_load_loses_nothing(upgradable):
    srv, pid_file, pids = upgradable
    admin = setup_items(srv.url)
    old_pid = srv.proc.pid
    assert read_pid(pid_file) == old_pid
    # Realtime clients on the old process: SSE and WebSocket.
    sse = SSE(srv.url)
    r = admin.post("/api/realtime", json={"clientId": sse.client_id, "subscriptions": ["items/*"]}, token="")
    assert r.status_code == 204, r.text
    # The WebSocket listens to a quiet collection: it reads only at the end.
    ws = WS(srv.url)
    assert ws.request({"type": "subscribe", "topics": ["quiet/*"]})["type"] == "subscribed"

    # They act as the SDK does: on the hint (SSE) or the close (WebSocket) they leave
    # and reconnect, so the old process need not wait for them until its deadline.
    rt_seen = {}

    def watch_sse():
        while True:
            ev = sse.next(timeout=90)
            if ev is None:
                return
            if ev.get("event") == "PB_RECONNECT":
                rt_seen["sse"] = ev
                sse.close()
                return

    def watch_ws():
        while ws.recv(timeout=90) is not None:
            pass
        rt_seen["ws"] = ws.close_code
        ws.close()

    watchers = [threading.Thread(target=watch_sse, daemon=True), threading.Thread(target=watch_ws, daemon=True)]
    for t in watchers:
        t.start()
    load = Load(srv.port, admin.token).start()
    wait_for(lambda: load.ok > 200, 60, "load to run")
    # The test's own idle keep-alive connection would keep the old process until its
    # idle time-out (it waits for every connection: see docs/upgrade.md).
    admin.s.close()
    t_signal = time.monotonic()
    out = subprocess.run([BIN, "upgrade", f"--pid-file={pid_file}"], capture_output=True, text=True, timeout=90)
    t_ready = time.monotonic()
    assert out.returncode == 0, out.stdout + out.stderr
    new_pid = read_pid(pid_file)
    pids.append(new_pid)
    assert new_pid != old_pid and alive(new_pid)
    # The old one drains and exits cleanly.
    assert srv.proc.wait(timeout=60) == 0
    t_exit = time.monotonic()
    served_before = load.ok
    wait_for(lambda: load.ok > served_before + 300, 60, "load on the new process")
    # A second upgrade, by signal, from the new process to the same copy.
    os.kill(new_pid, signal.SIGUSR2)
    wait_for(lambda: read_pid(pid_file) not in (None, new_pid), 60, "the second upgrade")
    third = read_pid(pid_file)
    pids.append(third)
    wait_for(lambda: not alive(new_pid), 60, "the second process to exit")
    served_before = load.ok
    wait_for(lambda: load.ok > served_before + 300, 60, "load on the third process")
    load.finish()
    # Measured, not asserted (docs/upgrade.md quotes a run).
    during = sorted(d for t, d in load.latencies if t_signal <= t <= t_exit)
    rest = sorted(d for t, d in load.latencies if not t_signal <= t <= t_exit)
    pct = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else 0
    print(f"\nupgrade: ready after {(t_ready - t_signal) * 1000:.0f} ms, old process gone after "
          f"{(t_exit - t_signal) * 1000:.0f} ms; {load.ok} requests, {len(load.failures)} failed; "
          f"during the hand-over {len(during)} requests p50 {pct(during, .5):.1f} ms p99 {pct(during, .99):.1f} ms "
          f"max {pct(during, 1):.1f} ms; otherwise p50 {pct(rest, .5):.1f} ms p99 {pct(rest, .99):.1f} ms")
    assert load.failures == [], f"{len(load.failures)} failed of {load.ok + len(load.failures)}: {load.failures[:10]}"
    assert load.resets == 0

    # Realtime: the SSE client was told to reconnect (with the retry delay), the
    # WebSocket closed with 1012 (restart); both resume on the new process.
    for t in watchers:
        t.join(timeout=30)
    assert rt_seen.get("sse", {}).get("retry") == "2000", rt_seen
    assert rt_seen.get("ws") == 1012, rt_seen
    sse2 = SSE(srv.url)
    r = admin.post("/api/realtime", json={"clientId": sse2.client_id, "subscriptions": ["items/*"]}, token="")
    assert r.status_code == 204, r.text
    assert admin.post("/api/collections/items/records", json={"title": "after"}).status_code == 200
    ev = None
    for _ in range(20):
        ev = sse2.next(timeout=5)
        if ev is None or ev.get("event") == "items/*":
            break
    assert ev is not None and ev.get("event") == "items/*", ev
    assert json.loads(ev["data"])["record"]["title"] == "after"
    sse2.close()
    ws2 = WS(srv.url)
    assert ws2.request({"type": "subscribe", "topics": ["quiet/*"]})["type"] == "subscribed"
    assert admin.post("/api/collections/quiet/records", json={"title": "q"}).status_code == 200
    got = ws2.collect()
    assert [e["data"]["record"]["title"] for e in got] == ["q"], got
    ws2.close()
    # Every acknowledged write is there.
    r = admin.get("/api/collections/items/records", params={"perPage": 1})
    assert r.status_code == 200
    log = open(os.path.join(srv.dir, "server.log"), errors="replace").read()
    assert "took over the listening sockets" in log


def test_failed_upgrade_keeps_serving(upgradable):
    """A new binary that cannot start: the old process keeps its sockets and serves."""
    srv, pid_file, pids = upgradable
    setup_items(srv.url)
    bad = os.path.join(srv.dir, "basalt-new")
    with open(bad, "w") as f:
        f.write("#!/bin/sh\nexit 3\n")
    os.chmod(bad, 0o755)
    out = subprocess.run([BIN, "upgrade", f"--pid-file={pid_file}", "--timeout-ms=5000"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1 and "keeps serving" in out.stderr, out.stdout + out.stderr
    assert read_pid(pid_file) == srv.proc.pid and srv.proc.poll() is None
    c = Client(srv.url)
    assert c.get("/api/collections/items/records").status_code == 200
    log = open(os.path.join(srv.dir, "server.log"), errors="replace").read()
    assert "did not become ready" in log
