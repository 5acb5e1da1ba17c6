"""PocketBase's geoPoint field and the filter functions geoDistance() and strftime()
(issue 18 item 5): values, validation, distance filters, a rule with @request.query
values, a realtime subscription filtered by distance, strftime filters and the
inputs that must be refused. Both backends."""
import json
import urllib.parse

import pytest

from conftest import Client, assert_error
from rtclient import SSE

CITIES = {
    "paris": (2.3522, 48.8566),
    "london": (-0.1276, 51.5072),
    "berlin": (13.405, 52.52),
    "newyork": (-74.006, 40.7128),
}

DATES = {
    "paris": "2024-03-10 08:30:00.000Z",   # a Sunday
    "london": "2024-03-31 23:59:59.500Z",
    "berlin": "2024-12-31 12:00:00.000Z",
    "newyork": "2025-01-01 00:00:00.000Z",
}


@pytest.fixture(scope="module")
def places(shared_admin):
    a = shared_admin
    r = a.post("/api/collections", json={
        "name": "geo_places", "listRule": "", "viewRule": "",
        "fields": [{"name": "name", "type": "text"},
                   {"name": "location", "type": "geoPoint"},
                   {"name": "when", "type": "date"},
                   {"name": "pop", "type": "number"}]})
    assert r.status_code == 200, r.text
    for name, (lon, lat) in CITIES.items():
        r = a.post("/api/collections/geo_places/records",
                   json={"name": name, "location": {"lon": lon, "lat": lat}, "when": DATES[name], "pop": 1})
        assert r.status_code == 200, r.text
    return a


def names(r):
    assert r.status_code == 200, r.text
    return sorted(i["name"] for i in r.json()["items"])


def listing(c, flt, coll="geo_places", **params):
    return c.get(f"/api/collections/{coll}/records", params={"filter": flt, "perPage": 100, **params})


# ---- the field ----

def test_geopoint_values_default_and_output(places):
    a = places
    r = a.post("/api/collections/geo_places/records", json={"name": "nowhere"})
    assert r.status_code == 200, r.text
    assert r.json()["location"] == {"lon": 0, "lat": 0}
    got = a.get(f"/api/collections/geo_places/records/{r.json()['id']}").json()
    assert got["location"] == {"lon": 0, "lat": 0}
    # JSON text, as a multipart form sends it; whole numbers stay whole.
    r = a.post("/api/collections/geo_places/records", json={"name": "txt", "location": '{"lon": 10, "lat": -20.5}'})
    assert r.status_code == 200, r.text
    assert r.json()["location"] == {"lon": 10, "lat": -20.5}
    r = a.patch(f"/api/collections/geo_places/records/{r.json()['id']}", json={"location": None})
    assert r.status_code == 200 and r.json()["location"] == {"lon": 0, "lat": 0}
    for rid in [i["id"] for i in listing(a, "name = 'nowhere' || name = 'txt'").json()["items"]]:
        assert a.delete(f"/api/collections/geo_places/records/{rid}").status_code == 204


@pytest.mark.parametrize("value,code", [
    ({"lon": 0, "lat": 91}, "validation_invalid_latitude"),
    ({"lon": 0, "lat": -90.01}, "validation_invalid_latitude"),
    ({"lon": 181, "lat": 0}, "validation_invalid_longitude"),
    ({"lon": -180.5, "lat": 1}, "validation_invalid_longitude"),
    ({"lon": "1", "lat": 2}, "validation_invalid_geopoint"),
    ({"lon": True, "lat": 2}, "validation_invalid_geopoint"),
    ([1, 2], "validation_invalid_geopoint"),
    ("not json", "validation_invalid_geopoint"),
    (5, "validation_invalid_geopoint"),
])
def test_geopoint_validation(places, value, code):
    r = places.post("/api/collections/geo_places/records", json={"name": "bad", "location": value})
    assert_error(r, 400, "location", code)
    assert listing(places, "name = 'bad'").json()["totalItems"] == 0


def test_required_geopoint_refuses_null_island(shared_admin):
    a = shared_admin
    r = a.post("/api/collections", json={"name": "geo_req", "listRule": "", "fields": [
        {"name": "at", "type": "geoPoint", "required": True}]})
    assert r.status_code == 200, r.text
    assert_error(a.post("/api/collections/geo_req/records", json={}), 400, "at", "validation_required")
    assert_error(a.post("/api/collections/geo_req/records", json={"at": {"lon": 0, "lat": 0}}), 400, "at",
                 "validation_required")
    r = a.post("/api/collections/geo_req/records", json={"at": {"lon": 0, "lat": 0.5}})
    assert r.status_code == 200, r.text
    # The field's definition round-trips.
    f = [f for f in a.get("/api/collections/geo_req").json()["fields"] if f["name"] == "at"][0]
    assert f["type"] == "geoPoint" and f["required"] is True


