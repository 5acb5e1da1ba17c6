"""--public-dir (PocketBase's pb_public) and the dashboard mount at /_/: content types,
strong ETags and 304, gzip (computed and precompressed), caching by name, SPA
fallback, HEAD and Range, refusal of every way out of the folder, and changes on
disk picked up without a restart."""
import gzip
import os
import shutil
import tempfile
import time

import pytest
import requests

from conftest import Server, instance_urls, raw_http

BIG_HTML = "<!doctype html><title>t</title>" + "<p>hello</p>" * 400


@pytest.fixture
def site():
    d = tempfile.mkdtemp(prefix="basalt-static-")
    pub = os.path.join(d, "pub")
    os.makedirs(os.path.join(pub, "docs"))
    os.makedirs(os.path.join(pub, "assets"))
    with open(os.path.join(pub, "index.html"), "w") as f:
        f.write(BIG_HTML)
    with open(os.path.join(pub, "docs", "index.html"), "w") as f:
        f.write("<p>docs</p>")
    with open(os.path.join(pub, "assets", "app-LQ5M3KZE.js"), "w") as f:
        f.write("console.log('x');" * 50)
    with open(os.path.join(pub, "style.css"), "w") as f:
        f.write("body { color: red }\n" * 50)
    with open(os.path.join(pub, "style.css.gz"), "wb") as f:
        f.write(gzip.compress(b"PRECOMPRESSED"))
    with open(os.path.join(pub, "logo.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    with open(os.path.join(pub, ".env"), "w") as f:
        f.write("SECRET=1")
    with open(os.path.join(d, "outside.txt"), "w") as f:
        f.write("outside")
    os.symlink(os.path.join(d, "outside.txt"), os.path.join(pub, "out.txt"))
    os.symlink(os.path.join(pub, "style.css"), os.path.join(pub, "in.css"))
    data = os.path.join(d, "data")
    os.makedirs(data)
    yield d, pub, data
    shutil.rmtree(d, ignore_errors=True)


def start(data, *args):
    return Server(data, list(args)).start()


def test_types_etag_304_and_caching(site):
    d, pub, data = site
    srv = start(data, f"--public-dir={pub}")
    try:
        r = requests.get(srv.url + "/", headers={"Accept-Encoding": "identity"})
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert r.text == BIG_HTML
        assert r.headers["cache-control"] == "no-cache"
        etag = r.headers["etag"]
        assert etag.startswith('"') and not etag.startswith("W/")
        r2 = requests.get(srv.url + "/index.html", headers={"If-None-Match": etag, "Accept-Encoding": "identity"})
        assert r2.status_code == 304 and r2.content == b""
        assert r2.headers["etag"] == etag
        js = requests.get(srv.url + "/assets/app-LQ5M3KZE.js")
        assert js.headers["content-type"].startswith("text/javascript")
        assert "immutable" in js.headers["cache-control"] and "max-age=31536000" in js.headers["cache-control"]
        png = requests.get(srv.url + "/logo.png")
        assert png.headers["content-type"] == "image/png"
        assert png.content.startswith(b"\x89PNG")
        assert "immutable" not in png.headers["cache-control"]
        # The API keeps its paths whatever the folder holds.
        assert requests.get(srv.url + "/api/health").json()["code"] == 200
        r = requests.get(srv.url + "/missing.txt")
        assert r.status_code == 404 and r.json()["status"] == 404
    finally:
        assert srv.stop() == 0


def test_gzip_computed_and_precompressed(site):
    d, pub, data = site
    srv = start(data, f"--public-dir={pub}")
    try:
        r = requests.get(srv.url + "/", headers={"Accept-Encoding": "gzip"}, stream=True)
        raw = r.raw.read()
        assert r.headers["content-encoding"] == "gzip"
        assert r.headers["vary"] == "Accept-Encoding"
        assert gzip.decompress(raw).decode() == BIG_HTML
        assert len(raw) < len(BIG_HTML)
        plain = requests.get(srv.url + "/", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert plain.headers["etag"] != r.headers["etag"]  # one strong ETag per representation
        refused = requests.get(srv.url + "/", headers={"Accept-Encoding": "gzip;q=0"})
        assert "content-encoding" not in refused.headers
        # A NAME.gz beside the file is what gzip clients get.
        r = requests.get(srv.url + "/style.css", headers={"Accept-Encoding": "gzip"}, stream=True)
        assert gzip.decompress(r.raw.read()) == b"PRECOMPRESSED"
        # Images are not compressed again.
        r = requests.get(srv.url + "/logo.png", headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in r.headers
    finally:
        assert srv.stop() == 0


def test_head_and_range(site):
    d, pub, data = site
    srv = start(data, f"--public-dir={pub}")
    try:
        h = requests.head(srv.url + "/", headers={"Accept-Encoding": "identity"})
        assert h.status_code == 200 and h.content == b""
        assert int(h.headers["content-length"]) == len(BIG_HTML)
        r = requests.get(srv.url + "/", headers={"Range": "bytes=0-8", "Accept-Encoding": "gzip"})
        assert r.status_code == 206 and r.text == BIG_HTML[:9]
        assert r.headers["content-range"] == f"bytes 0-8/{len(BIG_HTML)}"
        r = requests.get(srv.url + "/", headers={"Range": "bytes=-5"})
        assert r.status_code == 206 and r.text == BIG_HTML[-5:]
        r = requests.get(srv.url + "/", headers={"Range": f"bytes={len(BIG_HTML)}-"})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(BIG_HTML)}"
        # If-Range naming another version: the whole file.
        r = requests.get(srv.url + "/", headers={"Range": "bytes=0-8", "If-Range": '"old"'})
        assert r.status_code == 200 and len(r.text) == len(BIG_HTML)
        r = requests.post(srv.url + "/index.html")
        assert r.status_code == 405
    finally:
        assert srv.stop() == 0


def test_traversal_refused(site):
    d, pub, data = site
    srv = start(data, f"--public-dir={pub}")
    try:
        for path in ["/../outside.txt", "/%2e%2e/outside.txt", "/docs/%2e%2e/%2e%2e/outside.txt",
                     "/docs/..%2foutside.txt", "/index.html%00.png", "/.env", "/%2eenv"]:
            out = raw_http(srv.url, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            status = int(out.split(b" ", 2)[1])
            assert status in (400, 404), (path, out[:200])
            assert b"outside" not in out.split(b"\r\n\r\n", 1)[-1] and b"SECRET" not in out
        # A link out of the folder is not followed; one inside it is.
        assert requests.get(srv.url + "/out.txt").status_code == 404
        assert requests.get(srv.url + "/in.css").status_code == 200
    finally:
        assert srv.stop() == 0


def test_folders_spa_and_changes(site):
    d, pub, data = site
    srv = start(data, f"--public-dir={pub}", "--public-spa=1")
    try:
        r = requests.get(srv.url + "/docs", allow_redirects=False)
        assert r.status_code == 301 and r.headers["location"] == "/docs/"
        assert requests.get(srv.url + "/docs/").text == "<p>docs</p>"
        # SPA: a route of the app answers index.html; a missing asset stays 404.
        r = requests.get(srv.url + "/tasks/123")
        assert r.status_code == 200 and r.text == BIG_HTML
        assert requests.get(srv.url + "/missing.js").status_code == 404
        old = requests.get(srv.url + "/docs/").headers["etag"]
        with open(os.path.join(pub, "docs", "index.html"), "w") as f:
            f.write("<p>docs v2</p>")
        with open(os.path.join(pub, "new.txt"), "w") as f:
            f.write("new")
        # Each instance notices the folder's change itself (cluster mode: both serve it).
        deadline = time.time() + 10
        while time.time() < deadline and any(requests.get(u + "/new.txt").status_code != 200
                                             for u in instance_urls(srv.url)):
            time.sleep(0.2)
        r = requests.get(srv.url + "/docs/")
        assert r.text == "<p>docs v2</p>" and r.headers["etag"] != old
        assert requests.get(srv.url + "/new.txt").text == "new"
    finally:
        assert srv.stop() == 0


def test_bad_public_dir_is_named(site):
    d, pub, data = site
    import subprocess
    from conftest import BIN, db_args
    out = subprocess.run([BIN, "serve", "--http=127.0.0.1:0", f"--dir={data}", *db_args(data),
                          f"--public-dir={d}/nope"], capture_output=True, text=True, timeout=20)
    assert out.returncode != 0
    assert "public-dir" in out.stderr and "nope" in out.stderr


def test_dashboard_mount(site):
    d, pub, data = site
    admin = os.path.join(d, "admin")
    os.makedirs(admin)
    with open(os.path.join(admin, "index.html"), "w") as f:
        f.write("<!doctype html><title>dash</title>")
    srv = start(data, f"--admin-dir={admin}", f"--public-dir={pub}")
    try:
        r = requests.get(srv.url + "/_", allow_redirects=False)
        assert r.status_code == 301 and r.headers["location"] == "/_/"
        r = requests.get(srv.url + "/_/")
        assert r.text.endswith("<title>dash</title>")
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        # Hash routes and unknown dashboard paths come back to its page.
        assert requests.get(srv.url + "/_/collections").text == r.text
        # The public folder is still at /.
        assert requests.get(srv.url + "/").text == BIG_HTML
    finally:
        assert srv.stop() == 0
    # Not built: /_/ says how to build it.
    srv = start(data, "--admin-dir=auto")
    try:
        r = requests.get(srv.url + "/_/")
        if r.status_code == 404:
            assert "make web" in r.text
    finally:
        assert srv.stop() == 0
