#!/usr/bin/env python3
"""Seeds a running basalt with the benchmark schema: `bench` (100,000 records by
default) with an owner rule-free list/view, and prints ids for the scenarios."""
import concurrent.futures
import json
import sys

import requests

url, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 100000
h = {"Authorization": token}
r = requests.post(url + "/api/collections", headers=h, json={
    "name": "bench", "listRule": "", "viewRule": "", "createRule": "",
    "fields": [{"name": "title", "type": "text"}, {"name": "status", "type": "select", "values": ["todo", "doing", "done"]},
               {"name": "priority", "type": "number"}, {"name": "created", "type": "autodate", "onCreate": True}],
    "indexes": ["CREATE INDEX idx_bench_sp ON bench (status, priority)"]})
assert r.status_code == 200, r.text


def work(start):
    s = requests.Session()
    out = None
    for i in range(start, min(start + 1000, n)):
        r = s.post(url + "/api/collections/bench/records",
                   json={"title": f"task {i}", "status": ["todo", "doing", "done"][i % 3], "priority": i % 10})
        assert r.status_code == 200, r.text
        out = r.json()["id"]
    return out


with concurrent.futures.ThreadPoolExecutor(16) as ex:
    last = list(ex.map(work, range(0, n, 1000)))
print(json.dumps({"id": last[0]}))
