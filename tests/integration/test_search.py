"""Full-text search: a collection's "search" fields get an index (SQLite FTS5,
PostgreSQL tsvector + GIN) that ?search= uses, ranked with @rank, under the list rule
and the filter, following every write. Both backends."""
import pytest

from conftest import Client, assert_error

DOCS = {"name": "docs", "listRule": "owner = @request.auth.id || public = true", "viewRule": "",
        "createRule": "", "updateRule": "", "deleteRule": "",
        "fields": [{"name": "title", "type": "text"}, {"name": "body", "type": "editor"},
                   {"name": "public", "type": "bool"}, {"name": "owner", "type": "text"},
                   {"name": "secret", "type": "text", "hidden": True}],
        "search": ["title", "body"]}
URL = "/api/collections/docs/records"


@pytest.fixture(scope="module")
def docs(shared_admin):
    a = shared_admin
    r = a.post("/api/collections", json=DOCS)
    assert r.status_code == 200, r.text
    assert r.json()["search"] == ["title", "body"]
    rows = [("Postgres replication", "replication: streaming replication and failover", True, "ann"),
            ("Redis pub/sub", "replication of messages is not durable", True, "ann"),
            ("Cooking", "a recipe for bread", True, "bob"),
            ("Private notes", "replication secrets of ann", False, "ann"),
            ("Café crème", "déjà vu at the café", True, "bob")]
    ids = {}
    for title, body, public, owner in rows:
        r = a.post(URL, json={"title": title, "body": body, "public": public, "owner": owner, "secret": "zebra"})
        assert r.status_code == 200, r.text
        ids[title] = r.json()["id"]
    return ids


def titles(r):
    assert r.status_code == 200, r.text
    return [x["title"] for x in r.json()["items"]]


def test_search_matches_words_ranks_and_obeys_the_rule(docs, shared_admin):
    anon = Client(shared_admin.url)
    got = titles(anon.get(URL, params={"search": "replication"}))
    # The private one is not listed; the title hit ranks first.
    assert set(got) == {"Postgres replication", "Redis pub/sub"} and got[0] == "Postgres replication"
    assert titles(anon.get(URL, params={"search": "replication durable"})) == ["Redis pub/sub"]
    assert titles(anon.get(URL, params={"search": "repli"})) != []  # the last word is a prefix
    # Case folds on both backends; diacritics are kept (PostgreSQL's index could only
    # drop them through an extension it may not have).
    assert titles(anon.get(URL, params={"search": "CAFÉ"})) == ["Café crème"]
    assert titles(anon.get(URL, params={"search": "cafe"})) == []
    assert set(titles(shared_admin.get(URL, params={"search": "replication"}))) == {
        "Postgres replication", "Redis pub/sub", "Private notes"}
    # With a filter, a sort, a count and a cursor.
    r = anon.get(URL, params={"search": "replication", "filter": "title ~ 'Redis'"})
    assert titles(r) == ["Redis pub/sub"] and r.json()["totalItems"] == 1
    assert titles(anon.get(URL, params={"search": "replication", "sort": "title"})) == [
        "Postgres replication", "Redis pub/sub"]
    page = anon.get(URL, params={"search": "replication", "sort": "@rank", "perPage": 1, "cursor": ""}).json()
    nxt = anon.get(URL, params={"search": "replication", "sort": "@rank", "perPage": 1,
                                "cursor": page["nextCursor"]}).json()
    assert [page["items"][0]["title"], nxt["items"][0]["title"]] == ["Postgres replication", "Redis pub/sub"]


def test_search_syntax_is_only_words(docs, shared_admin):
    anon = Client(shared_admin.url)
    # Query-language characters are separators, never syntax.
    for q in ['"replication', "replication OR bread", "repl*", "NEAR(a b)", "title:bread", "') OR 1=1 --",
              "bread & | ! :*"]:
        r = anon.get(URL, params={"search": q})
        assert r.status_code == 200, (q, r.text)
    assert titles(anon.get(URL, params={"search": "replication OR bread"})) == []  # every word must appear
    # Hidden fields are not searched.
    assert titles(shared_admin.get(URL, params={"search": "zebra"})) == []
    assert titles(anon.get(URL, params={"search": "   "})) != []  # no words: no search
    assert_error(anon.get(URL, params={"search": " ".join(["w"] * 40)}), 400)
    assert_error(anon.get(URL, params={"sort": "@rank"}), 400)


