#!/usr/bin/env python3
"""Seeds a running Basalt with the benchmark schema and data, the same as the peers'
(bench/peers/schema.sql): an auth collection `users` with one user, and `bench` with N
records owned by that user (list public; view and create only by the owner).
Usage: seed.py URL SUPERUSER_TOKEN N
Prints {"id": a record id, "user": the user's id, "token": the user's token}."""
import concurrent.futures
import json
import sys

import requests

url, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 100000
h = {"Authorization": token}


def ok(r):
    assert r.status_code in (200, 204), f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r.json() if r.status_code == 200 else None


# A fresh data folder has PocketBase's default users (older ones may not).
r = requests.get(url + "/api/collections/users", headers=h)
users = ok(r) if r.status_code == 200 else ok(requests.post(url + "/api/collections", headers=h,
                                                            json={"name": "users", "type": "auth"}))
user = ok(requests.post(url + "/api/collections/users/records", headers=h, json={
    "email": "user@example.com", "password": "bench-password-1", "passwordConfirm": "bench-password-1"}))
ok(requests.post(url + "/api/collections", headers=h, json={
    "name": "bench", "listRule": "", "viewRule": "owner = @request.auth.id",
    "createRule": "@request.auth.id != '' && owner = @request.auth.id",
    "fields": [{"name": "title", "type": "text"},
               {"name": "status", "type": "select", "values": ["todo", "doing", "done"]},
               {"name": "priority", "type": "number"},
               {"name": "owner", "type": "relation", "collectionId": users["id"], "maxSelect": 1},
               {"name": "created", "type": "autodate", "onCreate": True},
               {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True}],
    "indexes": ["CREATE INDEX idx_bench_sp ON bench (status, priority)"]}))
user_token = ok(requests.post(url + "/api/collections/users/auth-with-password",
                              json={"identity": "user@example.com", "password": "bench-password-1"}))["token"]


def work(start):
    """Creates records start..start+999 through /api/batch, 100 per transaction."""
    s = requests.Session()
    first = None
    for b in range(start, min(start + 1000, n), 100):
        reqs = [{"method": "POST", "url": "/api/collections/bench/records", "body": {
            "title": f"task {i}", "status": ["todo", "doing", "done"][i % 3], "priority": i % 10,
            "owner": user["id"]}} for i in range(b, min(b + 100, n))]
        out = ok(s.post(url + "/api/batch", headers=h, json={"requests": reqs}))
        first = first or out[0]["body"]["id"]
    return first


with concurrent.futures.ThreadPoolExecutor(4) as ex:
    firsts = list(ex.map(work, range(0, n, 1000)))
print(json.dumps({"id": firsts[0], "user": user["id"], "token": user_token}))