# ---- geoDistance ----

def test_distance_filters_select_the_right_records(places):
    c = Client(places.url)
    paris = "geoDistance(location.lon, location.lat, 2.3522, 48.8566)"
    assert names(listing(c, f"{paris} < 10")) == ["paris"]
    assert names(listing(c, f"{paris} < 500")) == ["london", "paris"]        # London is ~344 km
    assert names(listing(c, f"{paris} < 1000")) == ["berlin", "london", "paris"]  # Berlin ~878 km
    assert names(listing(c, f"{paris} > 5000")) == ["newyork"]              # ~5837 km
    assert names(listing(c, f"{paris} >= 300 && {paris} <= 400")) == ["london"]
    # Arguments in either order of points, on either side of the operator.
    assert names(listing(c, "500 > geoDistance(2.3522, 48.8566, location.lon, location.lat)")) == [
        "london", "paris"]
    # Constants only: computed once (Paris-London is 343.5 km).
    assert names(listing(c, "geoDistance(2.3522, 48.8566, -0.1276, 51.5072) < 344 && name = 'paris'")) == [
        "paris"]
    assert names(listing(c, "geoDistance(2.3522, 48.8566, -0.1276, 51.5072) < 343")) == []
    # The same point twice: about 0, not NULL or an error (the cosine is clamped).
    assert names(listing(c, "geoDistance(location.lon, location.lat, location.lon, location.lat) < 0.001")) \
        == sorted(CITIES)
    # Sorting by the number of the distance is not PocketBase's; filters are.


def test_rule_with_request_query_values(shared_admin):
    a = shared_admin
    r = a.post("/api/collections", json={
        "name": "geo_near", "viewRule": "",
        "listRule": "geoDistance(location.lon, location.lat, @request.query.lon, @request.query.lat) < 500",
        "fields": [{"name": "name", "type": "text"}, {"name": "location", "type": "geoPoint"}]})
    assert r.status_code == 200, r.text
    for name, (lon, lat) in CITIES.items():
        assert a.post("/api/collections/geo_near/records",
                      json={"name": name, "location": {"lon": lon, "lat": lat}}).status_code == 200
    anon = Client(a.url)
    q = {"lon": "2.35", "lat": "48.85"}
    assert names(anon.get("/api/collections/geo_near/records", params=q)) == ["london", "paris"]
    assert names(anon.get("/api/collections/geo_near/records", params={"lon": "-74", "lat": "40.7"})) == [
        "newyork"]
    assert names(anon.get("/api/collections/geo_near/records", params={"lon": "13", "lat": "52.5e0"})) == [
        "berlin"]
    # Missing or non-numeric values: the distance is NULL and admits nobody.
    for bad in ({}, {"lon": "2.35"}, {"lon": "abc", "lat": "48"}, {"lon": "nan", "lat": "48"},
                {"lon": "inf", "lat": "48"}, {"lon": "1e999", "lat": "48"}, {"lon": "0x2", "lat": "48"},
                {"lon": " 2", "lat": "48"}, {"lon": "", "lat": "48"}):
        r = anon.get("/api/collections/geo_near/records", params=bad)
        assert r.status_code == 200, r.text
        assert r.json()["items"] == [], bad
    # Huge but finite numbers are just far away.
    r = anon.get("/api/collections/geo_near/records", params={"lon": "1e308", "lat": "-1e308"})
    assert r.status_code == 200, r.text
    # The view rule is open: a record is still readable by id.


def test_distance_through_a_relation_and_in_import(places):
    a = places
    offices = a.get("/api/collections/geo_places").json()
    r = a.post("/api/collections", json={
        "name": "geo_staff", "listRule": "",
        "fields": [{"name": "who", "type": "text"},
                   {"name": "office", "type": "relation", "collectionId": offices["id"], "maxSelect": 1}]})
    assert r.status_code == 200, r.text
    by_name = {i["name"]: i["id"] for i in listing(a, "name != ''").json()["items"]}
    for who, office in [("ann", "paris"), ("bob", "newyork")]:
        r = a.post("/api/collections/geo_staff/records", json={"who": who, "office": by_name[office]})
        assert r.status_code == 200, r.text
    got = listing(Client(a.url), "geoDistance(office.location.lon, office.location.lat, -73.9, 40.7) < 50",
                  coll="geo_staff")
    assert [i["who"] for i in got.json()["items"]] == ["bob"], got.text
    # A collection with a geoPoint field comes through the import as it is.
    coll = a.get("/api/collections/geo_places").json()
    r = a.req("PUT", "/api/collections/import", json={"collections": [coll], "deleteMissing": False})
    assert r.status_code == 204, r.text
    f = [f for f in a.get("/api/collections/geo_places").json()["fields"] if f["name"] == "location"][0]
    assert f["type"] == "geoPoint"


