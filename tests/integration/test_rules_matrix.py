"""The authorization matrix: rule shape x action x caller -> status and record set."""
import pytest

from conftest import Client, assert_error

OWNER = "owner = @request.auth.id"


@pytest.fixture(scope="module")
def world(shared_admin):
    a = shared_admin
    users = a.post("/api/collections", json={"name": "musers", "type": "auth", "createRule": "",
                                              "viewRule": "id = @request.auth.id"}).json()
    anon = Client(a.url)
    for email in ["owner@example.com", "other@example.com"]:
        r = anon.post("/api/collections/musers/records",
                      json={"email": email, "password": "password-123", "passwordConfirm": "password-123"})
        assert r.status_code == 200, r.text
    callers = {
        "anon": Client(a.url),
        "owner": Client(a.url, anon.login("musers", "owner@example.com", "password-123")),
        "other": Client(a.url, anon.login("musers", "other@example.com", "password-123")),
        "super": a,
    }
    owner_id = a.get("/api/collections/musers/records", params={"filter": "email = 'owner@example.com'"}).json()["items"][0]["id"]
    fields = [{"name": "title", "type": "text"},
              {"name": "secret", "type": "text", "hidden": True},
              {"name": "owner", "type": "relation", "collectionId": users["id"]}]
    shapes = {
        "owned": dict(listRule=OWNER, viewRule=OWNER, createRule=f"@request.auth.id != '' && {OWNER}",
                      updateRule=OWNER, deleteRule=OWNER),
        "public": dict(listRule="", viewRule="", createRule="", updateRule="", deleteRule=""),
        "locked": dict(listRule=None, viewRule=None, createRule=None, updateRule=None, deleteRule=None),
        "readonly": dict(listRule="", viewRule="", createRule=None, updateRule=None, deleteRule=None),
        "signedin": dict(listRule="@request.auth.id != ''", viewRule="@request.auth.id != ''",
                         createRule="@request.auth.id != ''", updateRule="@request.auth.id != ''",
                         deleteRule="@request.auth.id != ''"),
    }
    for name, rules in shapes.items():
        r = a.post("/api/collections", json={"name": f"m_{name}", "fields": fields, **rules})
        assert r.status_code == 200, r.text
    return {"callers": callers, "owner_id": owner_id, "admin": a}


def fresh(world, shape):
    a = world["admin"]
    r = a.post(f"/api/collections/m_{shape}/records",
               json={"title": "t", "secret": "s3cret", "owner": world["owner_id"]})
    assert r.status_code == 200, r.text
    return r.json()["id"]


# (shape, caller) -> expected status for view, update, delete, create; and whether list shows the record.
MATRIX = [
    ("owned", "anon", 404, 404, 404, 400, False),
    ("owned", "owner", 200, 200, 204, 200, True),
    ("owned", "other", 404, 404, 404, 400, False),
    ("owned", "super", 200, 200, 204, 200, True),
    ("public", "anon", 200, 200, 204, 200, True),
    ("public", "owner", 200, 200, 204, 200, True),
    ("public", "super", 200, 200, 204, 200, True),
    ("locked", "anon", 403, 403, 403, 403, None),
    ("locked", "owner", 403, 403, 403, 403, None),
    ("locked", "other", 403, 403, 403, 403, None),
    ("locked", "super", 200, 200, 204, 200, True),
    ("readonly", "anon", 200, 403, 403, 403, True),
    ("readonly", "owner", 200, 403, 403, 403, True),
    ("signedin", "anon", 404, 404, 404, 400, False),
    ("signedin", "other", 200, 200, 204, 200, True),
]


@pytest.mark.parametrize("shape,caller,view,update,delete,create,listed", MATRIX)
def test_matrix(world, shape, caller, view, update, delete, create, listed):
    c = world["callers"][caller]
    base = f"/api/collections/m_{shape}/records"
    rid = fresh(world, shape)
    # list
    r = c.get(base, params={"perPage": 500})
    if listed is None:
        assert_error(r, 403)
    else:
        assert r.status_code == 200
        ids = [x["id"] for x in r.json()["items"]]
        assert (rid in ids) == listed
        for x in r.json()["items"]:
            assert ("secret" in x) == (caller == "super"), x
    # view
    r = c.get(f"{base}/{rid}")
    assert r.status_code == view, r.text
    if view == 200:
        assert ("secret" in r.json()) == (caller == "super")
    # update
    r = c.patch(f"{base}/{rid}", json={"title": "changed"})
    assert r.status_code == update, r.text
    after = world["admin"].get(f"{base}/{rid}").json()
    assert after["title"] == ("changed" if update == 200 else "t")
    if update == 200:
        assert ("secret" in r.json()) == (caller == "super")
    # delete
    r = c.delete(f"{base}/{rid}")
    assert r.status_code == delete, r.text
    exists = world["admin"].get(f"{base}/{rid}").status_code == 200
    assert exists == (delete != 204)
    # create, owned by the owner
    before = world["admin"].get(base).json()["totalItems"]
    r = c.post(base, json={"title": "new", "owner": world["owner_id"]})
    assert r.status_code == create, r.text
    assert world["admin"].get(base).json()["totalItems"] == before + (1 if create == 200 else 0)


def test_hidden_fields_never_leak(world):
    owner = world["callers"]["owner"]
    rid = fresh(world, "owned")
    for r in [owner.get("/api/collections/m_owned/records"), owner.get(f"/api/collections/m_owned/records/{rid}")]:
        assert "s3cret" not in r.text
    assert_error(owner.get("/api/collections/m_owned/records", params={"filter": "secret = 's3cret'"}), 400)
    assert_error(owner.get("/api/collections/m_owned/records", params={"sort": "secret"}), 400)
    # through expand: the related user is visible to its owner, but never its hidden fields
    r = owner.get(f"/api/collections/m_owned/records/{rid}", params={"expand": "owner"})
    assert r.status_code == 200
    exp = r.json()["expand"]["owner"]
    assert "password" not in exp and "tokenKey" not in exp
    # the other user cannot see the owner record through expand (its view rule)
    other = world["callers"]["other"]
    r = other.get("/api/collections/m_public/records", params={"expand": "owner"})
    assert r.status_code == 200
    assert all("expand" not in x for x in r.json()["items"])
    assert_error(owner.get("/api/collections/m_owned/records", params={"expand": "title"}), 400)
    assert "s3cret" in world["admin"].get(f"/api/collections/m_owned/records/{rid}").text


def test_other_user_cannot_reassign_or_steal(world):
    other = world["callers"]["other"]
    owner = world["callers"]["owner"]
    rid = fresh(world, "owned")
    # the owner may not hand its record to someone else's id when the rule checks the body
    r = other.patch(f"/api/collections/m_owned/records/{rid}", json={"owner": world["owner_id"]})
    assert r.status_code == 404
    assert owner.get(f"/api/collections/m_owned/records/{rid}").status_code == 200
