"""ETag / If-None-Match, Cache-Control and gzip on record reads."""
import gzip

from conftest import Client, raw_http


def make_cached(admin):
    admin.post("/api/collections", json={"name": "cached", "listRule": "", "viewRule": "", "updateRule": "",
                                         "fields": [{"name": "t", "type": "text"}]})
    return admin.post("/api/collections/cached/records", json={"t": "x" * 3000}).json()


def test_etag_and_304(server, admin):
    rec = make_cached(admin)
    c = Client(server.url)
    for path in [f"/api/collections/cached/records/{rec['id']}", "/api/collections/cached/records"]:
        r = c.get(path)
        tag = r.headers["etag"]
        assert tag.startswith('W/"') and r.headers["cache-control"] == "no-cache"
        assert "Authorization" in r.headers["vary"]
        r2 = c.get(path, headers={"If-None-Match": tag})
        assert r2.status_code == 304 and r2.content == b"" and r2.headers["etag"] == tag
        assert c.get(path, headers={"If-None-Match": '"other", ' + tag}).status_code == 304
        assert c.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
    # A write changes the ETag: a reader never keeps a stale copy.
    path = f"/api/collections/cached/records/{rec['id']}"
    tag = c.get(path).headers["etag"]
    c.patch(path, json={"t": "changed"})
    r = c.get(path, headers={"If-None-Match": tag})
    assert r.status_code == 200 and r.json()["t"] == "changed"
    # Authenticated responses are private.
    assert admin.get(path).headers["cache-control"] == "private, no-cache"


def test_gzip(server, admin):
    rec = make_cached(admin)
    req = (f"GET /api/collections/cached/records/{rec['id']} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n"
           "Connection: close\r\n\r\n").encode()
    data = raw_http(server.url, req, timeout=3)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-encoding: gzip" in head.lower()
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", body
        while True:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    assert b'"t":"' + b"x" * 3000 in gzip.decompress(body)
    # Small responses and clients without gzip get identity.
    r = Client(server.url).get("/api/health", headers={"Accept-Encoding": "gzip"})
    assert r.headers.get("content-encoding") is None
    r = Client(server.url).get(f"/api/collections/cached/records/{rec['id']}", headers={"Accept-Encoding": "identity"})
    assert r.headers.get("content-encoding") is None and r.json()["t"] == "x" * 3000
