"""The security battery: injection through every query parameter, traversal,
malformed and oversized multipart, request framing. Token attacks are in
test_auth.py and the authorization matrix in test_rules_matrix.py; `make security`
runs them together."""
import re

import pytest

from conftest import Client, assert_error, raw_http

INJECTIONS = [
    "' OR 1=1 --", "\" OR \"\"=\"", "1; DROP TABLE notes", "') UNION SELECT * FROM _superusers --",
    "title = '' OR 1=1", "title = 'x' || (SELECT 1)", "title = 'a'; DELETE FROM notes",
    "title = char(39)", "id = '1' UNION SELECT password FROM _superusers", "title ~ '%' ESCAPE ''",
]


@pytest.fixture(scope="module")
def notes(shared_admin):
    r = shared_admin.post("/api/collections", json={
        "name": "notes_sec", "listRule": "", "viewRule": "", "createRule": "",
        "fields": [{"name": "title", "type": "text"}, {"name": "secret", "type": "text", "hidden": True}]})
    assert r.status_code == 200, r.text
    for i in range(3):
        shared_admin.post("/api/collections/notes_sec/records", json={"title": f"n{i}", "secret": "top"})
    return shared_admin


@pytest.mark.parametrize("payload", INJECTIONS)
@pytest.mark.parametrize("param", ["filter", "sort", "fields", "expand"])
def test_injection_in_query_parameters(shared_server, notes, param, payload):
    c = Client(shared_server.url)
    r = c.get("/api/collections/notes_sec/records", params={param: payload})
    assert r.status_code in (200, 400), r.text
    if r.status_code == 200:
        # Whatever matched, it is a normal listing: no other table's rows, no secrets.
        body = r.json()
        assert set(body) == {"page", "perPage", "totalItems", "totalPages", "items"}
        assert body["totalItems"] in (0, 3, -1)
        assert "top" not in r.text and "password" not in r.text
    else:
        assert_error(r, 400)
    # The data is intact.
    assert notes.get("/api/collections/notes_sec/records").json()["totalItems"] == 3
    assert notes.get("/api/collections/_superusers/records").json()["totalItems"] >= 1


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_in_values_is_stored_verbatim(shared_server, notes, value):
    c = Client(shared_server.url)
    r = c.post("/api/collections/notes_sec/records", json={"title": value})
    assert r.status_code == 200, r.text
    assert c.get(f"/api/collections/notes_sec/records/{r.json()['id']}").json()["title"] == value
    notes.delete(f"/api/collections/notes_sec/records/{r.json()['id']}")


@pytest.mark.parametrize("path", [
    "/api/collections/..%2f..%2fetc%2fpasswd/records", "/api/collections/notes_sec/records/..%2f..%2fdata.db",
    "/api/collections/notes_sec/records/%00", "/api/../../etc/passwd", "/api/collections/notes_sec/records/a%2fb",
])
def test_traversal(shared_server, notes, path):
    r = Client(shared_server.url).get(path)
    assert r.status_code in (400, 401, 404), r.text
    assert "root:" not in r.text and "SQLite" not in r.text


@pytest.mark.parametrize("body,ctype", [
    (b"--B\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nunterminated", "multipart/form-data; boundary=B"),
    (b"no boundary here", "multipart/form-data"),
    (b"--B\r\nno headers end", "multipart/form-data; boundary=B"),
    (b"--B\r\nContent-Disposition: form-data\r\n\r\nx\r\n--B--\r\n", "multipart/form-data; boundary=B"),
    (b"--B\r\nContent-Disposition: form-data; name=\"@jsonPayload\"\r\n\r\n[1,2]\r\n--B--\r\n",
     "multipart/form-data; boundary=B"),
    (b"--B\r\nContent-Disposition: form-data; name=\"@jsonPayload\"\r\n\r\n{bad json\r\n--B--\r\n",
     "multipart/form-data; boundary=B"),
    (b"--" + b"x" * 300 + b"\r\n", "multipart/form-data; boundary=" + "x" * 300),
])
def test_malformed_multipart(shared_server, notes, body, ctype):
    c = Client(shared_server.url)
    r = c.post("/api/collections/notes_sec/records", data=body, headers={"Content-Type": ctype})
    assert_error(r, 400)
    assert notes.get("/api/collections/notes_sec/records").json()["totalItems"] == 3


def raw(server, payload):
    data = raw_http(server.url, payload, timeout=3)
    # Status lines; a response may follow the previous body without a line break.
    return [b"HTTP/1.1 " + m for m in re.findall(rb"HTTP/1\.1 (\d{3})", data)]


def test_request_framing(shared_server):
    # Invalid framing is refused.
    assert raw(shared_server, b"GET /api/health HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")[0].startswith(
        b"HTTP/1.1 400")
    assert raw(shared_server, b"POST /api/health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
               b"0\r\n\r\n")[0].startswith(b"HTTP/1.1 400")
    assert raw(shared_server, b"GET /api/health HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n")[0].startswith(
        b"HTTP/1.1 400")
    # With both Content-Length and Transfer-Encoding the request is refused and the
    # connection closed (RFC 9112 6.3), so the request that follows the chunked body's
    # "0" (which a proxy framing by Content-Length would take for body) is never
    # served. This used to assert the old behaviour (Transfer-Encoding won, the second
    # request was answered); issue 12 item 14 and test_sec_http.py cover the variants.
    lines = raw(shared_server, b"POST /api/health HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(lines) == 1 and lines[0].startswith(b"HTTP/1.1 400"), lines
