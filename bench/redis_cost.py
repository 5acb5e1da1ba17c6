#!/usr/bin/env python3
"""The added cost of Redis per request (docs/redis.md): one Basalt instance with and
without --redis, alternating, under wrk on a cached record view that passes the rate
limiter (anonymous limit set out of reach, so every request is one decision: local,
or one EVALSHA round trip to Redis). Prints requests/s, latency percentiles and the
difference in microseconds per request.

Usage: bench/redis_cost.py [SECONDS] [ROUNDS]   (BASALT_BIN, default build/basalt)
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BASALT_BIN", os.path.join(ROOT, "build", "basalt"))
SECS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
CONNS = int(os.environ.get("CONNS", "32"))
LIMITS = ["--rate-limit-anon=1000000", "--rate-limit-user=0", "--rate-limit-burst=0", "--rate-limit-auth=0"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url):
    for _ in range(200):
        try:
            if requests.get(url + "/api/health", timeout=0.5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError("basalt did not start")


def start_basalt(d, extra):
    port = free_port()
    log = open(os.path.join(d, "server.log"), "ab")
    p = subprocess.Popen([BIN, "serve", f"--http=127.0.0.1:{port}", f"--dir={d}", "--threads=2", "--log-level=error",
                          *LIMITS, *extra], stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    wait_http(url)
    return p, url


def wrk(url):
    out = subprocess.run(["wrk", "-t2", f"-c{CONNS}", f"-d{SECS}s", "--latency", url], capture_output=True, text=True,
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"\s+(50|90|99)%\s+([\d.]+\w+)", out))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, lat, int(errors.group(1)) if errors else 0


def main():
    tmp = tempfile.mkdtemp(prefix="basalt-redis-bench-")
    rport = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
    try:
        d = os.path.join(tmp, "data")
        os.mkdir(d)
        subprocess.run([BIN, "superuser", "upsert", "bench@example.com", "bench-password-1", f"--dir={d}"],
                       check=True, capture_output=True)
        p, url = start_basalt(d, [])
        tok = requests.post(url + "/api/collections/_superusers/auth-with-password",
                            json={"identity": "bench@example.com", "password": "bench-password-1"}).json()["token"]
        h = {"Authorization": tok}
        requests.post(url + "/api/collections", headers=h,
                      json={"name": "hot", "viewRule": "", "fields": [{"name": "t", "type": "text"}]}).raise_for_status()
        rec = requests.post(url + "/api/collections/hot/records", headers=h, json={"t": "hello"}).json()
        p.send_signal(signal.SIGTERM)
        p.wait()
        path = f"/api/collections/hot/records/{rec['id']}"
        results = {"local": [], "redis": []}
        for _ in range(ROUNDS):
            for mode in ("local", "redis"):
                extra = [f"--redis=redis://127.0.0.1:{rport}"] if mode == "redis" else []
                p, url = start_basalt(d, extra)
                time.sleep(0.5)
                if mode == "redis":
                    m = requests.get(url + "/metrics").text
                    assert "basalt_redis_up 1" in m, "not connected to Redis"
                rps, lat, bad = wrk(url + path)
                note = ""
                if mode == "redis":
                    m = requests.get(url + "/metrics").text
                    local = int(re.search(r"basalt_ratelimit_local_decisions_total (\d+)", m).group(1))
                    tmo = int(re.search(r"basalt_redis_timeouts_total (\d+)", m).group(1))
                    note = f"  local decisions {local} ({100.0 * local / max(1, rps * SECS):.2f}%), timeouts {tmo}"
                    st = subprocess.run(["redis-cli", "-p", str(rport), "INFO", "commandstats"], capture_output=True,
                                        text=True).stdout
                    ev = re.search(r"cmdstat_evalsha:calls=(\d+),usec=\d+,usec_per_call=([\d.]+)", st)
                    if ev:
                        note += f", Redis CPU {ev.group(2)} us per EVALSHA"
                    subprocess.run(["redis-cli", "-p", str(rport), "CONFIG", "RESETSTAT"], capture_output=True)
                p.send_signal(signal.SIGTERM)
                p.wait()
                results[mode].append(rps)
                print(f"{mode:5s} {rps:10.0f} req/s  p50 {lat.get('50')}  p90 {lat.get('90')}  p99 {lat.get('99')}"
                      f"  non-2xx {bad}{note}")
        best = {k: max(v) for k, v in results.items()}
        us = {k: 1e6 / v for k, v in best.items()}
        print(f"best of {ROUNDS}: local {best['local']:.0f} req/s ({us['local']:.1f} us/req of the server's "
              f"2 threads), redis {best['redis']:.0f} req/s ({us['redis']:.1f} us/req): "
              f"+{us['redis'] - us['local']:.1f} us per request with --redis")
    finally:
        redis.send_signal(signal.SIGTERM)
        redis.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
