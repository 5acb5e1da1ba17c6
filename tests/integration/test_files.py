"""File fields, uploads, downloads, thumbnails and file tokens, as PocketBase serves
them, on the local storage (test_files_s3.py runs the same tests on S3 through its
own `env` fixture).

Images are made here (zlib PNGs), so the tests need nothing beyond the standard
library."""
import base64
import json
import os
import struct
import time
import zlib

import pytest
import requests

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Client, Server, assert_error, direct_url, make_superuser


def png(w, h, color=(200, 30, 30)):
    """A valid RGB PNG of w x h pixels."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    row = b"\0" + bytes(color) * w
    raw = zlib.compress(row * h)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def bomb_png(w=50000, h=50000):
    """A PNG of a few hundred bytes whose header declares w x h pixels."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    return struct.unpack(">II", data[16:24])


class Env:
    """A server with the collections the tests use; `keys(coll, rec)` lists what the
    storage holds for a record (a folder listing here, a bucket listing on S3)."""

    def __init__(self, server, admin, keys):
        self.server = server
        self.url = server.url
        self.admin = admin
        self.keys = keys
        ok = lambda r: r.status_code == 200 or pytest.fail(r.text)
        ok(admin.post("/api/collections", json={
            "name": "fusers", "type": "auth", "listRule": "", "viewRule": "", "createRule": "",
            "updateRule": "id = @request.auth.id", "fields": []}))
        ok(admin.post("/api/collections", json={
            "name": "docs", "listRule": "", "viewRule": "", "createRule": "", "updateRule": "", "deleteRule": "",
            "fields": [
                {"name": "title", "type": "text"},
                {"name": "one", "type": "file", "maxSelect": 1,
                 "thumbs": ["50x50", "50x50t", "50x50b", "50x50f", "0x50", "100x0", "400x400f"]},
                {"name": "many", "type": "file", "maxSelect": 3, "maxSize": 2000},
                {"name": "pics", "type": "file", "maxSelect": 2, "mimeTypes": ["image/png", "image/jpeg"]},
            ]}))
        self.docs = admin.get("/api/collections/docs").json()["id"]
        ok(admin.post("/api/collections", json={
            "name": "secret", "listRule": "owner = @request.auth.id", "viewRule": "owner = @request.auth.id",
            "createRule": "@request.auth.id != ''", "updateRule": "owner = @request.auth.id",
            "fields": [{"name": "owner", "type": "relation", "collectionId": "fusers", "maxSelect": 1},
                       {"name": "doc", "type": "file", "maxSelect": 1, "protected": True}]}))
        self.secret = admin.get("/api/collections/secret").json()["id"]
        self.users = {}
        for name in ("alice", "bob"):
            r = admin.post("/api/collections/fusers/records", json={
                "email": f"{name}@example.com", "password": "password-123", "passwordConfirm": "password-123"})
            ok(r)
            c = Client(self.url)
            c.token = c.login("fusers", f"{name}@example.com", "password-123")
            self.users[name] = (r.json()["id"], c)

    def file_url(self, coll, rec, name, **q):
        qs = "&".join(f"{k}={v}" for k, v in q.items())
        return f"{self.url}/api/files/{coll}/{rec}/{name}" + (f"?{qs}" if qs else "")


def local_keys(server):
    root = os.path.join(server.dir, "storage")

    def keys(coll, rec):
        base = os.path.join(root, coll, rec)
        out = []
        for d, _, files in os.walk(base):
            for f in files:
                out.append(os.path.relpath(os.path.join(d, f), base))
        return sorted(out)
    return keys


@pytest.fixture(scope="module")
def env(shared_server, shared_admin):
    return Env(shared_server, shared_admin, local_keys(shared_server))


def wait_for(pred, timeout=5.0):
    """Deletions run after the response, on the file pool: poll for them."""
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def create(env, files, data=None, client=None, coll="docs"):
    c = client or env.admin
    return c.post(f"/api/collections/{coll}/records", data=data or {}, files=files)


# ---- uploads ----