def test_the_index_follows_writes_and_schema_changes(docs, shared_admin):
    a = shared_admin
    rid = docs["Cooking"]
    assert a.patch(f"{URL}/{rid}", json={"body": "a recipe for sourdough"}).status_code == 200
    assert titles(a.get(URL, params={"search": "sourdough"})) == ["Cooking"]
    assert titles(a.get(URL, params={"search": "bread"})) == []
    assert a.delete(f"{URL}/{rid}").status_code == 204
    assert titles(a.get(URL, params={"search": "sourdough"})) == []
    # Renaming the collection and a field keeps the index working.
    r = a.patch("/api/collections/docs", json={"name": "docs2"})
    assert r.status_code == 200, r.text
    assert titles(a.get("/api/collections/docs2/records", params={"search": "failover"})) == [
        "Postgres replication"]
    # A search field cannot be dropped while listed; the list can change.
    cur = a.get("/api/collections/docs2").json()
    fields = [f for f in cur["fields"] if f["name"] != "body"]
    assert_error(a.patch("/api/collections/docs2", json={"fields": fields}), 400, "search")
    r = a.patch("/api/collections/docs2", json={"search": ["title"]})
    assert r.status_code == 200, r.text
    assert titles(a.get("/api/collections/docs2/records", params={"search": "failover"})) == []
    assert titles(a.get("/api/collections/docs2/records", params={"search": "postgres"})) == [
        "Postgres replication"]
    r = a.patch("/api/collections/docs2", json={"name": "docs"})
    assert r.status_code == 200, r.text


def test_bad_search_options(shared_admin):
    a = shared_admin
    for search in [["nope"], ["public"], ["secret"], "title", ["title", "title"], ["t"] * 9]:
        body = dict(DOCS, name="docs_bad", search=search)
        assert_error(a.post("/api/collections", json=body), 400, "search")
    r = a.post("/api/collections", json={"name": "nosearch", "listRule": "",
                                         "fields": [{"name": "title", "type": "text"}]})
    assert r.status_code == 200
    assert_error(a.get("/api/collections/nosearch/records", params={"search": "x"}), 400)


def test_a_search_alone_counts_what_it_lists_through_writes(shared_admin):
    """A list that only searches is counted from the search index alone on SQLite (no
    join to the table): its total must stay the rows it lists through creates, updates
    that make a record match or stop matching, and deletes, and agree with the count of
    the same search with a filter (counted over the table)."""
    a = shared_admin
    coll = {"name": "cnt_notes", "listRule": "", "viewRule": "", "fields": [{"name": "title", "type": "text"}],
            "search": ["title"]}
    r = a.post("/api/collections", json=coll)
    assert r.status_code == 200, r.text
    url = "/api/collections/cnt_notes/records"
    anon = Client(a.url)

    def check(expected):
        only = anon.get(url, params={"search": "granite", "perPage": 500})
        assert only.status_code == 200, only.text
        filtered = anon.get(url, params={"search": "granite", "filter": "id != ''", "perPage": 500})
        assert filtered.status_code == 200, filtered.text
        assert only.json()["totalItems"] == len(only.json()["items"]) == expected
        assert filtered.json()["totalItems"] == expected
        # The next page of the same search reuses the (cached) count.
        p2 = anon.get(url, params={"search": "granite", "perPage": 1, "page": 2})
        assert p2.json()["totalItems"] == expected

    ids = []
    for i in range(30):
        r = a.post(url, json={"title": f"granite slab {i}" if i % 3 else f"marble slab {i}"})
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    check(20)
    assert a.patch(f"{url}/{ids[0]}", json={"title": "granite now"}).status_code == 200  # starts matching
    assert a.patch(f"{url}/{ids[1]}", json={"title": "basalt now"}).status_code == 200  # stops matching
    check(20)
    for i in (2, 4, 5):  # all three match (i % 3 != 0)
        assert a.delete(f"{url}/{ids[i]}").status_code == 204
    check(17)
    assert a.delete(f"{url}/{ids[3]}").status_code == 204  # a marble one: the count stays
    check(17)
    assert a.delete("/api/collections/cnt_notes").status_code == 204


