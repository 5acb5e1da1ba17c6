"""The adversarial review's HTTP findings (issue 12, items 8, 10 and 14): HTTP/2 off on
every listener, X-Forwarded-For read as one list from all its lines, strict request
framing (one Content-Length, never with Transfer-Encoding, CRLF only, no obs-fold,
one Host), no encoded path separators or dot-segments, and no library version in the
answers. Framing cases go over raw sockets so that no client library tidies them."""
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time

import pytest
import requests

from conftest import BIN, Client, Server, assert_error, direct_url, free_port, make_superuser

PROXY = ["--trusted-proxies=127.0.0.1"]


@pytest.fixture(scope="module")
def srv():
    """A server behind a trusted proxy on this host (127.0.0.1), with a public
    collection `posts`."""
    d = tempfile.mkdtemp(prefix="basalt-it-")
    make_superuser(d)
    s = Server(d, PROXY).start()
    admin = Client(s.url)
    admin.token = admin.login("_superusers", "admin@example.com", "admin-password-1")
    r = admin.post("/api/collections", json={"name": "posts", "listRule": "", "viewRule": "",
                                             "fields": [{"name": "title", "type": "text"}]})
    assert r.status_code == 200, r.text
    s.post_id = admin.post("/api/collections/posts/records", json={"title": "p1"}).json()["id"]
    yield s
    rc = s.stop()
    assert rc == 0, f"basalt exited with {rc}"
    shutil.rmtree(d, ignore_errors=True)


def exchange(url, payload, source=None, timeout=3):
    """Sends raw bytes; returns (all bytes answered, whether the server closed the
    connection) — a connection left open is seen as a read timeout. In cluster mode
    to one instance directly (conftest.direct_url): these are Basalt's own parser's."""
    port = int(direct_url(url).rsplit(":", 1)[1])
    addr = (source, 0) if source else None
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=addr) as s:
        s.sendall(payload)
        data, closed = b"", False
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    closed = True
                    break
                data += chunk
        except socket.timeout:
            pass
        except ConnectionResetError:
            closed = True
    return data, closed


def statuses(data):
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", data)]


def body_of(data):
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def wait_logged(server, marker):
    """Makes a request for a path containing marker and waits until its access log
    line is written (the log is flushed once per loop turn)."""
    Client(server.url).get(f"/api/{marker}")
    path = os.path.join(server.dir, "server.log")
    for _ in range(200):
        with open(path, "rb") as f:
            if marker.encode() in f.read():
                return
        time.sleep(0.02)
    raise AssertionError("the access log line never came")


# ---- item 8: HTTP/2 is off ----

def h2_frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def h2_headers(stream, path):
    # HPACK: :method GET, :scheme http (static indexes), :path and :authority as
    # literals with an indexed name, no Huffman.
    block = b"\x82\x86" + b"\x04" + bytes([len(path)]) + path + b"\x01\x01x"
    return h2_frame(1, 0x05, stream, block)  # END_STREAM | END_HEADERS


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def starts_as_h2(data):
    # An HTTP/2 server's first bytes are a SETTINGS frame (type 4 on stream 0).
    return len(data) >= 9 and data[3] == 4 and data[5:9] == b"\0\0\0\0"


def assert_not_h2(data):
    assert not starts_as_h2(data), data[:64]
    assert data == b"" or data.startswith(b"HTTP/1.1 400"), data[:200]


def test_h2_preface_is_refused(srv):
    data, closed = exchange(srv.url, PREFACE + h2_frame(4, 0, 0))
    assert_not_h2(data)
    assert closed


def test_rapid_reset_never_reaches_the_handler(srv):
    frames = [PREFACE, h2_frame(4, 0, 0)]
    for i in range(300):
        sid = 2 * i + 1
        frames.append(h2_headers(sid, b"/api/h2probe-" + str(i).encode()))
        frames.append(h2_frame(3, 0, sid, struct.pack(">I", 8)))  # RST_STREAM CANCEL
    data, closed = exchange(srv.url, b"".join(frames))
    assert_not_h2(data)
    assert closed
    wait_logged(srv, "h2probe-done")
    with open(os.path.join(srv.dir, "server.log"), "rb") as f:
        log = f.read()
    assert b"h2probe-1" not in log and b"h2probe-299" not in log
    assert Client(srv.url).get("/api/health").status_code == 200