def test_realtime_subscription_filtered_by_distance(places):
    a = places
    flt = "geoDistance(location.lon, location.lat, 2.35, 48.85) < 500"
    opts = urllib.parse.quote(json.dumps({"query": {"filter": flt}}))
    topic = f"geo_places/*?options={opts}"
    s = SSE(a.url)
    try:
        r = Client(a.url).post("/api/realtime", json={"clientId": s.client_id, "subscriptions": [topic]})
        assert r.status_code == 204, r.text
        for name, (lon, lat) in [("rt-versailles", (2.13, 48.80)), ("rt-tokyo", (139.69, 35.69)),
                                 ("rt-brussels", (4.35, 50.85))]:
            assert a.post("/api/collections/geo_places/records",
                          json={"name": name, "location": {"lon": lon, "lat": lat}}).status_code == 200
        evs = s.collect()
        got = [json.loads(e["data"])["record"] for e in evs]
        assert sorted(g["name"] for g in got) == ["rt-brussels", "rt-versailles"]
        assert all(g["location"]["lat"] > 48 for g in got)
    finally:
        s.close()
        for i in listing(a, "name ~ 'rt-%'").json()["items"]:
            a.delete(f"/api/collections/geo_places/records/{i['id']}")


@pytest.mark.parametrize("flt,what", [
    ("geoDistance(1, 2, 3) < 1", "4 arguments"),
    ("geoDistance(1, 2, 3, 4, 5) < 1", "4 arguments"),
    ("geoDistance('1', 2, 3, 4) < 1", "numbers or fields"),
    ("geoDistance(name, 2, 3, 4) < 1", "neither a number field"),
    ("geoDistance(location, 2, 3, 4) < 1", "neither a number field"),
    ("geoDistance(location.x, 2, 3, 4) < 1", ""),
    ("geoDistance(location.lon:lower, 2, 3, 4) < 1", "modifiers"),
    ("geoDistance(geoDistance(1,2,3,4), 2, 3, 4) < 1", "another function"),
    ("nosuch(1) = 1", "unknown function"),
    ("geoDistance(1, 2, 3, 4 < 1", ""),
    ("geoDistance(1,,2,3) < 1", ""),
    ("geoDistance(1, 2, 3, 4)", "operator"),
    ("strftime('%Y', 1, 'start of day', 'start of day', 'start of day', 'start of day', 'start of day', "
     "'start of day', 'start of day', 'start of day', 'start of day') = ''", "too many arguments"),
])
def test_bad_function_calls_are_400(places, flt, what):
    body = assert_error(listing(Client(places.url), flt), 400)
    assert what in body["message"], body


# ---- strftime ----

def test_strftime_filters(places):
    c = Client(places.url)
    assert names(listing(c, "strftime('%Y-%m', when) = '2024-03'")) == ["london", "paris"]
    assert names(listing(c, "strftime('%Y', when) = '2025'")) == ["newyork"]
    assert names(listing(c, "strftime('%w', when) = '0'")) == ["london", "paris"]   # both Sundays
    assert names(listing(c, "strftime('%j', when) = '366'")) == ["berlin"]          # 2024 is a leap year
    assert names(listing(c, "strftime('%H:%M', when) = '08:30'")) == ["paris"]
    assert names(listing(c, "strftime('%S', when) = '59' && strftime('%f', when) = '59.500'")) == ["london"]
    assert names(listing(c, "strftime('%s', when) = '1735689600'")) == ["newyork"]
    assert names(listing(c, "strftime('%d%%', when) = '31%'")) == ["berlin", "london"]
    # Modifiers.
    assert names(listing(c, "strftime('%Y-%m-%d', when, '+1 days') = '2025-01-01'")) == ["berlin"]
    assert names(listing(c, "strftime('%Y-%m-%d %H', when, '+1 second', '-2 hours') = '2024-03-31 22'")) == [
        "london"]
    assert names(listing(c, "strftime('%Y-%m-%d %H:%M:%S', when, 'start of month') = '2024-03-01 00:00:00'")) \
        == ["london", "paris"]
    assert names(listing(c, "strftime('%Y-%m-%d', when, 'start of year', '-1 day') = '2023-12-31'")) == [
        "berlin", "london", "paris"]
    # Constants: a text date, a Julian day, Unix seconds, now.
    assert names(listing(c, "strftime('%Y', '2024-05-06') = '2024' && name = 'paris'")) == ["paris"]
    assert names(listing(c, "strftime('%Y-%m-%d', 2460000.5) = '2023-02-25' && name = 'paris'")) == ["paris"]
    assert names(listing(c, "strftime('%Y', 1735689600, 'unixepoch') = '2025' && name = 'paris'")) == ["paris"]
    assert names(listing(c, "strftime('%Y') >= '2024' && name = 'paris'")) == ["paris"]
    # An invalid constant date is '' (SQLite's NULL, as PocketBase reads it).
    assert names(listing(c, "strftime('%Y', 'soon') = '' && name = 'paris'")) == ["paris"]
    # Against a field of the record and with a request value.
    assert names(listing(c, "strftime('%Y', when) = strftime('%Y', '2025-06-01')")) == ["newyork"]


