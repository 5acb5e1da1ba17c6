"""Helpers for the mail, jobs and webhook suites: the SMTP fixture server (started
on a free port, stopped by PID) and mail reading, an HTTP receiver for webhooks,
and waiting on job states."""
import email
import email.policy
import glob
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from conftest import free_port, metrics_text

HERE = os.path.dirname(__file__)


class SmtpServer:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="basalt-smtp-")
        self.port = free_port()
        self.proc = subprocess.Popen(["/usr/bin/python3", os.path.join(HERE, "smtp_fixture.py"), str(self.port),
                                      self.dir], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", "the SMTP fixture did not start"

    def args(self):
        return ["--smtp-enabled=1", "--smtp-host=127.0.0.1", f"--smtp-port={self.port}",
                "--mail-sender-address=noreply@example.com", "--app-url=http://app.example.com"]

    def mails(self):
        out = []
        for p in sorted(glob.glob(os.path.join(self.dir, "*.eml"))):
            with open(p, "rb") as f:
                m = email.message_from_bytes(f.read(), policy=email.policy.default)
            out.append(m)
        return out

    def wait_for(self, to, n=1, timeout=20):
        """The n-th mail (1-based) to `to`, waiting for it."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = [m for m in self.mails() if to in m["X-Rcpt-To"]]
            if len(got) >= n:
                return got[n - 1]
            time.sleep(0.1)
        raise AssertionError(f"no mail #{n} to {to} within {timeout}s")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def body(m):
    return m.get_body(preferencelist=("html", "plain")).get_content()


def token_from(m, action):
    found = re.search(action + r"/([A-Za-z0-9_\-\.]+)", body(m))
    assert found, body(m)
    return found.group(1)


def otp_from(m):
    found = re.search(r"<strong>(\d{8})</strong>", body(m))
    assert found, body(m)
    return found.group(1)


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST (headers and body) and
    answers with the status codes given in turn (then 200)."""

    def __init__(self, statuses=()):
        self.requests = []
        self.statuses = list(statuses)
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("content-length", "0"))
                data = self.rfile.read(n)
                outer.requests.append((dict((k.lower(), v) for k, v in self.headers.items()), data))
                code = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/hook"

    def wait(self, n, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline and len(self.requests) < n:
            time.sleep(0.05)
        assert len(self.requests) >= n, f"{len(self.requests)} of {n} deliveries"
        return self.requests

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def wait_job(admin, job_id, states, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = admin.get(f"/api/basalt/jobs/{job_id}")
        assert r.status_code == 200, r.text
        if r.json()["state"] in states:
            return r.json()
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not in {states}: {r.json()}")


def wait_metrics(admin, *needles, timeout=15):
    """/metrics once it holds every needle (the queue gauges refresh every 2 s)."""
    deadline = time.time() + timeout
    while True:
        m = metrics_text(admin.url, admin.token)  # summed over the instances in cluster mode
        if all(n in m for n in needles) or time.time() > deadline:
            return m
        time.sleep(0.2)