# A search sorted by an indexed field: when most rows match, SQLite reads the page
# along the index with the search as a filter of each row (docs/api.md, "Full-text
# search"); with few matches, from the matches. Either way the same records in the
# same order, on both backends.
GOODS = {"name": "goods", "listRule": "", "viewRule": "", "createRule": "",
         "fields": [{"name": "title", "type": "text"}, {"name": "price", "type": "number"},
                    {"name": "kind", "type": "text"}],
         "indexes": ["CREATE INDEX idx_goods_price ON goods (price)"],
         "search": ["title"]}
GURL = "/api/collections/goods/records"
NGOODS = 600


@pytest.fixture(scope="module")
def goods(shared_admin):
    a = shared_admin
    r = a.post("/api/collections", json=GOODS)
    assert r.status_code == 200, r.text
    rows = []
    for b in range(NGOODS // 50):
        reqs = []
        for i in range(50):
            n = b * 50 + i
            # Prices distinct and not in insertion order; "lamp" in every title, "rare" in 3.
            title = "lamp " + ("rare " if n % 200 == 7 else "") + ("oak" if n % 2 else "steel")
            row = {"title": title, "price": (n * 7919) % 1000 + n / 1000.0, "kind": "ab"[n % 2]}
            rows.append(row)
            reqs.append({"method": "POST", "url": GURL, "body": row})
        r = a.post("/api/batch", json={"requests": reqs})
        assert r.status_code == 200, r.text
    return rows


def scans(url):
    return metric(url, "basalt_list_search_scans_total") or 0.0


def by_price(rows, pred, desc=False):
    return [r["price"] for r in sorted((r for r in rows if pred(r)), key=lambda r: r["price"], reverse=desc)]


def _list(client, **params):
    r = client.get(GURL, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_search_sorted_by_an_indexed_field_reads_the_same_records_either_way(goods, shared_admin):
    from conftest import BACKEND, metric
    anon = Client(shared_admin.url)
    s0 = metric(anon.url, "basalt_list_search_scans_total") or 0.0
    # Every row matches: pages along the price index (SQLite).
    want = by_price(goods, lambda r: True)
    for page in (1, 2, 7):
        body = _list(anon, search="lamp", sort="price", perPage=40, page=page)
        assert body["totalItems"] == NGOODS
        assert [x["price"] for x in body["items"]] == want[(page - 1) * 40:page * 40]
        assert all("lamp" in x["title"] for x in body["items"])
    body = _list(anon, search="lamp", sort="-price", perPage=25)
    assert [x["price"] for x in body["items"]] == by_price(goods, lambda r: True, desc=True)[:25]
    # With a filter: still only matching rows, in order.
    body = _list(anon, search="lamp oak", filter="kind = 'b'", sort="price", perPage=30)
    assert body["totalItems"] == NGOODS // 2
    assert [x["price"] for x in body["items"]] == by_price(goods, lambda r: r["kind"] == "b")[:30]
    # A cursor walk along the index: every match once, in order.
    seen, cur = [], ""
    while cur is not None:
        body = _list(anon, search="lamp", sort="price", perPage=100, cursor=cur)
        seen += [x["price"] for x in body["items"]]
        cur = body["nextCursor"]
    assert seen == want
    scanned = (metric(anon.url, "basalt_list_search_scans_total") or 0.0) - s0
    # Few matches (3 of 600): read from the matches; a sort without an index likewise.
    s1 = metric(anon.url, "basalt_list_search_scans_total") or 0.0
    body = _list(anon, search="rare", sort="price")
    assert [x["price"] for x in body["items"]] == by_price(goods, lambda r: "rare" in r["title"])
    body = _list(anon, search="lamp", sort="title,price", perPage=5)
    assert body["totalItems"] == NGOODS and len(body["items"]) == 5
    body = _list(anon, search="lamp", sort="price", perPage=10, skipTotal=1)  # no count, no estimate
    assert [x["price"] for x in body["items"]] == want[:10]
    after = (metric(anon.url, "basalt_list_search_scans_total") or 0.0) - s1
    if BACKEND == "sqlite":
        assert scanned >= 10, scanned  # the pages above that could (the cluster: one instance's)
        assert after == 0, after
    else:
        assert scanned == 0 and after == 0  # PostgreSQL's planner chooses by itself
