"""Statistics: GET /api/basalt/collections/{c}/stats, grouped aggregates under the
collection's list rule (plan 004: per-status task counts of the signed-in user), on
both backends."""
import pytest

from conftest import Client, assert_error, define_collection

USERS = {"name": "users", "type": "auth", "listRule": "id = @request.auth.id", "viewRule": "id = @request.auth.id",
         "createRule": "", "fields": [{"name": "email", "type": "email"}, {"name": "name", "type": "text"}]}


def tasks_collection(users_id):
    return {"name": "tasks", "listRule": "owner = @request.auth.id", "viewRule": "owner = @request.auth.id",
            "createRule": "", "updateRule": "", "deleteRule": "",
            "fields": [{"name": "title", "type": "text"},
                       {"name": "status", "type": "select", "maxSelect": 1, "values": ["todo", "doing", "done"]},
                       {"name": "points", "type": "number"}, {"name": "done", "type": "bool"},
                       {"name": "due", "type": "date"},
                       {"name": "secret", "type": "text", "hidden": True},
                       {"name": "tags", "type": "select", "maxSelect": 3, "values": ["a", "b", "c"]},
                       {"name": "owner", "type": "relation", "collectionId": users_id, "maxSelect": 1}]}


@pytest.fixture(scope="module")
def world(shared_server, shared_admin):
    a = shared_admin
    r = define_collection(a, USERS)
    assert r.status_code == 200, r.text
    uid = r.json()["id"]
    r = a.post("/api/collections", json=tasks_collection(uid))
    assert r.status_code == 200, r.text
    people = {}
    for name in ("ann", "bob"):
        r = a.post("/api/collections/users/records", json={"email": f"{name}@x.io", "password": "secret123",
                                                           "passwordConfirm": "secret123", "name": name})
        assert r.status_code == 200, r.text
        c = Client(shared_server.url)
        c.token = c.login("users", f"{name}@x.io", "secret123")
        people[name] = (r.json()["id"], c)
    ann, bob = people["ann"][0], people["bob"][0]
    rows = [(ann, "todo", 1, "2026-01-05 10:00:00.000Z"), (ann, "todo", 2, "2026-01-20 10:00:00.000Z"),
            (ann, "done", 5, "2026-02-02 10:00:00.000Z"), (ann, "doing", 3, ""),
            (bob, "done", 8, "2026-01-07 10:00:00.000Z"), (bob, "done", 13, "2026-03-01 00:00:00.000Z")]
    for owner, status, pts, due in rows:
        r = a.post("/api/collections/tasks/records", json={"title": f"{status}{pts}", "status": status,
                                                           "points": pts, "done": status == "done", "due": due,
                                                           "owner": owner, "secret": f"s{pts}"})
        assert r.status_code == 200, r.text
    return people


URL = "/api/basalt/collections/tasks/stats"


def by_group(body, key):
    return {item["group"][key]: item for item in body["items"]}


def test_each_user_counts_only_what_they_may_list(world):
    ann, bob = world["ann"][1], world["bob"][1]
    a = ann.get(URL, params={"groupBy": "status"})
    assert a.status_code == 200, a.text
    assert {k: v["count"] for k, v in by_group(a.json(), "status").items()} == {"todo": 2, "done": 1, "doing": 1}
    b = bob.get(URL, params={"groupBy": "status"}).json()
    assert {k: v["count"] for k, v in by_group(b, "status").items()} == {"done": 2}
    assert b["totalGroups"] == 1 and b["groupBy"] == ["status"]


def test_superuser_sees_everything_and_aggregates(world, shared_admin):
    r = shared_admin.get(URL, params={"groupBy": "status",
                                      "aggregates": "count,sum(points),avg(points),min(points),max(due)"})
    assert r.status_code == 200, r.text
    g = by_group(r.json(), "status")
    assert g["done"]["count"] == 3 and g["done"]["sum"]["points"] == 26
    assert g["todo"]["avg"]["points"] == 1.5 and g["todo"]["min"]["points"] == 1
    assert g["done"]["max"]["due"] == "2026-03-01 00:00:00.000Z"
    assert g["doing"]["max"]["due"] is None  # an empty date is no maximum
    # No groupBy: one row for the whole (filtered) collection.
    r = shared_admin.get(URL, params={"aggregates": "count,sum(points)", "filter": "status != 'done'"})
    body = r.json()
    assert body["items"] == [{"group": {}, "count": 3, "sum": {"points": 6}}] and body["totalGroups"] == 1