def test_upload_single_and_multiple_with_unique_names(env):
    r = create(env, [("one", ("My Photo.PNG", png(20, 10), "image/png")),
                     ("many", ("notes.txt", b"hello", "text/plain")),
                     ("many", ("a.txt", b"second", "text/plain"))], {"title": "t"})
    assert r.status_code == 200, r.text
    rec = r.json()
    import re
    # PocketBase's names: snake_case base, "_", 10 random chars of [a-z0-9], extension.
    assert re.fullmatch(r"my_photo_[a-z0-9]{10}\.PNG", rec["one"]), rec
    assert re.fullmatch(r"notes_[a-z0-9]{10}\.txt", rec["many"][0]), rec
    assert re.fullmatch(r"a[a-z0-9]{10}_[a-z0-9]{10}\.txt", rec["many"][1]), rec  # short base padded
    assert sorted(env.keys(env.docs, rec["id"])) == sorted([rec["one"], *rec["many"]])
    got = requests.get(env.file_url("docs", rec["id"], rec["many"][0]))
    assert got.status_code == 200 and got.content == b"hello"
    # The same original name twice gives two names.
    r2 = create(env, [("one", ("My Photo.PNG", png(20, 10), "image/png"))])
    assert r2.json()["one"] != rec["one"]
    # The record reads back with its names (JSON array for multiple, string for single).
    v = env.admin.get(f"/api/collections/docs/records/{rec['id']}").json()
    assert v["one"] == rec["one"] and v["many"] == rec["many"]


def test_sniffed_type_not_the_claimed_one(env):
    # Claimed image/png, holds text: the field that wants images refuses it.
    r = create(env, [("pics", ("fake.png", b"just text, not an image", "image/png"))])
    body = assert_error(r, 400, "pics", "validation_invalid_mime_type")
    assert "text/plain" in body["data"]["pics"]["message"]
    # Claimed text/plain, holds a PNG: accepted, and served as image/png.
    r = create(env, [("pics", ("real.txt", png(4, 4), "text/plain"))])
    assert r.status_code == 200, r.text
    name = r.json()["pics"][0]
    got = requests.get(env.file_url("docs", r.json()["id"], name))
    assert got.headers["content-type"] == "image/png"
    # HTML is served sandboxed, never as an active document of the API's origin.
    r = create(env, [("many", ("x.html", b"<html><script>alert(1)</script></html>", "text/html"))])
    got = requests.get(env.file_url("docs", r.json()["id"], r.json()["many"][0]))
    assert "sandbox" in got.headers["content-security-policy"]
    assert got.headers["x-content-type-options"] == "nosniff"


def test_max_select_and_max_size(env):
    files = [("many", (f"f{i}.txt", b"x", "text/plain")) for i in range(4)]
    assert_error(create(env, files), 400, "many", "validation_too_many_files")
    assert_error(create(env, [("many", ("big.txt", b"x" * 2001, "text/plain"))]), 400, "many",
                 "validation_file_size_limit")
    # The default maxSize (5 MiB) applies where the field sets none.
    assert_error(create(env, [("one", ("big.bin", b"\0" * (5 * 1024 * 1024 + 1), "x/y"))]), 400, "one",
                 "validation_file_size_limit")
    # Nothing was stored for refused uploads: no record folder appeared.
    r = create(env, [("many", ("ok.txt", b"x" * 2000, "text/plain"))])
    assert r.status_code == 200


def test_single_field_keeps_the_last_file(env):
    r = create(env, [("one", ("first.txt", b"1", "text/plain")), ("one", ("second.txt", b"2", "text/plain"))])
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["one"].startswith("second_")
    # The dropped upload does not stay behind as an orphan.
    assert wait_for(lambda: env.keys(env.docs, rec["id"]) == [rec["one"]]), env.keys(env.docs, rec["id"])


def test_unknown_file_field_and_claimed_names(env):
    assert_error(create(env, [("title", ("t.txt", b"x", "text/plain"))]), 400)
    assert_error(create(env, [("nope", ("t.txt", b"x", "text/plain"))]), 400)
    # A client cannot put another record's file name into its own field.
    other = create(env, [("one", ("mine.txt", b"secret", "text/plain"))]).json()
    r = env.admin.post("/api/collections/docs/records", json={"one": other["one"]})
    assert_error(r, 400, "one", "validation_invalid_file")