def test_strftime_on_an_empty_date_is_empty(places):
    a = places
    r = a.post("/api/collections/geo_places/records", json={"name": "undated"})
    assert r.status_code == 200, r.text
    try:
        assert names(listing(Client(a.url), "strftime('%Y', when) = ''")) == ["undated"]
    finally:
        a.delete(f"/api/collections/geo_places/records/{r.json()['id']}")


def test_strftime_in_statistics_filter(places):
    r = places.get("/api/basalt/collections/geo_places/stats",
                   params={"aggregates": "count", "filter": "strftime('%Y', when) = '2024'"})
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["count"] == 3


@pytest.mark.parametrize("flt,what", [
    ("strftime('%Z', when) = ''", "may use only"),
    ("strftime('%u', when) = ''", "may use only"),
    ("strftime('%Y%', when) = ''", "may use only"),
    ("strftime(when) = ''", "format text"),
    ("strftime() = ''", "takes a format"),
    ("strftime('%Y', name) = ''", "not a date field"),
    ("strftime('%Y', pop) = ''", "not a date field"),
    ("strftime('%Y', when, '+1 months') = ''", "modifiers"),
    ("strftime('%Y', when, 'weekday 0') = ''", "modifiers"),
    ("strftime('%Y', when, 'localtime') = ''", "modifiers"),
    ("strftime('%Y', when, '+100000000 days') = ''", "modifiers"),
    ("strftime('%Y', when, 1) = ''", "modifiers"),
    ("strftime('%Y', when, 'unixepoch') = ''", "unixepoch"),
    ("strftime('" + "%Y" * 17 + "', when) = ''", "too many specifiers"),
    ("strftime('" + "x" * 129 + "', when) = ''", "too long"),
])
def test_bad_strftime_calls_are_400(places, flt, what):
    body = assert_error(listing(Client(places.url), flt), 400)
    assert what in body["message"], body


def test_functions_in_a_long_filter_keep_the_limits(places):
    c = Client(places.url)
    one = "geoDistance(pop,pop,1,2)>0"  # a call counts as an expression, as a comparison does
    assert listing(c, "||".join([one] * 100)).status_code == 200
    body = assert_error(listing(c, "||".join([one] * 101)), 400)
    assert "too many expressions" in body["message"]


def test_query_value_compared_with_a_distance(shared_admin, places):
    """A request value on the other side of the comparison (text) compares as a
    number with a distance, on both backends; a number with strftime's text as text."""
    a = shared_admin
    r = a.post("/api/collections", json={
        "name": "geo_km", "listRule": "geoDistance(location.lon, location.lat, 2.35, 48.85) < @request.query.km",
        "fields": [{"name": "name", "type": "text"}, {"name": "location", "type": "geoPoint"}]})
    assert r.status_code == 200, r.text
    for name, (lon, lat) in CITIES.items():
        assert a.post("/api/collections/geo_km/records",
                      json={"name": name, "location": {"lon": lon, "lat": lat}}).status_code == 200
    anon = Client(a.url)
    for km, want in (("500", ["london", "paris"]), ("5e2", ["london", "paris"]), ("100", ["paris"])):
        assert names(anon.get("/api/collections/geo_km/records", params={"km": km})) == want, km
    # strftime's text against a number compares as text on both backends.
    c = Client(a.url)
    assert names(listing(c, "strftime('%Y', when) = 2025")) == ["newyork"]
    assert names(listing(c, "strftime('%m', when) >= 10 && strftime('%Y', when) < 2025")) == ["berlin"]