@pytest.mark.parametrize("upgrade", [b"h2c", b"H2C", b"h2c-14", b"h2c-16"])
def test_h2c_upgrade_is_ignored(srv, upgrade):
    req = (b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: " + upgrade +
           b"\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
    data, _ = exchange(srv.url, req)
    assert statuses(data) == [200], data[:300]
    assert b"101" not in data.split(b"\r\n", 1)[0]
    assert not starts_as_h2(data) and b"PRI * HTTP/2.0" not in data


@pytest.fixture(scope="module")
def tls_server():
    d = tempfile.mkdtemp(prefix="basalt-it-")
    cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    port = free_port()
    log = open(os.path.join(d, "server.log"), "ab")
    proc = subprocess.Popen([BIN, "serve", f"--http=127.0.0.1:{port}", f"--dir={d}", f"--tls-cert={cert}",
                             f"--tls-key={key}", "--rate-limit-anon=0", "--rate-limit-burst=0"],
                            stdout=log, stderr=log)
    for _ in range(200):
        try:
            if requests.get(f"https://127.0.0.1:{port}/api/health", verify=cert, timeout=1).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.05)
    yield port, cert
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    log.close()
    shutil.rmtree(d, ignore_errors=True)


def tls_get(port, cert, alpn):
    ctx = ssl.create_default_context(cafile=cert)
    ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            chosen = s.selected_alpn_protocol()
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    return chosen, data


def test_tls_alpn_offers_only_http11(tls_server):
    port, cert = tls_server
    chosen, data = tls_get(port, cert, ["h2", "http/1.1"])
    assert chosen == "http/1.1"
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    # A client that offers only h2 gets no protocol and HTTP/1.1 answers.
    chosen, data = tls_get(port, cert, ["h2"])
    assert chosen is None
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    # Nor does TLS reveal the library version.
    assert b"h2o" not in data.lower()


# ---- item 10: X-Forwarded-For is one list, read from the right ----

def metrics_status(srv, xff_lines, extra=b""):
    req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-Forwarded-For: " + v + b"\r\n" for v in xff_lines)
    data, _ = exchange(srv.url, req + extra + b"Connection: close\r\n\r\n")
    return statuses(data)[0], data


def test_xff_client_line_before_proxy_line_does_not_win(srv):
    # The client sends its own line; the proxy (127.0.0.1, trusted) appends the real
    # client's address as a second line. The client is 203.0.113.9, not loopback.
    st, data = metrics_status(srv, [b"127.0.0.1", b"203.0.113.9"])
    assert st == 401, data[:300]
    # The same as one line, and with more lines and empty elements.
    assert metrics_status(srv, [b"127.0.0.1, 203.0.113.9"])[0] == 401
    assert metrics_status(srv, [b"127.0.0.1", b"::1", b"203.0.113.9, "])[0] == 401
    assert metrics_status(srv, [b"127.0.0.1,,", b" 203.0.113.9 ", b","])[0] == 401
    # The client's hop, then our own proxies (trusted, skipped) to the right.
    assert metrics_status(srv, [b"127.0.0.5", b"203.0.113.9", b"127.0.0.1"])[0] == 401
    # A request from the proxy's own host, as the proxy says, is local.
    assert metrics_status(srv, [b"127.0.0.1"])[0] == 200


@pytest.mark.parametrize("hop", [
    b"unknown", b"203.0.113.9:4711", b"[::1]", b"1" * 70, b"127.0.0.1x", b"127.0.0.1 203.0.113.9",
    b"203.0.113.256", b"0x7f.1", b"127.1", b"127.000.000.001",
])
def test_xff_malformed_decisive_hop_is_refused(srv, hop):
    # The hop that decides (the rightmost untrusted one) is not an address: Basalt
    # cannot know the client, and must neither trust what lies to its left nor fall
    # back to the (loopback) proxy.
    st, data = metrics_status(srv, [b"127.0.0.1", hop])
    assert st == 400, data[:300]
    assert b"X-Forwarded-For" in body_of(data)[1]


def test_forwarded_and_x_real_ip_are_not_believed(srv):
    assert metrics_status(srv, [b"203.0.113.9"], b"Forwarded: for=127.0.0.1\r\nX-Real-IP: 127.0.0.1\r\n")[0] == 401
    # Without X-Forwarded-For the client is the peer (the proxy itself), whatever
    # the other headers claim.
    st, _ = metrics_status(srv, [], b"Forwarded: for=203.0.113.9\r\nX-Real-IP: 203.0.113.9\r\n")
    assert st == 200