def test_update_modifiers_and_replacement(env):
    rec = create(env, [("many", ("a.txt", b"aaa", "text/plain")), ("one", ("o.txt", b"o1", "text/plain"))]).json()
    rid = rec["id"]
    a = rec["many"][0]
    # many+ appends.
    r = env.admin.patch(f"/api/collections/docs/records/{rid}", files=[("many+", ("bee.txt", b"bbb", "text/plain"))])
    assert r.status_code == 200, r.text
    many = r.json()["many"]
    assert many[0] == a and many[1].startswith("bee_") and len(many) == 2
    # +many prepends.
    r = env.admin.patch(f"/api/collections/docs/records/{rid}", files=[("+many", ("cee.txt", b"ccc", "text/plain"))])
    many = r.json()["many"]
    assert many[0].startswith("cee_") and many[1:] == [a, many[2]]
    # many- removes by name, and the file leaves the storage.
    r = env.admin.patch(f"/api/collections/docs/records/{rid}", json={"many-": [a]})
    assert a not in r.json()["many"] and len(r.json()["many"]) == 2
    assert wait_for(lambda: a not in env.keys(env.docs, rid))
    assert requests.get(env.file_url("docs", rid, a)).status_code == 404
    # A plain upload under the field's name replaces, keeping the names sent with it.
    keep = r.json()["many"][0]
    drop = r.json()["many"][1]
    r = env.admin.patch(f"/api/collections/docs/records/{rid}", data={"many": keep},
                        files=[("many", ("dee.txt", b"ddd", "text/plain"))])
    assert r.status_code == 200, r.text
    many = r.json()["many"]
    assert many[0] == keep and many[1].startswith("dee_") and drop not in many
    assert wait_for(lambda: drop not in env.keys(env.docs, rid))
    # Replacing a single file deletes the old one.
    old_one = rec["one"]
    r = env.admin.patch(f"/api/collections/docs/records/{rid}", files=[("one", ("o2.txt", b"o2", "text/plain"))])
    assert r.json()["one"] != old_one
    assert wait_for(lambda: old_one not in env.keys(env.docs, rid))
    # Clearing a field deletes its files.
    cur = r.json()["one"]
    r = env.admin.patch(f"/api/collections/docs/records/{rid}", json={"one": None})
    assert r.json()["one"] == ""
    assert wait_for(lambda: cur not in env.keys(env.docs, rid))
    # An update that fails validation leaves no upload behind.
    before = env.keys(env.docs, rid)
    r = env.admin.patch(f"/api/collections/docs/records/{rid}",
                        files=[("many+", (f"z{i}.txt", b"z", "text/plain")) for i in range(3)])
    assert_error(r, 400, "many", "validation_too_many_files")
    time.sleep(0.3)
    assert env.keys(env.docs, rid) == before


def test_deleting_the_record_deletes_its_files(env):
    rec = create(env, [("one", ("pic.png", png(100, 60), "image/png"))]).json()
    assert requests.get(env.file_url("docs", rec["id"], rec["one"], thumb="50x50")).status_code == 200
    assert len(env.keys(env.docs, rec["id"])) == 2  # the original and its thumbnail
    assert env.admin.delete(f"/api/collections/docs/records/{rec['id']}").status_code == 204
    assert wait_for(lambda: env.keys(env.docs, rec["id"]) == [])
    assert requests.get(env.file_url("docs", rec["id"], rec["one"])).status_code == 404


def test_failed_create_leaves_no_files(env):
    # The create rule of "secret" needs a signed-in user: the upload is refused after
    # the files would have been stored, and they are removed.
    r = requests.post(env.url + "/api/collections/secret/records",
                      files=[("doc", ("x.txt", b"x", "text/plain"))])
    assert r.status_code in (400, 403), r.text
    # A duplicate id fails in the database after the files were stored.
    first = create(env, [("many", ("a.txt", b"a", "text/plain"))], {"id": "dupfilesid12345"}).json()
    r = create(env, [("many", ("b.txt", b"b", "text/plain"))], {"id": "dupfilesid12345"})
    assert r.status_code == 400, r.text
    time.sleep(0.3)
    assert wait_for(lambda: env.keys(env.docs, "dupfilesid12345") == first["many"])


