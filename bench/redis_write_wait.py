#!/usr/bin/python3
"""The cost of ADR 0015 on a write: the same instance with and without --redis,
N sequential PATCHes of one record from one client, then the instance's own count of
how long its writers waited for their invalidation's PUBLISH to be answered
(basalt_redis_write_wait_seconds_total) and Redis's count of commands per write
(INFO commandstats). Not a test. Usage: bench/redis_write_wait.py [N]"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
import requests  # noqa: E402

from conftest import (ADMIN_EMAIL, ADMIN_PASSWORD, Client, RedisServer, Server, make_superuser,  # noqa: E402
                      metric)


def run(n, redis):
    d = tempfile.mkdtemp(prefix="basalt-ww-")
    try:
        make_superuser(d)
        extra = [f"--redis={redis.url}", "--redis-timeout-ms=1000"] if redis else []
        srv = Server(d, extra, topology="single").start()
        try:
            a = Client(srv.url)
            a.token = a.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
            a.post("/api/collections", json={"name": "w", "viewRule": "", "updateRule": "",
                                             "fields": [{"name": "n", "type": "number"}]})
            rid = a.post("/api/collections/w/records", json={"n": 0}).json()["id"]
            if redis:
                deadline = time.time() + 10
                while metric(srv.url, "basalt_redis_up") != 1 and time.time() < deadline:
                    time.sleep(0.05)
                before = redis.cli("INFO", "commandstats")
            s = requests.Session()
            url = f"{srv.url}/api/collections/w/records/{rid}"
            lat = []
            w0 = metric(srv.url, "basalt_redis_write_wait_seconds_total") or 0
            for i in range(n):
                t = time.perf_counter()
                assert s.patch(url, json={"n": i}).status_code == 200
                lat.append((time.perf_counter() - t) * 1e6)
            out = {"p50_us": statistics.median(lat), "mean_us": statistics.mean(lat)}
            if redis:
                waited = (metric(srv.url, "basalt_redis_write_wait_seconds_total") or 0) - w0
                acked = metric(srv.url, 'basalt_redis_write_waits_total{result="acked"}')
                out["wait_us_per_write"] = waited * 1e6 / n
                out["acked_waits"] = acked

                def calls(text, cmd):
                    for line in text.splitlines():
                        if line.startswith(f"cmdstat_{cmd}:"):
                            return int(line.split("calls=")[1].split(",")[0])
                    return 0
                after = redis.cli("INFO", "commandstats")
                out["publish_per_write"] = (calls(after, "publish") - calls(before, "publish")) / n
            return out
        finally:
            srv.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    print("load:", open("/proc/loadavg").read().split()[:3])
    print("without redis:", run(n, None))
    rd = tempfile.mkdtemp(prefix="basalt-ww-redis-")
    redis = RedisServer(rd).start()
    try:
        print("with redis:   ", run(n, redis))
    finally:
        redis.stop()
        shutil.rmtree(rd, ignore_errors=True)
    print("load:", open("/proc/loadavg").read().split()[:3])


if __name__ == "__main__":
    main()
