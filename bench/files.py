#!/usr/bin/env python3
"""File downloads and thumbnails: Basalt against nginx serving the same files from
disk (`make bench-files`, or bench/files.py [--secs N] [--reps N]).

Both servers on core 0 (Basalt --threads=1 with its file pool on the same core;
nginx one worker with sendfile), wrk on core 1, 32 connections, keep-alive. nginx's
root is Basalt's storage folder, so both serve the very same files: the original
images of three sizes and a cached 100x100 thumbnail. Then the first-request
thumbnail generation rate (no nginx equivalent). Medians of the repetitions,
alternating the two servers; writes bench/results/<date>-files/report.md.
"""
import argparse
import datetime
import os
import statistics
import struct
import subprocess
import sys
import threading
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Lab, free_port, log, wait_http, wrk  # noqa: E402

import requests  # noqa: E402


def png(w, h, seed=0):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    rows = b"".join(b"\0" + bytes(v for x in range(w)
                                   for v in ((x * 7 + y * 3 + seed) & 255, (x + seed) & 255, (y * 5) & 255))
                    for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b""))


def sized_blob(n):
    """A PNG header then filler: the size is what counts for downloads."""
    head = png(8, 8)
    return head + os.urandom(max(0, n - len(head)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--conns", type=int, default=32)
    args = ap.parse_args()
    build = os.environ.get("BENCH_BUILD", os.path.join(harness.ROOT, "build"))
    lab = Lab()
    results = {}
    try:
        # Basalt
        data = os.path.join(lab.dir, "basalt")
        os.makedirs(data)
        subprocess.run([f"{build}/basalt", "superuser", "upsert", "b@example.com", "bench-password-1",
                        f"--dir={data}"], check=True, capture_output=True)
        bport = free_port()
        lab.start("basalt", [f"{build}/basalt", "serve", f"--http=127.0.0.1:{bport}", f"--dir={data}",
                             "--threads=1", "--log-level=warn", "--gzip-level=0", *harness.NOLIMITS])
        wait_http(bport, "/api/health")
        url = f"http://127.0.0.1:{bport}"
        tok = requests.post(url + "/api/collections/_superusers/auth-with-password",
                            json={"identity": "b@example.com", "password": "bench-password-1"}).json()["token"]
        H = {"Authorization": tok}
        r = requests.post(url + "/api/collections", headers=H, json={
            "name": "media", "viewRule": "", "createRule": "",
            "fields": [{"name": "f", "type": "file", "maxSelect": 1, "maxSize": 8 << 20, "thumbs": ["100x100"]}]})
        r.raise_for_status()
        cid = r.json()["id"]
        files = {}
        for label, blob in (("4KiB", sized_blob(4096)), ("64KiB", sized_blob(65536)),
                            ("1MiB", sized_blob(1 << 20)), ("image", png(800, 600))):
            rec = requests.post(url + "/api/collections/media/records", headers=H,
                                files={"f": (f"{label}.png", blob, "image/png")}).json()
            files[label] = rec
        img = files["image"]
        assert requests.get(f"{url}/api/files/media/{img['id']}/{img['f']}?thumb=100x100").status_code == 200
        storage = os.path.join(data, "storage", cid)
        # nginx over the same folder
        nport = free_port()
        prefix = os.path.join(lab.dir, "nginx")
        os.makedirs(os.path.join(prefix, "logs"))
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  types {{ image/png png; }}
  server {{
    listen 127.0.0.1:{nport};
    root {storage};
    location / {{ expires 30d; }}
  }}
}}
""")
        os.chmod(data, 0o755)
        for d, _, _ in os.walk(os.path.join(data, "storage")):
            os.chmod(d, 0o755)
        for d, _, fs in os.walk(os.path.join(data, "storage")):
            for x in fs:
                os.chmod(os.path.join(d, x), 0o644)
        lab.start("nginx", ["nginx", "-p", prefix, "-c", conf])
        wait_http(nport)
        scenarios = []
        for label in ("4KiB", "64KiB", "1MiB"):
            rec = files[label]
            scenarios.append((f"download {label}", f"{url}/api/files/media/{rec['id']}/{rec['f']}",
                              f"http://127.0.0.1:{nport}/{rec['id']}/{rec['f']}"))
        scenarios.append(("thumbnail 100x100 (cached)", f"{url}/api/files/media/{img['id']}/{img['f']}?thumb=100x100",
                          f"http://127.0.0.1:{nport}/{img['id']}/thumbs_{img['f']}/100x100_{img['f']}"))
        for name, burl, nurl in scenarios:
            assert requests.get(burl).content == requests.get(nurl).content, name
            runs = {"basalt": [], "nginx": []}
            for rep in range(args.reps):
                for sysname, u in (("basalt", burl), ("nginx", nurl)) if rep % 2 == 0 else (("nginx", nurl), ("basalt", burl)):
                    res, _ = wrk(u, args.conns, args.secs)
                    runs[sysname].append(res)
            b = statistics.median(x["rps"] for x in runs["basalt"])
            n = statistics.median(x["rps"] for x in runs["nginx"])
            bp99 = statistics.median(x["p99"] for x in runs["basalt"])
            np99 = statistics.median(x["p99"] for x in runs["nginx"])
            errs = sum(x["errors"] for x in runs["basalt"] + runs["nginx"])
            results[name] = (b, n, bp99, np99, errs)
            log(f"{name}: basalt {b:,.0f} req/s (p99 {bp99:.2f} ms), nginx {n:,.0f} req/s (p99 {np99:.2f} ms), "
                f"ratio {b / n:.2f}, errors {errs}")
        # First-request thumbnails: distinct 800x600 images, 4 clients.
        recs = []
        for i in range(24):
            recs.append(requests.post(url + "/api/collections/media/records", headers=H,
                                      files={"f": (f"gen{i}.png", png(800, 600, i), "image/png")}).json())
        lock = threading.Lock()
        todo = list(recs)

        def client():
            s = requests.Session()
            while True:
                with lock:
                    if not todo:
                        return
                    rec = todo.pop()
                r = s.get(f"{url}/api/files/media/{rec['id']}/{rec['f']}?thumb=100x100")
                assert r.status_code == 200 and "x-basalt-thumb-error" not in r.headers
        t0 = time.time()
        ts = [threading.Thread(target=client) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        gen = len(recs) / (time.time() - t0)
        log(f"thumbnail generation (800x600 PNG -> 100x100, first request): {gen:.1f} thumbnails/s")
        out = os.path.join(harness.ROOT, "bench", "results", datetime.datetime.now().strftime("%Y-%m-%d-%H%M") + "-files")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "report.md"), "w") as f:
            f.write("# File downloads and thumbnails: Basalt vs nginx (same files, same disk)\n\n")
            f.write(f"Both servers on one core (Basalt `--threads=1` and its file pool; nginx one worker, "
                    f"sendfile), wrk on the other, {args.conns} connections, {args.secs} s x {args.reps} "
                    f"repetitions, medians.\n\n")
            f.write("| scenario | Basalt req/s | nginx req/s | Basalt / nginx | Basalt p99 ms | nginx p99 ms | errors |\n")
            f.write("|---|---:|---:|---:|---:|---:|---:|\n")
            for name, (b, n, bp, np_, e) in results.items():
                f.write(f"| {name} | {b:,.0f} | {n:,.0f} | {b / n:.2f} | {bp:.2f} | {np_:.2f} | {e} |\n")
            f.write(f"\nFirst-request thumbnails (800x600 PNG to 100x100, 4 clients): {gen:.1f} per second.\n")
        log(f"report: {out}/report.md")
    finally:
        lab.stop()


if __name__ == "__main__":
    main()
