"""Statistics grouped by JSON paths (`groupBy=meta.kind`, `meta.a.b`, `meta.items.0`):
the group is the JSON value at the path (1, "1" and true are three groups; missing and
null are one), alike on both backends (make integration / integration-pg), always
under the list rule, and every malformed path a clear 400."""
import pytest

from conftest import Client, assert_error

PW = "password-123"
URL = "/api/basalt/collections/jsdocs/stats"


@pytest.fixture(scope="module")
def world(shared_server, shared_admin):
    a = shared_admin
    r = a.post("/api/collections", json={
        "name": "jsmembers", "type": "auth", "listRule": "id = @request.auth.id",
        "viewRule": "id = @request.auth.id", "fields": [{"name": "name", "type": "text"}]})
    assert r.status_code == 200, r.text
    members = r.json()
    r = a.post("/api/collections", json={
        "name": "jsdocs", "listRule": "owner = @request.auth.id", "viewRule": "owner = @request.auth.id",
        "fields": [{"name": "title", "type": "text"}, {"name": "meta", "type": "json"},
                   {"name": "hmeta", "type": "json", "hidden": True}, {"name": "points", "type": "number"},
                   {"name": "owner", "type": "relation", "collectionId": members["id"], "maxSelect": 1}]})
    assert r.status_code == 200, r.text
    people = {}
    for name in ("ann", "bob"):
        r = a.post("/api/collections/jsmembers/records", json={
            "email": f"{name}@js.example", "password": PW, "passwordConfirm": PW, "name": name})
        assert r.status_code == 200, r.text
        c = Client(shared_server.url)
        c.token = c.login("jsmembers", f"{name}@js.example", PW)
        people[name] = (r.json()["id"], c)
    ann, bob = people["ann"][0], people["bob"][0]
    docs = [
        (ann, {"kind": "book", "a": {"b": 1}, "items": ["x", "y"], "n": 1}, 1),
        (ann, {"kind": "book", "a": {"b": "1"}, "items": ["y"], "n": True}, 2),
        (ann, {"kind": "pen", "a": {"b": 1}, "items": [], "n": "1"}, 4),
        (ann, None, 8),
        (ann, {"kind": None, "tags": {"z": 1, "a": [1, 2]}}, 16),
        (bob, {"kind": "book"}, 32),
        (bob, {"kind": "mug", "a": {"b": 2}}, 64),
    ]
    for owner, meta, pts in docs:
        r = a.post("/api/collections/jsdocs/records", json={"title": f"d{pts}", "meta": meta, "points": pts,
                                                            "owner": owner, "hmeta": {"pin": pts}})
        assert r.status_code == 200, r.text
    return {k: v[1] for k, v in people.items()}


def groups(r, key):
    assert r.status_code == 200, r.text
    return [(i["group"][key], i["count"]) for i in r.json()["items"]]


def test_each_user_counts_only_what_they_may_list(world, shared_admin):
    # Missing (a null meta) and JSON null are one group, first.
    assert groups(world["ann"].get(URL, params={"groupBy": "meta.kind"}), "meta.kind") == [
        (None, 2), ("book", 2), ("pen", 1)]
    assert groups(world["bob"].get(URL, params={"groupBy": "meta.kind"}), "meta.kind") == [("book", 1), ("mug", 1)]
    assert groups(shared_admin.get(URL, params={"groupBy": "meta.kind"}), "meta.kind") == [
        (None, 2), ("book", 3), ("mug", 1), ("pen", 1)]
    # Anonymous: the rule admits nothing.
    assert Client(world["ann"].url).get(URL, params={"groupBy": "meta.kind"}).json()["items"] == []


def test_types_stay_apart_and_order_alike(world):
    ann = world["ann"]
    # 1, true and "1" are three groups: null first, numbers (a number before the
    # boolean that sorts as it), then strings; the values come back as JSON.
    got = ann.get(URL, params={"groupBy": "meta.n"}).json()["items"]
    assert [(type(i["group"]["meta.n"]).__name__, i["group"]["meta.n"], i["count"]) for i in got] == [
        ("NoneType", None, 2), ("int", 1, 1), ("bool", True, 1), ("str", "1", 1)]
    assert groups(ann.get(URL, params={"groupBy": "meta.a.b"}), "meta.a.b") == [(None, 2), (1, 2), ("1", 1)]
    assert groups(ann.get(URL, params={"groupBy": "meta.items.0"}), "meta.items.0") == [
        (None, 3), ("x", 1), ("y", 1)]
    # Arrays and objects are groups too, written as the JSON they are.
    items = dict((str(k), n) for k, n in groups(ann.get(URL, params={"groupBy": "meta.items"}), "meta.items"))
    assert items == {"None": 2, "['x', 'y']": 1, "['y']": 1, "[]": 1}
    tags = groups(ann.get(URL, params={"groupBy": "meta.tags"}), "meta.tags")
    assert tags == [(None, 4), ({"z": 1, "a": [1, 2]}, 1)]


def test_sort_aggregates_filter_and_other_terms(world):
    ann = world["ann"]
    r = ann.get(URL, params={"groupBy": "meta.kind", "sort": "-meta.kind"})
    assert groups(r, "meta.kind") == [("pen", 1), ("book", 2), (None, 2)]
    r = ann.get(URL, params={"groupBy": "meta.kind,meta.a.b", "aggregates": "count,sum(points)",
                             "sort": "-sum(points)"})
    assert r.status_code == 200, r.text
    assert [(i["group"], i["sum"]["points"]) for i in r.json()["items"]] == [
        ({"meta.kind": None, "meta.a.b": None}, 24), ({"meta.kind": "pen", "meta.a.b": 1}, 4),
        ({"meta.kind": "book", "meta.a.b": "1"}, 2), ({"meta.kind": "book", "meta.a.b": 1}, 1)]
    # The filter narrows, the rule still holds.
    r = ann.get(URL, params={"groupBy": "meta.kind", "filter": "meta.a.b = 1 || owner != ''"})
    assert groups(r, "meta.kind") == [(None, 2), ("book", 2), ("pen", 1)]
    r = ann.get(URL, params={"groupBy": "meta.kind", "filter": "meta.a.b = 1"})
    assert groups(r, "meta.kind") == [("book", 1), ("pen", 1)]
    assert_error(ann.get(URL, params={"groupBy": "meta.kind", "maxGroups": "2"}), 400)


def test_bad_paths_are_clear(world, shared_admin):
    ann = world["ann"]
    deep = "meta." + ".".join(["k"] * 17)
    cases = [("meta..x", "empty key"), ("meta.", "empty key"), ("meta.a$b", "letters, digits"),
             (deep, "too deep"), ("meta.1234567890", "too large"), ("meta", "path into it"),
             ("title.x", "only a JSON field"), ("owner.name", "one field"), ("meta.kind:month", "date buckets"),
             ("nope.x", "no field"), ("hmeta.pin", None)]
    for k, (term, words) in enumerate(cases):
        body = assert_error(ann.get(URL, params={"groupBy": term}), 400)
        if words:
            assert words in body["message"], (term, body["message"])
        if k < 5:  # the path's own errors name the groupBy, not a filter
            assert body["message"].startswith("Invalid groupBy:"), body["message"]
    # A hidden JSON field is a superuser's only, as in a filter.
    r = shared_admin.get(URL, params={"groupBy": "hmeta.pin"})
    assert r.status_code == 200 and sum(i["count"] for i in r.json()["items"]) == 7
    body = assert_error(ann.get(URL, params={"groupBy": "meta.kind", "sort": "meta.other"}), 400)
    assert "sort" in body["message"]