def test_date_buckets_and_bool_groups(world, shared_admin):
    r = shared_admin.get(URL, params={"groupBy": "due:month", "aggregates": "count"})
    assert r.status_code == 200, r.text
    months = {i["group"]["due:month"]: i["count"] for i in r.json()["items"]}
    assert months == {None: 1, "2026-01": 3, "2026-02": 1, "2026-03": 1}
    r = shared_admin.get(URL, params={"groupBy": "due:week"})
    weeks = {i["group"]["due:week"]: i["count"] for i in r.json()["items"]}
    # 2026-01-05 and 2026-01-07 share the week that starts on Monday 2026-01-05.
    assert weeks["2026-01-05"] == 2 and weeks["2026-01-19"] == 1 and weeks["2026-02-02"] == 1
    assert weeks["2026-02-23"] == 1 and weeks[None] == 1
    r = shared_admin.get(URL, params={"groupBy": "done,status", "sort": "-count"})
    items = r.json()["items"]
    assert items[0] == {"group": {"done": True, "status": "done"}, "count": 3}
    assert {(i["group"]["done"], i["group"]["status"]) for i in items} == {(True, "done"), (False, "todo"),
                                                                           (False, "doing")}
    for year in ("due:year", "due:day", "due:hour"):
        assert shared_admin.get(URL, params={"groupBy": year}).status_code == 200


def test_filter_and_sort(world):
    ann = world["ann"][1]
    r = ann.get(URL, params={"groupBy": "status", "aggregates": "count,sum(points)", "filter": "points >= 2",
                             "sort": "-sum(points)"})
    assert r.status_code == 200, r.text
    assert [(i["group"]["status"], i["sum"]["points"]) for i in r.json()["items"]] == [("done", 5), ("doing", 3),
                                                                                     ("todo", 2)]


def test_hidden_fields_and_rules_hold(world, shared_admin):
    ann = world["ann"][1]
    # A hidden field is a superuser's only, as in a filter.
    assert_error(ann.get(URL, params={"groupBy": "secret"}), 400)
    assert shared_admin.get(URL, params={"groupBy": "secret"}).status_code == 200
    # A filter cannot widen the list rule.
    r = ann.get(URL, params={"filter": "owner != ''"})
    assert r.json()["items"][0]["count"] == 4
    # Anonymous: the rule admits nobody's records.
    anon = Client(ann.url)
    r = anon.get(URL)
    assert r.status_code == 200 and r.json()["items"][0]["count"] == 0
    # A collection whose list rule is locked: superusers only.
    r = shared_admin.post("/api/collections", json={"name": "locked", "fields": [{"name": "n", "type": "number"}]})
    assert r.status_code == 200, r.text
    assert_error(ann.get("/api/basalt/collections/locked/stats"), 403)
    assert shared_admin.get("/api/basalt/collections/locked/stats").status_code == 200
    assert_error(ann.get("/api/basalt/collections/nope/stats"), 404)


def test_bad_requests_are_clear(world, shared_admin):
    a = shared_admin
    cases = [({"groupBy": "nope"}, "no field"), ({"groupBy": "tags"}, "multi-valued"),
             ({"groupBy": "status:month"}, "date fields"), ({"groupBy": "due:fortnight"}, "bucket"),
             ({"groupBy": "a,b,c,d,e"}, None), ({"aggregates": "sum(title)"}, "number"),
             ({"aggregates": "max(title)"}, "number or date"), ({"aggregates": "median(points)"}, "count, sum"),
             ({"aggregates": "sum(points"}, None), ({"groupBy": "owner.name"}, "one field"),
             ({"groupBy": "status", "sort": "points"}, "sort"), ({"maxGroups": "0"}, "maxGroups"),
             ({"maxGroups": "100001"}, "maxGroups"), ({"filter": "points >"}, None),
             ({"groupBy": "status", "maxGroups": "2"}, "more than 2 groups")]
    for params, words in cases:
        r = a.get(URL, params=params)
        body = assert_error(r, 400)
        if words:
            assert words in body["message"], (params, body["message"])
