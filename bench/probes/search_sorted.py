#!/usr/bin/env python3
"""search_sorted.py BIN DIR [N] [SEED]: starts BIN on the shop in DIR (bench/shop.py --keep), times N
distinct uncached searches sorted by price, one at a time, and stops it."""
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "shop"))
import generate  # noqa: E402
binp, d = sys.argv[1], sys.argv[2]; n = int(sys.argv[3]) if len(sys.argv) > 3 else 150
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
p = subprocess.Popen([binp, "serve", f"--http=127.0.0.1:{port}", f"--dir={d}", "--log-level=warn",
                      "--rate-limit-anon=0", "--rate-limit-user=0"], stdout=subprocess.DEVNULL)
try:
    for _ in range(100):
        try: urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health"); break
        except OSError: time.sleep(0.2)
    rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    ts = []
    for i in range(n):
        q = " ".join(rng.sample(generate.WORDS, rng.choice([1, 1, 2])))
        url = f"http://127.0.0.1:{port}/api/collections/products/records?search={urllib.parse.quote(q)}&sort=price&perPage=20&page={rng.randint(1,3)}"
        t = time.perf_counter(); b = json.load(urllib.request.urlopen(url)); ts.append((time.perf_counter() - t) * 1000)
    ts.sort()
    print(f"{os.path.basename(binp)}: {n} searches p50 {ts[n//2]:.1f} ms p90 {ts[int(n*.9)]:.1f} max {ts[-1]:.1f} mean {sum(ts)/n:.1f}")
finally:
    p.terminate(); p.wait()
