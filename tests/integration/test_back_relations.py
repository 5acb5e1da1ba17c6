"""Back-relations in expand (PocketBase's `comments_via_post`): the records that point
at each record, under their own view rule, nested, bounded, and followed by the list
cache. (Filter and sort through back-relations are tested in test_sec_rules.py.)"""
import pytest

from conftest import Client, assert_error


@pytest.fixture(scope="module")
def blog(shared_server, shared_admin):
    a = shared_admin
    people = a.post("/api/collections", json={"name": "people", "listRule": "", "viewRule": "",
                                              "fields": [{"name": "name", "type": "text"}]}).json()
    posts = a.post("/api/collections", json={"name": "bposts", "listRule": "", "viewRule": "",
                                             "fields": [{"name": "title", "type": "text"}]}).json()
    r = a.post("/api/collections", json={
        "name": "bcomments", "listRule": "", "viewRule": "hidden = false",
        "fields": [{"name": "body", "type": "text"}, {"name": "hidden", "type": "bool"},
                   {"name": "post", "type": "relation", "collectionId": posts["id"], "maxSelect": 1},
                   {"name": "author", "type": "relation", "collectionId": people["id"], "maxSelect": 1},
                   {"name": "secretpost", "type": "relation", "collectionId": posts["id"], "maxSelect": 1,
                    "hidden": True}]})
    assert r.status_code == 200, r.text
    r = a.post("/api/collections", json={
        "name": "blists", "listRule": "", "viewRule": "",
        "fields": [{"name": "name", "type": "text"},
                   {"name": "posts", "type": "relation", "collectionId": posts["id"], "maxSelect": 5}]})
    assert r.status_code == 200, r.text
    ann = a.post("/api/collections/people/records", json={"name": "ann"}).json()["id"]
    p1 = a.post("/api/collections/bposts/records", json={"title": "one"}).json()["id"]
    p2 = a.post("/api/collections/bposts/records", json={"title": "two"}).json()["id"]
    for body, post, hidden in [("c1", p1, False), ("c2", p1, False), ("c3", p1, True), ("c4", p2, False)]:
        r = a.post("/api/collections/bcomments/records", json={"body": body, "post": post, "hidden": hidden,
                                                               "author": ann})
        assert r.status_code == 200, r.text
    a.post("/api/collections/blists/records", json={"name": "l1", "posts": [p1, p2]})
    a.post("/api/collections/blists/records", json={"name": "l2", "posts": [p2]})
    return {"p1": p1, "p2": p2, "url": shared_server.url}


def test_view_and_list_expand_back_relations_under_their_rule(blog):
    c = Client(blog["url"])
    r = c.get(f"/api/collections/bposts/records/{blog['p1']}", params={"expand": "bcomments_via_post.author"})
    assert r.status_code == 200, r.text
    got = r.json()["expand"]["bcomments_via_post"]
    assert [x["body"] for x in got] == ["c1", "c2"]  # c3 fails the view rule
    assert all(x["expand"]["author"]["name"] == "ann" for x in got)
    items = c.get("/api/collections/bposts/records", params={"expand": "bcomments_via_post,blists_via_posts",
                                                             "sort": "title"}).json()["items"]
    one, two = items
    assert [x["body"] for x in two["expand"]["bcomments_via_post"]] == ["c4"]
    # A multi-valued relation back: the lists holding each post.
    assert sorted(x["name"] for x in one["expand"]["blists_via_posts"]) == ["l1"]
    assert sorted(x["name"] for x in two["expand"]["blists_via_posts"]) == ["l1", "l2"]


def test_superusers_see_every_back_related_record(blog, shared_admin):
    r = shared_admin.get(f"/api/collections/bposts/records/{blog['p1']}",
                         params={"expand": "bcomments_via_post,bcomments_via_secretpost"})
    assert [x["body"] for x in r.json()["expand"]["bcomments_via_post"]] == ["c1", "c2", "c3"]


def test_bad_back_relations_are_400(blog):
    c = Client(blog["url"])
    url = f"/api/collections/bposts/records/{blog['p1']}"
    assert_error(c.get(url, params={"expand": "bcomments_via_nope"}), 400)
    assert_error(c.get(url, params={"expand": "nope_via_post"}), 400)
    assert_error(c.get(url, params={"expand": "bcomments_via_author"}), 400)  # points elsewhere
    assert_error(c.get(url, params={"expand": "bcomments_via_secretpost"}), 400)  # a hidden field


def test_cached_list_follows_new_back_related_records(blog, shared_admin):
    c = Client(blog["url"])
    params = {"expand": "bcomments_via_post", "filter": f"id = '{blog['p2']}'"}
    first = c.get("/api/collections/bposts/records", params=params).json()["items"][0]
    assert [x["body"] for x in first["expand"]["bcomments_via_post"]] == ["c4"]
    shared_admin.post("/api/collections/bcomments/records", json={"body": "c5", "post": blog["p2"]})
    again = c.get("/api/collections/bposts/records", params=params).json()["items"][0]
    assert [x["body"] for x in again["expand"]["bcomments_via_post"]] == ["c4", "c5"]
