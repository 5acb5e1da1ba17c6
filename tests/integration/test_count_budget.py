"""Totals with a time budget (--count-budget-ms): a list whose count runs past it is
answered at once with totalItems/totalPages -1 (as with skipTotal), the verdict is
remembered per filter until the cache's TTL whatever is written, and cheap counts
stay exact. Both backends, and the cluster (each instance keeps its own verdicts)."""
import pytest

from conftest import (ADMIN_EMAIL, ADMIN_PASSWORD, Client, Server, instance_urls, make_superuser,
                      metrics_text)

URL = "/api/collections/big/records"
ROWS = 3000
# 150 terms that match nothing, then one that matches every title: each row costs
# 151 LIKEs over a 2,000-character text full of q's (no quick search for the q: each
# starts a partial match), so counting the rows takes seconds (2.6 s here unbudgeted,
# 25 times the budget), while a page stops after its first rows.
SLOW = " || ".join(f"title ~ 'q{i}z'" for i in range(150)) + " || title ~ 'x'"


def skipped(c, reason):
    for line in metrics_text(c.url).splitlines():
        if line.startswith(f'basalt_list_totals_skipped_total{{reason="{reason}"}} '):
            return float(line.split()[1])
    return 0.0


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("budget"))
    make_superuser(d)
    srv = Server(d, ["--count-budget-ms=100"]).start()
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    r = admin.post("/api/collections", json={
        "name": "big", "listRule": "", "viewRule": "", "createRule": "",
        "fields": [{"name": "title", "type": "text", "max": 5000}, {"name": "n", "type": "number"}]})
    assert r.status_code == 200, r.text
    for b in range(ROWS // 50):
        reqs = [{"method": "POST", "url": URL, "body": {"title": "qx" * 1000, "n": b * 50 + i}}
                for i in range(50)]
        r = admin.post("/api/batch", json={"requests": reqs})
        assert r.status_code == 200, r.text
    yield srv, admin
    rc = srv.stop()
    assert rc == 0, f"basalt exited with {rc}"


def test_a_count_past_the_budget_answers_the_page_without_its_total(big):
    srv, admin = big
    anon = Client(srv.url)
    before = skipped(anon, "budget")
    r = anon.get(URL, params={"filter": SLOW, "perPage": 30})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["totalItems"] == -1 and body["totalPages"] == -1
    assert len(body["items"]) == 30 and body["page"] == 1
    assert skipped(anon, "budget") == before + 1


def test_the_verdict_is_kept_per_filter_across_writes(big):
    srv, admin = big
    anon = Client(srv.url)
    instances = len(instance_urls(srv.url))
    flt = SLOW + " || n = -7"  # a filter of its own: no other test has counted it
    b0, k0 = skipped(anon, "budget"), skipped(anon, "known")
    for page in range(1, 8):  # distinct pages: each misses the page cache
        if page == 4:
            r = admin.post(URL, json={"title": "qx" * 1000, "n": -1})  # a write does not reset it
            assert r.status_code == 200, r.text
        r = anon.get(URL, params={"filter": flt, "page": page, "perPage": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["totalItems"], body["totalPages"], len(body["items"])) == (-1, -1, 5)
    spent, known = skipped(anon, "budget") - b0, skipped(anon, "known") - k0
    # Each instance spends the budget once for this filter; every other page knew.
    assert 1 <= spent <= instances, (spent, known)
    assert spent + known == 7


def test_cheap_counts_stay_exact_and_skip_total_is_untouched(big):
    srv, admin = big
    anon = Client(srv.url)
    b0 = skipped(anon, "budget")
    r = anon.get(URL, params={"filter": "n >= 10 && n < 40", "perPage": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["totalItems"], body["totalPages"]) == (30, 5)
    r = anon.get(URL, params={"filter": SLOW, "skipTotal": 1, "perPage": 3})
    assert r.status_code == 200 and r.json()["totalItems"] == -1
    assert skipped(anon, "budget") == b0
    # The connection that ran a stopped count answers the next reads as usual.
    for _ in range(6):
        r = anon.get(URL, params={"filter": SLOW + " || n = -9", "perPage": 2, "page": 2})
        assert r.status_code == 200, r.text
        r = anon.get(URL, params={"filter": "n = 5"})
        assert r.status_code == 200 and r.json()["totalItems"] == 1, r.text


def test_a_cursor_walk_needs_no_total(big):
    srv, admin = big
    anon = Client(srv.url)
    seen, cursor = [], ""
    while cursor is not None and len(seen) < 30:
        # In id order (the cursor's own): a page reads its rows off the index and stops.
        r = anon.get(URL, params={"filter": SLOW, "cursor": cursor, "perPage": 10})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["totalItems"] == -1
        seen += [it["id"] for it in body["items"]]
        cursor = body["nextCursor"]
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 30
