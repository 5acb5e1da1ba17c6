"""s3rver (npm, tests/s3/package.json) on a free loopback port in a temporary folder,
and in front of it a small proxy that checks every request's AWS SigV4 signature
(s3rver checks the access key but not the v4 signature itself), so that a request
Basalt signs wrongly fails as it would on AWS. Used by tests/integration/test_files_s3.py
and tests/cluster/test_cluster_files_jobs.py."""
import hashlib
import hmac
import http.client
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


S3_DIR = os.path.dirname(os.path.abspath(__file__))
ACCESS, SECRET, BUCKET = "S3RVER", "S3RVER", "files"



def _sign(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def check_sigv4(method, raw_path, headers, body, secret):
    """Returns None when the request is signed correctly for secret, else why not."""
    auth = headers.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return "not a SigV4 request"
    parts = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(","))
    cred = parts["Credential"].split("/")
    signed = parts["SignedHeaders"].split(";")
    payload_hash = headers.get("x-amz-content-sha256")
    if payload_hash != hashlib.sha256(body).hexdigest():
        return "x-amz-content-sha256 does not match the payload"
    if "host" not in signed or "x-amz-date" not in signed:
        return "host or x-amz-date not signed"
    path, _, query = raw_path.partition("?")
    pairs = sorted(urllib.parse.parse_qsl(query, keep_blank_values=True))
    cq = "&".join(f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}" for k, v in pairs)
    ch = "".join(f"{h}:{' '.join(headers.get(h, '').split())}\n" for h in signed)
    creq = "\n".join([method, path, cq, ch, ";".join(signed), payload_hash])
    scope = "/".join(cred[1:])
    sts = "\n".join(["AWS4-HMAC-SHA256", headers["x-amz-date"], scope,
                     hashlib.sha256(creq.encode()).hexdigest()])
    k = _sign(("AWS4" + secret).encode(), cred[1])
    for p in cred[2:]:
        k = _sign(k, p)
    want = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(want, parts["Signature"]) else "signature mismatch"


class SigV4Proxy:
    """Checks signatures, then forwards to s3rver. mode: "ok", "stall" (never answers)."""

    def __init__(self, upstream_port):
        proxy = self
        self.mode = "ok"
        self.rejected = []
        self.requests = 0

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def handle_any(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                proxy.requests += 1
                if proxy.mode == "stall":
                    time.sleep(30)
                    return
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                why = check_sigv4(self.command, self.path, hdrs, body, SECRET)
                if why is not None:
                    proxy.rejected.append(why)
                    msg = (f"<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>"
                           f"<Message>{why}</Message></Error>").encode()
                    self.send_response(403)
                    self.send_header("content-length", str(len(msg)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(msg)
                    return
                c = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                fwd = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                c.request(self.command, self.path, body=body if n else None, headers=fwd)
                r = c.getresponse()
                data = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                if self.command == "HEAD":
                    self.send_header("content-length", r.getheader("content-length") or "0")
                else:
                    self.send_header("content-length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                c.close()

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = handle_any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def ensure_s3rver():
    exe = os.path.join(S3_DIR, "node_modules", ".bin", "s3rver")
    if not os.path.exists(exe):
        out = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=S3_DIR, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, "npm ci in tests/s3 failed:\n" + out.stdout + out.stderr
    return exe


class S3rver:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="basalt-s3-")
        self.port = free_port()
        self.log = open(os.path.join(self.dir, "s3rver.log"), "wb")
        self.proc = subprocess.Popen([ensure_s3rver(), "-d", os.path.join(self.dir, "data"), "-a", "127.0.0.1",
                                      "-p", str(self.port), "--configure-bucket", BUCKET],
                                     stdout=self.log, stderr=self.log)
        end = time.time() + 30
        while time.time() < end:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert self.proc.poll() is None, "s3rver exited; see " + self.log.name
                time.sleep(0.1)
        raise RuntimeError("s3rver did not start")

    def keys(self, coll, rec):
        base = os.path.join(self.dir, "data", BUCKET, coll, rec)
        out = []
        for d, _, files in os.walk(base):
            for f in files:
                if f.endswith("._S3rver_object"):
                    out.append(os.path.relpath(os.path.join(d, f[:-len("._S3rver_object")]), base))
        return sorted(out)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def s3_args(port, secret=SECRET, timeout_ms=5000):
    return [f"--s3-endpoint=http://127.0.0.1:{port}", f"--s3-bucket={BUCKET}", f"--s3-access-key={ACCESS}",
            f"--s3-secret={secret}", "--s3-force-path-style=1", f"--s3-timeout-ms={timeout_ms}"]


@pytest.fixture(scope="module")
def s3():
    """One s3rver and its SigV4-checking proxy for a test module: (server, proxy)."""
    srv = S3rver()
    proxy = SigV4Proxy(srv.port)
    yield srv, proxy
    proxy.close()
    srv.stop()
