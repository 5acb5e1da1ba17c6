"""Deep pagination: the cursor form of a records list (`cursor=` then `nextCursor`),
valid for the same sort, which skips and repeats nothing when records are added or
removed behind it; and totals counted once per filter until the collection changes.
Both backends."""
import base64
import json

import pytest

from conftest import Client, assert_error

COLL = {"name": "items", "listRule": "", "viewRule": "", "createRule": "", "updateRule": "", "deleteRule": "",
        "fields": [{"name": "title", "type": "text"}, {"name": "points", "type": "number"},
                   {"name": "due", "type": "date"}, {"name": "flag", "type": "bool"},
                   {"name": "created", "type": "autodate", "onCreate": True}]}
URL = "/api/collections/items/records"


@pytest.fixture(scope="module")
def coll(shared_admin):
    r = shared_admin.post("/api/collections", json=COLL)
    assert r.status_code == 200, r.text
    for i in range(40):
        due = "" if i % 5 == 0 else f"2026-0{1 + i % 9}-1{i % 10} 10:00:00.000Z"
        r = shared_admin.post(URL, json={"title": f"t{i % 7}", "points": i % 4, "due": due, "flag": i % 2 == 0})
        assert r.status_code == 200, r.text
    return shared_admin


def walk(client, sort, per_page, **extra):
    """Every page through the cursor; returns the ids in order and the pages' totals."""
    out, totals, cursor, pages = [], set(), "", 0
    while cursor is not None:
        params = {"cursor": cursor, "perPage": per_page, **extra}
        if sort:
            params["sort"] = sort
        r = client.get(URL, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) <= per_page
        out += [x["id"] for x in body["items"]]
        totals.add(body["totalItems"])
        cursor = body["nextCursor"]
        pages += 1
        assert pages < 100
    return out, totals


@pytest.mark.parametrize("sort", ["", "-points,title", "points,-due", "due", "-due,-flag", "-created", "@rowid",
                                  "title,-id"])
def test_cursor_pages_are_the_list_in_order(coll, sort):
    params = {"perPage": 500, "sort": sort + ",id" if sort else "id"}
    whole = [x["id"] for x in coll.get(URL, params=params).json()["items"]]
    ids, totals = walk(coll, sort, 7)
    assert len(whole) == 40 and totals == {40}
    assert len(set(ids)) == len(ids)
    assert ids == whole


def test_cursor_with_a_filter_and_skip_total(coll):
    ids, totals = walk(coll, "-points", 4, filter="points >= 2", skipTotal="1")
    assert totals == {-1}
    expect = [x["id"] for x in coll.get(URL, params={"perPage": 500, "filter": "points >= 2",
                                                     "sort": "-points,id"}).json()["items"]]
    assert ids == expect and len(ids) == 20


def test_writes_behind_the_cursor_skip_and_repeat_nothing(shared_admin):
    a = shared_admin
    r = a.post("/api/collections", json=dict(COLL, name="moving"))
    assert r.status_code == 200, r.text
    url = "/api/collections/moving/records"
    original = []
    for i in range(30):
        original.append(a.post(url, json={"title": f"m{i:02d}", "points": i}).json()["id"])
    seen, cursor, step = [], "", 0
    while cursor is not None:
        body = a.get(url, params={"cursor": cursor, "perPage": 5, "sort": "points"}).json()
        seen += [x["id"] for x in body["items"]]
        cursor = body["nextCursor"]
        step += 1
        if step == 2:
            # Behind the cursor: new records sorting before it, and one already seen deleted.
            for p in (-5, 0, 3):
                a.post(url, json={"title": "late", "points": p})
            assert a.delete(f"{url}/{original[1]}").status_code == 204
        if step == 3:
            # Ahead of it: one record removed, one added; the walk sees exactly that.
            assert a.delete(f"{url}/{original[20]}").status_code == 204
            original.append(a.post(url, json={"title": "ahead", "points": 100}).json()["id"])
    assert len(seen) == len(set(seen))
    expect = [x for x in original if x != original[20]]
    assert [x for x in seen if x in set(expect)] == expect
    assert original[20] not in seen


def test_bad_cursors_are_clear_400s(coll):
    first = coll.get(URL, params={"cursor": "", "perPage": 3, "sort": "-points"}).json()
    token = first["nextCursor"]
    assert isinstance(token, str) and first["page"] == 1
    # Another sort than the cursor's.
    body = assert_error(coll.get(URL, params={"cursor": token, "sort": "points"}), 400)
    assert "another sort" in body["message"]
    # Not a cursor at all, or a tampered one.
    for bad in ["nope!", "e30", base64.urlsafe_b64encode(b'{"s":"-points","k":[1]}').decode().rstrip("="),
                base64.urlsafe_b64encode(b'{"s":"-points","k":[1,{"a":1}]}').decode().rstrip("="),
                base64.urlsafe_b64encode(b'{"s":"-points","k":[1,2]}').decode().rstrip("="), "A" * 9000]:
        assert_error(coll.get(URL, params={"cursor": bad, "sort": "-points"}), 400)
    # A forged cursor with values of its own only moves the page.
    forged = base64.urlsafe_b64encode(json.dumps({"s": "-points", "k": [1, "zzzzzzzzzzzzzzz"]}).encode()).decode()
    r = coll.get(URL, params={"cursor": forged.rstrip("="), "sort": "-points", "perPage": 500})
    assert r.status_code == 200 and all(x["points"] <= 1 for x in r.json()["items"])
    assert_error(coll.get(URL, params={"cursor": "", "sort": "@random"}), 400)
    assert_error(coll.get(URL, params={"cursor": "", "page": "2"}), 400)


def test_totals_follow_writes(shared_admin):
    """Totals are counted once per filter and kept until the collection is written:
    page 2 reuses page 1's count, and a write counts again."""
    a = shared_admin
    r = a.post("/api/collections", json=dict(COLL, name="counted"))
    assert r.status_code == 200, r.text
    url = "/api/collections/counted/records"
    for i in range(12):
        a.post(url, json={"title": "c", "points": i % 3})
    flt = {"filter": "points = 1", "perPage": 2}
    assert a.get(url, params={**flt, "page": 1}).json()["totalItems"] == 4
    assert a.get(url, params={**flt, "page": 2}).json()["totalItems"] == 4
    a.post(url, json={"title": "c", "points": 1})
    assert a.get(url, params={**flt, "page": 3}).json()["totalItems"] == 5
    rid = a.get(url, params={**flt, "page": 1}).json()["items"][0]["id"]
    a.patch(f"{url}/{rid}", json={"points": 2})
    assert a.get(url, params={**flt, "page": 2}).json()["totalItems"] == 4
    # Another caller with another rule outcome does not get this count.
    r = a.post("/api/collections", json=dict(COLL, name="mine", listRule="title = @request.auth.id"))
    anon = Client(a.url)
    assert anon.get("/api/collections/mine/records").json()["totalItems"] == 0