def test_batch_multipart_uploads(env):
    payload = {"requests": [
        {"method": "POST", "url": "/api/collections/docs/records", "body": {"title": "b1"}},
        {"method": "POST", "url": "/api/collections/docs/records", "body": {"title": "b2"}},
    ]}
    r = env.admin.post("/api/batch", files=[
        ("@jsonPayload", (None, json.dumps(payload), "application/json")),
        ("requests.0.one", ("first.txt", b"one", "text/plain")),
        ("requests.1.many", ("mone.txt", b"m1", "text/plain")),
        ("requests.1.many", ("mtwo.txt", b"m2", "text/plain")),
    ])
    assert r.status_code == 200, r.text
    out = r.json()
    b1, b2 = out[0]["body"], out[1]["body"]
    assert b1["one"].startswith("first_") and b1["many"] == []
    assert [n[:5] for n in b2["many"]] == ["mone_", "mtwo_"]
    assert requests.get(env.file_url("docs", b2["id"], b2["many"][1])).content == b"m2"
    # A failing item rolls back the batch and its uploads.
    payload = {"requests": [
        {"method": "POST", "url": "/api/collections/docs/records", "body": {"id": "batchfileok1234"}},
        {"method": "POST", "url": "/api/collections/docs/records", "body": {"title": 5 * "x", "many": "nope.txt"}},
    ]}
    r = env.admin.post("/api/batch", files=[
        ("@jsonPayload", (None, json.dumps(payload), "application/json")),
        ("requests.0.one", ("first.txt", b"one", "text/plain"))])
    assert r.status_code == 400, r.text
    time.sleep(0.3)
    assert wait_for(lambda: env.keys(env.docs, "batchfileok1234") == [])
    # A part that names no item is refused.
    r = env.admin.post("/api/batch", files=[
        ("@jsonPayload", (None, json.dumps({"requests": payload["requests"][:1]}), "application/json")),
        ("requests.7.one", ("x.txt", b"x", "text/plain"))])
    assert_error(r, 400)


# ---- downloads ----