def test_xff_cannot_dodge_the_anonymous_rate_limit(tmpdir_path):
    s = Server(tmpdir_path, PROXY + ["--rate-limit-anon=5", "--rate-limit-burst=0", "--rate-limit-user=0",
                                     "--rate-limit-auth=0"]).start()
    try:
        seen = []
        for i in range(12):
            # The client's own line varies; the proxy's line (the real client) does not.
            # /api/collections is rate-limited: an anonymous caller gets 401 or 403
            # there, and a 429 once past 5 requests in the period.
            req = (b"GET /api/collections HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.9.0." + str(i).encode() +
                   b"\r\nX-Forwarded-For: 198.51.100.7\r\nConnection: close\r\n\r\n")
            seen.append(statuses(exchange(s.url, req)[0])[0])
        assert seen.count(429) >= 7, seen
        # An untrusted peer's X-Forwarded-For is not read at all: from 127.0.0.2
        # (not a trusted proxy) every spoofed address shares the peer's budget.
        seen = []
        for i in range(12):
            req = (b"GET /api/collections HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.8.0." + str(i).encode() +
                   b"\r\nConnection: close\r\n\r\n")
            seen.append(statuses(exchange(s.url, req, source="127.0.0.2")[0])[0])
        assert seen.count(429) >= 7, seen
    finally:
        assert s.stop() == 0


# ---- item 14: strict framing ----

def refused(srv, payload):
    """The request is refused with a PocketBase-shaped 400, nothing after it on the
    connection is served, and the connection is closed."""
    data, closed = exchange(srv.url, payload)
    assert statuses(data) == [400], data[:400]
    assert closed, data[:400]
    return data


SMUGGLED = b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n"


def test_two_different_content_lengths(srv):
    data = refused(srv, b"POST /api/collections/posts/records HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 2\r\nContent-Length: 41\r\n\r\n{}" + SMUGGLED)
    assert b"Content-Length" in body_of(data)[1]
    # libh2o frames by the first: here the whole rest, which a reader of the second
    # takes for a body of 2 and a second request.
    whole = str(len(b"{}" + SMUGGLED)).encode()
    refused(srv, b"POST /api/health HTTP/1.1\r\nHost: x\r\nContent-Length: " + whole +
            b"\r\ncontent-length: 2\r\n\r\n{}" + SMUGGLED)
    refused(srv, b"POST /api/health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 02\r\n\r\n{}")


def test_identical_content_lengths_are_one(srv):
    # The same value twice cannot be read two ways (RFC 9110 8.6 lets a recipient
    # take it as one).
    data, _ = exchange(srv.url, b"POST /api/health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n"
                                b"Connection: close\r\n\r\n{}")
    assert statuses(data) == [405], data[:300]


@pytest.mark.parametrize("head", [
    b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
    b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
])
def test_content_length_with_transfer_encoding(srv, head):
    # A proxy framing by Content-Length sees one request; by Transfer-Encoding the
    # body ends at "0" and a second request follows. Neither is served.
    data = refused(srv, b"POST /api/health HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n0\r\n\r\n" + SMUGGLED)
    assert b"\"status\":400" in body_of(data)[1]


@pytest.mark.parametrize("payload", [
    b"GET /api/health HTTP/1.1\nHost: x\n\n",
    b"GET /api/health HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n",
    b"GET /api/health HTTP/1.1\nHost: x\r\n\r\n",
    b"GET /api/health HTTP/1.1\r\nHost: x\r\n\n",
    b"\nGET /api/health HTTP/1.1\r\nHost: x\r\n\r\n",
])
def test_bare_lf_is_refused(srv, payload):
    refused(srv, payload)


@pytest.mark.parametrize("payload", [
    b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n",
    b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1\r\n 127.0.0.1\r\n\r\n",
    b"POST /api/health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n 0\r\n\r\n{}",
])
def test_obs_fold_is_refused(srv, payload):
    refused(srv, payload)


def test_host_header(srv):
    refused(srv, b"GET /api/health HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n")
    refused(srv, b"GET /api/health HTTP/1.1\r\n\r\n")
    # HTTP/1.0 has no Host requirement.
    data, _ = exchange(srv.url, b"GET /api/health HTTP/1.0\r\n\r\n")
    assert statuses(data) == [200], data[:300]


