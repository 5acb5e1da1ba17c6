#!/usr/bin/env bash
# The cost of access rules and of logins (issue: access rules). One server thread
# on core 0, wrk on core 1: the same 30-record list under an owner rule and under
# "", and logins per second with their p99 at the default Argon2id cost.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-8}
BIN=./build/basalt
DIR=$(mktemp -d)
PORT=18190
cleanup() { kill "$SRV" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
$BIN superuser upsert bench@example.com bench-password-1 --dir="$DIR" >/dev/null
taskset -c 0 $BIN serve --http=127.0.0.1:$PORT --dir="$DIR" --threads=1 --log-level=warn --rate-limit-anon=0 --rate-limit-user=0 --rate-limit-burst=0 --rate-limit-auth=0 >/dev/null 2>&1 &
SRV=$!
sleep 0.5
/usr/bin/python3 - "$PORT" > "$DIR/ids" <<'PY'
import sys, requests, concurrent.futures
url = f"http://127.0.0.1:{sys.argv[1]}"
tok = requests.post(url + "/api/collections/_superusers/auth-with-password",
                    json={"identity": "bench@example.com", "password": "bench-password-1"}).json()["token"]
h = {"Authorization": tok}
u = requests.post(url + "/api/collections", headers=h, json={"name": "users", "type": "auth", "createRule": ""}).json()
for name, rule in [("owned", "owner = @request.auth.id"), ("open", "")]:
    r = requests.post(url + "/api/collections", headers=h, json={
        "name": name, "listRule": rule, "viewRule": rule,
        "fields": [{"name": "title", "type": "text"}, {"name": "owner", "type": "relation", "collectionId": u["id"]}],
        "indexes": [f"CREATE INDEX idx_{name}_owner ON {name} (owner)"]})
    assert r.status_code == 200, r.text
ids = []
for i in range(20):
    r = requests.post(url + "/api/collections/users/records", json={
        "email": f"u{i}@example.com", "password": "password-123", "passwordConfirm": "password-123"})
    ids.append(r.json()["id"])
def fill(i):
    s = requests.Session()
    for k in range(500):
        for name in ("owned", "open"):
            s.post(url + f"/api/collections/{name}/records", headers=h, json={"title": f"t{k}", "owner": ids[i]})
with concurrent.futures.ThreadPoolExecutor(8) as ex:
    list(ex.map(fill, range(20)))
print(requests.post(url + "/api/collections/users/auth-with-password",
                    json={"identity": "u0@example.com", "password": "password-123"}).json()["token"])
PY
TOKEN=$(tail -1 "$DIR/ids")
run() {
  local out; out=$(taskset -c 1 wrk -t1 -c64 -d"${DUR}s" --latency -H "Authorization: $TOKEN" "$2" "${@:3}")
  printf '| %-46s | %10s | %8s |\n' "$1" "$(echo "$out" | awk '/Requests\/sec/ {print $2}')" "$(echo "$out" | awk '$1=="99%" {print $2}')"
}
cat > "$DIR/login.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"identity":"u1@example.com","password":"password-123"}'
LUA
echo "| scenario (10,000 records, 500 the caller's) | requests/s | p99 |"
echo "|---|---|---|"
run "list 30, rule \"\" (sees all)" "http://127.0.0.1:$PORT/api/collections/open/records?perPage=30&skipTotal=1"
run "list 30, owner rule" "http://127.0.0.1:$PORT/api/collections/owned/records?perPage=30&skipTotal=1"
run "list 30 with total, rule \"\"" "http://127.0.0.1:$PORT/api/collections/open/records?perPage=30"
run "list 30 with total, owner rule" "http://127.0.0.1:$PORT/api/collections/owned/records?perPage=30"
run "login (Argon2id m=19 MiB t=2, 2 hash threads)" "http://127.0.0.1:$PORT/api/collections/users/auth-with-password" -s "$DIR/login.lua"