def test_range_etag_304_and_download(env):
    data = bytes(range(256)) * 10
    rec = create(env, [("one", ("data.bin", data, "application/octet-stream"))]).json()
    url = env.file_url("docs", rec["id"], rec["one"])
    r = requests.get(url)
    assert r.status_code == 200 and r.content == data
    assert r.headers["accept-ranges"] == "bytes"
    assert "max-age=" in r.headers["cache-control"]
    assert r.headers["content-disposition"].startswith("inline")
    etag = r.headers["etag"]
    assert requests.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert requests.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    r = requests.get(url, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(data)}"
    r = requests.get(url, headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == data[-5:]
    r = requests.get(url, headers={"Range": "bytes=2550-"})
    assert r.status_code == 206 and r.content == data[2550:]
    r = requests.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"
    # Several ranges, or nonsense: the whole file (RFC 9110 allows ignoring Range).
    assert requests.get(url, headers={"Range": "bytes=0-1,5-6"}).status_code == 200
    assert requests.get(url, headers={"Range": "lines=1-2"}).status_code == 200
    r = requests.get(url + "?download=1")
    assert r.headers["content-disposition"] == f'attachment; filename="{rec["one"]}"'


def test_missing_and_unlisted_names_are_404(env):
    rec = create(env, [("one", ("a.txt", b"a", "text/plain"))]).json()
    assert requests.get(env.file_url("docs", rec["id"], "other_0123456789.txt")).status_code == 404
    assert requests.get(env.file_url("docs", "nosuchrecord12", rec["one"])).status_code == 404
    assert requests.get(env.file_url("nosuchcoll", rec["id"], rec["one"])).status_code == 404
    # Another record's file through this record's URL.
    other = create(env, [("one", ("b.txt", b"b", "text/plain"))]).json()
    assert requests.get(env.file_url("docs", rec["id"], other["one"])).status_code == 404


@pytest.mark.parametrize("name", [
    "..", "...", ".hidden", "a..b.txt", "a%2F..%2Fb", "%2e%2e", "a%5Cb.txt", "a%00b.txt", "a%20b.txt",
    "x" * 151, "a;b.txt", "%C3%A9.txt",
])
def test_path_tricks_are_refused(env, name):
    rec = create(env, [("one", ("a.txt", b"a", "text/plain"))]).json()
    r = requests.get(f"{env.url}/api/files/docs/{rec['id']}/{name}")
    assert r.status_code in (400, 404), (name, r.status_code, r.text)
    assert r.content != b"a"


def test_path_tricks_raw(env):
    from conftest import raw_http
    rec = create(env, [("one", ("a.txt", b"a", "text/plain"))]).json()
    for path in [f"/api/files/docs/{rec['id']}/../../../etc/passwd",
                 f"/api/files/docs/{rec['id']}/..%2f..%2fetc%2fpasswd",
                 f"/api/files/docs/{rec['id']}/a\\b",
                 f"/api/files/docs/../{rec['id']}/{rec['one']}"]:
        out = raw_http(env.url, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        status = int(out.split(b" ", 2)[1])
        assert status in (400, 404), (path, out[:200])
        assert b"root:" not in out


# ---- thumbnails ----

@pytest.mark.parametrize("spec,size", [
    ("50x50", (50, 50)), ("50x50t", (50, 50)), ("50x50b", (50, 50)), ("50x50f", (50, 25)),
    ("0x50", (100, 50)), ("100x0", (100, 50)), ("400x400f", (200, 100)), ("100x100", (100, 100)),
    ("30x30", (200, 100)),  # not in the field's list: the original, as PocketBase does
    ("bogus", (200, 100)),
])
def test_thumbnails(env, spec, size):
    rec = create(env, [("one", ("pic.png", png(200, 100), "image/png"))]).json()
    url = env.file_url("docs", rec["id"], rec["one"], thumb=spec)
    r = requests.get(url)
    assert r.status_code == 200, r.text
    assert png_size(r.content) == size
    if size != (200, 100):
        assert r.headers["content-disposition"] == f'inline; filename="{spec}_{rec["one"]}"'
        # Made once and kept beside the original, as PocketBase lays them out.
        assert f"thumbs_{rec['one']}/{spec}_{rec['one']}" in env.keys(env.docs, rec["id"])
        again = requests.get(url)
        assert again.content == r.content and again.headers["etag"] == r.headers["etag"]
        assert requests.get(url, headers={"If-None-Match": r.headers["etag"]}).status_code == 304


def test_thumb_crop_modes_differ(env):
    # Top half red, bottom half blue: the top crop is red, the bottom crop blue.
    top = png(100, 50, (255, 0, 0))
    img = png(100, 100)  # placeholder to keep sizes; build a two-colour image by rows
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    rows = (b"\0" + bytes((255, 0, 0)) * 20) * 60 + (b"\0" + bytes((0, 0, 255)) * 20) * 60
    img = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20, 120, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    del top
    rec = create(env, [("one", ("two.png", img, "image/png"))]).json()
    t = requests.get(env.file_url("docs", rec["id"], rec["one"], thumb="50x50t")).content
    b = requests.get(env.file_url("docs", rec["id"], rec["one"], thumb="50x50b")).content
    assert png_size(t) == (50, 50) and png_size(b) == (50, 50)
    assert t != b


def test_crafted_and_bomb_images_are_served_as_originals(env):
    # A truncated PNG: no thumbnail can be made; the original is served, with the reason.
    broken = png(80, 80)[:60]
    rec = create(env, [("one", ("broken.png", broken, "image/png"))]).json()
    r = requests.get(env.file_url("docs", rec["id"], rec["one"], thumb="50x50"))
    assert r.status_code == 200 and r.content == broken
    assert "x-basalt-thumb-error" in r.headers
    # A decompression bomb: a few hundred bytes declaring 50,000 x 50,000 pixels. Its
    # header is read, its pixels never: refused, the original served.
    bomb = bomb_png()
    assert len(bomb) < 2000
    rec = create(env, [("one", ("bomb.png", bomb, "image/png"))]).json()
    t0 = time.time()
    r = requests.get(env.file_url("docs", rec["id"], rec["one"], thumb="50x50"))
    assert r.status_code == 200 and r.content == bomb
    assert "too large" in r.headers["x-basalt-thumb-error"]
    assert time.time() - t0 < 5
    # No thumbnail was stored for either.
    assert all(not k.startswith("thumbs_") for k in env.keys(env.docs, rec["id"]))
    # Not an image at all: the original.
    rec = create(env, [("one", ("t.txt", b"text", "text/plain"))]).json()
    assert requests.get(env.file_url("docs", rec["id"], rec["one"], thumb="50x50")).content == b"text"


# ---- protected files and file tokens ----

def test_protected_files_need_a_file_token(env):
    alice_id, alice = env.users["alice"]
    bob_id, bob = env.users["bob"]
    r = alice.post("/api/collections/secret/records", data={"owner": alice_id},
                   files=[("doc", ("private.txt", b"alice's secret", "text/plain"))])
    assert r.status_code == 200, r.text
    rec = r.json()
    url = env.file_url("secret", rec["id"], rec["doc"])
    # No token, or the auth token itself: 404, as PocketBase answers.
    assert requests.get(url).status_code == 404
    assert requests.get(url + "?token=" + alice.token).status_code == 404
    assert requests.get(url, headers={"Authorization": alice.token}).status_code == 404
    # A file token: served.
    r = alice.post("/api/files/token")
    assert r.status_code == 200, r.text
    tok = r.json()["token"]
    claims = json.loads(base64.urlsafe_b64decode(tok.split(".")[1] + "=="))
    assert claims["type"] == "file" and claims["id"] == alice_id
    assert claims["exp"] - time.time() <= 181
    got = requests.get(url + "?token=" + tok)
    assert got.status_code == 200 and got.content == b"alice's secret"
    assert "private" in got.headers["cache-control"]
    # Another user's valid file token: the view rule says no.
    btok = bob.post("/api/files/token").json()["token"]
    assert requests.get(url + "?token=" + btok).status_code == 404
    # Forged: the payload changed to bob's id, or the signature changed.
    h, p, s = tok.split(".")
    forged_p = base64.urlsafe_b64encode(json.dumps({**claims, "id": bob_id}).encode()).rstrip(b"=").decode()
    assert requests.get(url + f"?token={h}.{forged_p}.{s}").status_code == 404
    assert requests.get(url + f"?token={h}.{p}.{s[:-2]}AA").status_code == 404
    assert requests.get(url + "?token=garbage").status_code == 404
    # A superuser's file token passes any rule.
    stok = env.admin.post("/api/files/token").json()["token"]
    assert requests.get(url + "?token=" + stok).status_code == 200
    # No token endpoint without auth.
    assert_error(requests.post(env.url + "/api/files/token"), 401)


def test_unprotected_files_ignore_the_view_rule(env):
    # PocketBase serves unprotected files to anyone with the URL, whatever the view
    # rule (its apis/file.go checks the rule only for protected fields).
    alice_id, alice = env.users["alice"]
    r = env.admin.post("/api/collections", json={
        "name": "openfiles", "viewRule": "owner = @request.auth.id", "createRule": "",
        "fields": [{"name": "owner", "type": "relation", "collectionId": "fusers", "maxSelect": 1},
                   {"name": "f", "type": "file", "maxSelect": 1}]})
    assert r.status_code == 200, r.text
    rec = alice.post("/api/collections/openfiles/records", data={"owner": alice_id},
                     files=[("f", ("o.txt", b"open", "text/plain"))]).json()
    assert requests.get(f"{env.url}/api/collections/openfiles/records/{rec['id']}").status_code == 404
    assert requests.get(env.file_url("openfiles", rec["id"], rec["f"])).content == b"open"


def test_expired_file_token(tmpdir_path):
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path, ["--file-token-seconds=4"]).start()
    try:
        admin = Client(srv.url)
        admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        e = Env(srv, admin, local_keys(srv))
        alice_id, alice = e.users["alice"]
        rec = alice.post("/api/collections/secret/records", data={"owner": alice_id},
                         files=[("doc", ("p.txt", b"p", "text/plain"))]).json()
        url = e.file_url("secret", rec["id"], rec["doc"])
        tok = alice.post("/api/files/token").json()["token"]
        # Seconds-resolution expiry: a 4 s token is good for at least 3 s.
        assert requests.get(url + "?token=" + tok).status_code == 200
        time.sleep(5.2)
        assert requests.get(url + "?token=" + tok).status_code == 404
    finally:
        assert srv.stop() == 0


def test_collection_options_round_trip(env):
    c = env.admin.get("/api/collections/docs").json()
    f = {x["name"]: x for x in c["fields"]}
    assert f["many"]["maxSelect"] == 3 and f["many"]["maxSize"] == 2000 and f["many"]["protected"] is False
    assert f["pics"]["mimeTypes"] == ["image/png", "image/jpeg"]
    assert "50x50t" in f["one"]["thumbs"]
    r = env.admin.post("/api/collections", json={"name": "badthumbs", "fields": [
        {"name": "f", "type": "file", "thumbs": ["0x0"]}]})
    assert_error(r, 400, "fields.0")
    r = env.admin.post("/api/collections", json={"name": "badthumbs", "fields": [
        {"name": "f", "type": "file", "thumbs": ["100xabc"]}]})
    assert_error(r, 400, "fields.0")


def test_deleting_the_collection_deletes_its_files(env):
    r = env.admin.post("/api/collections", json={"name": "dropme", "createRule": "",
                                                  "fields": [{"name": "f", "type": "file", "maxSelect": 1}]})
    assert r.status_code == 200, r.text
    cid = r.json()["id"]
    rec = env.admin.post("/api/collections/dropme/records", files=[("f", ("x.txt", b"x", "text/plain"))]).json()
    assert env.keys(cid, rec["id"]) == [rec["f"]]
    assert env.admin.delete("/api/collections/dropme").status_code == 204
    assert wait_for(lambda: env.keys(cid, rec["id"]) == [])


def test_cleanup_removes_orphans_only(server, admin):
    """`basalt files cleanup`: a file left by a write that never committed (here put
    there by hand, as a killed process would leave it) goes; referenced files, their
    thumbnails and young files stay."""
    import subprocess
    from conftest import BIN, db_args
    r = admin.post("/api/collections", json={"name": "gc", "createRule": "", "viewRule": "",
                                              "fields": [{"name": "f", "type": "file", "maxSelect": 1,
                                                          "thumbs": ["10x10"]}]})
    cid = r.json()["id"]
    rec = admin.post("/api/collections/gc/records", files=[("f", ("keep.png", png(20, 20), "image/png"))]).json()
    assert requests.get(f"{server.url}/api/files/gc/{rec['id']}/{rec['f']}?thumb=10x10").status_code == 200
    root = os.path.join(server.dir, "storage", cid)
    orphan_in_record = os.path.join(root, rec["id"], "lost_0123456789.txt")
    orphan_record = os.path.join(root, "norecordhere123", "lost_9876543210.txt")
    young = os.path.join(root, rec["id"], "young_0123456789.txt")
    for p in (orphan_in_record, orphan_record, young):
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(b"x")
    old = time.time() - 7200
    os.utime(orphan_in_record, (old, old))
    os.utime(orphan_record, (old, old))
    run = lambda *a: subprocess.run([BIN, "files", "cleanup", f"--dir={server.dir}", *db_args(server.dir), *a],
                                    capture_output=True, text=True, timeout=60)
    dry = run("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "2 would be removed" in dry.stdout and os.path.exists(orphan_record)
    out = run()
    assert out.returncode == 0, out.stderr
    assert "2 removed" in out.stdout, out.stdout
    assert not os.path.exists(orphan_in_record) and not os.path.exists(orphan_record)
    assert os.path.exists(young)
    assert os.path.exists(os.path.join(root, rec["id"], rec["f"]))
    assert os.path.exists(os.path.join(root, rec["id"], f"thumbs_{rec['f']}", f"10x10_{rec['f']}"))
    assert requests.get(f"{server.url}/api/files/gc/{rec['id']}/{rec['f']}").status_code == 200


def test_concurrent_first_requests_make_one_thumbnail(env):
    import concurrent.futures
    rec = create(env, [("one", ("burst.png", png(300, 200), "image/png"))]).json()
    url = env.file_url("docs", rec["id"], rec["one"], thumb="50x50t")
    # One instance's requests share one making of the thumbnail (in process); in cluster
    # mode two instances may each make it once, so the burst goes to instance A itself.
    url = direct_url(env.url) + url[len(env.url):]
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        res = list(ex.map(lambda _: requests.get(url), range(8)))
    assert all(r.status_code == 200 and png_size(r.content) == (50, 50) for r in res)
    # Every answer is the one stored thumbnail (same ETag).
    assert len({r.headers["etag"] for r in res}) == 1