def test_good_requests_still_pass(srv):
    # One leading empty line is tolerated (RFC 9112 2.2), pipelining works, a
    # chunked body and a Content-Length body both arrive.
    data, _ = exchange(srv.url, b"\r\nGET /api/health HTTP/1.1\r\nHost: x\r\n\r\n"
                                b"POST /api/health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
                                b"POST /api/health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
                                b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert statuses(data) == [200, 405, 405, 200], data


def test_expect_continue_and_large_bodies_still_pass(srv):
    # The head is checked after the body arrived behind a 100 Continue, and after a
    # body large enough to move libh2o's input buffer.
    port = int(direct_url(srv.url).rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /api/health HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 100")
        s.sendall(b"{}")
        assert s.recv(4096).startswith(b"HTTP/1.1 405")
    big = b"a" * 3_000_000
    data, _ = exchange(srv.url, b"POST /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " +
                       str(len(big)).encode() + b"\r\n\r\n" + big, timeout=10)
    assert statuses(data) == [405], data[:300]
    chunks = b"".join(b"%x\r\n" % 65536 + b"b" * 65536 + b"\r\n" for _ in range(40)) + b"0\r\n\r\n"
    data, _ = exchange(srv.url, b"POST /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                b"Transfer-Encoding: chunked\r\n\r\n" + chunks, timeout=10)
    assert statuses(data) == [405], data[:300]


# ---- item 14: paths ----

@pytest.mark.parametrize("path", [
    "/api/collections/posts%2frecords", "/api/collections/posts%2Frecords",
    "/api/collections%2fposts/records", "/api/collections/posts/records%2f{id}",
])
def test_encoded_slash_is_not_a_separator(srv, path):
    data, _ = exchange(srv.url, f"GET {path.format(id=srv.post_id)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                       .encode())
    st = statuses(data)[0]
    assert st == 400, data[:300]
    assert b"p1" not in data
    assert b"\"status\":400" in body_of(data)[1]


@pytest.mark.parametrize("path", [
    "/api/collections/x/%2e%2e/posts/records", "/api/collections/x/%2E%2E/posts/records",
    "/api/collections/x/.%2e/posts/records", "/api/collections/x/%2e./posts/records",
    "/api/collections/x/../posts/records", "/api/collections/posts/./records", "/api/collections/posts/%2e/records",
    "/api/collections/posts/records/..", "/api/collections/posts/records/%2e%2e",
    "/api/x/../../api/collections/posts/records", "/api/collections/posts/records/.",
])
def test_dot_segments_are_refused(srv, path):
    data, _ = exchange(srv.url, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert statuses(data) == [400], data[:300]
    assert b"p1" not in data


@pytest.mark.parametrize("target", [
    "/api/collections/posts%zz/records", "/api/collections/posts/records%2", "/api/collections/po%0asts/records",
    "/api/collections/posts/records/%7f", "http://x/api/collections/posts/records", "api/collections/posts/records",
    "*",
])
def test_malformed_targets_are_refused(srv, target):
    data, _ = exchange(srv.url, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert statuses(data) == [400], data[:300]


def test_double_encoding_is_decoded_once(srv):
    # %252f is "%2f" after one decoding: part of a name (a collection's, here, which
    # only superusers may view), never a separator.
    data, _ = exchange(srv.url, b"GET /api/collections/posts%252frecords HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert statuses(data) == [401], data[:300]
    data, _ = exchange(srv.url, b"GET /api/collections/posts/records%252f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert statuses(data) == [404], data[:300]


def test_encoded_ordinary_characters_still_route(srv):
    r = Client(srv.url).get("/api/collections/po%73ts/records")
    assert r.status_code == 200 and r.json()["totalItems"] == 1
    r = Client(srv.url).get("/api/collections/posts/records", params={"filter": "title = 'p1' && id != 'a/b'"})
    assert r.status_code == 200 and r.json()["totalItems"] == 1


# ---- item 14: no library version ----

def test_no_library_version_in_answers(srv):
    payloads = [
        b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /api/health HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",  # libh2o's own 400
        b"POST /api/health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST /api/health HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\n",  # libh2o's 417
        b"GET /api/realtime/ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GARBAGE\r\n\r\n",
    ]
    for p in payloads:
        data, _ = exchange(srv.url, p)
        assert data, p
        head = data.partition(b"\r\n\r\n")[0].lower()
        assert b"h2o" not in head and b"2.2.5" not in head, head
        server = [l for l in head.split(b"\r\n") if l.startswith(b"server:")]
        assert server in ([], [b"server: basalt"]), server
    r = requests.get(srv.url + "/api/health")
    assert "h2o" not in r.headers.get("server", "")
