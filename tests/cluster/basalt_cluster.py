#!/usr/bin/python3
"""A stand-in for the basalt binary that makes `serve` a local cluster: for
`basalt serve --http=127.0.0.1:PORT --dir=DIR ARGS...` it starts a Redis, two real
Basalt instances (A in DIR, B in DIR/instance-b, both with ARGS, one database, one
storage folder) and HAProxy on PORT sending requests to them round-robin, with the
same configuration as the integration suite's cluster topology
(tests/integration/conftest.py); SIGTERM stops them all and the exit status is the
instances'. Every other command runs the real binary (BASALT_REAL_BIN). So a client
that starts "a server" itself (tests/js/sdk_scenario.mjs) runs against the cluster
unchanged: `make js-cluster`."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from conftest import _TEST_HAPROXY_CFG, free_port  # noqa: E402  (the suite's own topology)

REAL = os.environ.get("BASALT_REAL_BIN", os.path.join(HERE, "..", "..", "build", "basalt"))


def ready(url, procs, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"a cluster process exited with {p.returncode}")
        try:
            with urllib.request.urlopen(url + "/api/health?ready=1", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not become ready")


def main(argv):
    if len(argv) < 2 or argv[1] != "serve":
        os.execv(REAL, [REAL] + argv[1:])
    http = next((a for a in argv[2:] if a.startswith("--http=")), None)
    d = next((a.split("=", 1)[1] for a in argv[2:] if a.startswith("--dir=")), None)
    if http is None or d is None:
        sys.exit("basalt-cluster.py: serve needs --http=127.0.0.1:PORT and --dir=DIR")
    port = int(http.rsplit(":", 1)[1])
    rest = [a for a in argv[2:] if not a.startswith(("--http=", "--dir="))]
    procs, helpers = [], []
    stopping = []

    def on_term(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    rc = 1
    try:
        rport = free_port()
        rlog = open(os.path.join(d, "redis.log"), "ab")
        helpers.append(subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(rport), "--save", "",
                                         "--appendonly", "no", "--dir", d], stdout=rlog, stderr=rlog))
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", rport), timeout=0.5).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
        ports = [free_port(), free_port()]
        dirs = [d, os.path.join(d, "instance-b")]
        os.makedirs(dirs[1], exist_ok=True)
        for i, (p, idir) in enumerate(zip(ports, dirs)):
            log = open(os.path.join(d, "server.log" if i == 0 else "server-b.log"), "ab")
            procs.append(subprocess.Popen(
                [REAL, "serve", f"--http=127.0.0.1:{p}", f"--dir={idir}", f"--redis=redis://127.0.0.1:{rport}",
                 "--trusted-proxies=127.0.0.3", f"--storage-dir={os.path.join(d, 'storage')}", *rest],
                stdout=log, stderr=log))
            ready(f"http://127.0.0.1:{p}", procs)
        cfg = os.path.join(d, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(_TEST_HAPROXY_CFG.format(port=port, a=ports[0], b=ports[1]))
        hlog = open(os.path.join(d, "haproxy.log"), "ab")
        helpers.append(subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=hlog, stderr=hlog))
        while not stopping:
            if any(p.poll() is not None for p in procs + helpers):
                raise RuntimeError("a cluster process exited on its own; see " + d)
            time.sleep(0.1)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        rcs = [p.wait(timeout=30) for p in procs]
        rc = next((r for r in rcs if r != 0), 0)
    except Exception as e:  # the caller sees the reason and a failing status
        print(f"basalt-cluster.py: {e}", file=sys.stderr)
    finally:
        for p in procs + helpers:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    sys.exit(rc)


if __name__ == "__main__":
    main(sys.argv)
