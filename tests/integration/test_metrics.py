"""GET /metrics: Prometheus' own parser accepts it, the series move when exercised,
and access follows the metrics-access setting."""
import os
import subprocess

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Client, Server, assert_error, instance_urls, make_superuser

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def promtool():
    return subprocess.run([os.path.join(ROOT, "scripts", "promtool.sh")], capture_output=True, text=True,
                          check=True).stdout.strip()


def series(text):
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def all_series(url):
    """Each series summed over the instances (each counts its own, as Prometheus
    would scrape them): one instance's series on one instance."""
    out = {}
    for u in instance_urls(url):
        for k, v in series(Client(u).get("/metrics").text).items():
            out[k] = out.get(k, 0) + v
    return out


def test_metrics_parse_and_move(server, admin):
    c = Client(server.url)
    before = all_series(server.url)
    admin.post("/api/collections", json={"name": "m", "createRule": "", "listRule": "",
                                         "fields": [{"name": "t", "type": "text"}]})
    for i in range(5):
        assert c.post("/api/collections/m/records", json={"t": str(i)}).status_code == 200
    c.get("/api/collections/m/records")
    c.get("/api/nope")
    c.post("/api/collections/_superusers/auth-with-password", json={"identity": ADMIN_EMAIL, "password": "bad-bad-bad"})
    r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    check = subprocess.run([promtool(), "check", "metrics"], input=r.text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    after = all_series(server.url)

    def delta(key):
        return after.get(key, 0) - before.get(key, 0)

    assert delta('basalt_http_requests_total{route="/api/collections/:c/records",method="POST",status="200"}') == 5
    assert delta('basalt_http_requests_total{route="unmatched",method="any",status="404"}') == 1
    assert delta('basalt_logins_total{result="failure"}') == 1
    assert after['basalt_logins_total{result="success"}'] >= 1
    assert delta('basalt_store_jobs_total') >= 6
    assert delta('basalt_store_commits_total{result="ok"}') >= 1
    assert delta('basalt_store_query_duration_seconds_count') > 0
    assert after["basalt_active_users"] >= 1  # the superuser
    assert after["process_resident_memory_bytes"] > 1e6 and after["process_open_fds"] > 3
    assert after["basalt_http_requests_in_flight"] >= 1  # the scrape itself
    assert delta('basalt_http_request_duration_seconds_count{route="/api/collections/:c/records",method="POST"}') == 5
    buckets = [v for k, v in after.items() if k.startswith(
        'basalt_http_request_duration_seconds_bucket{route="/api/collections/:c/records",method="POST"')]
    assert buckets == sorted(buckets)  # cumulative
    # No secret ever appears: no token (JWTs start with eyJ), no password.
    assert "eyJ" not in r.text and ADMIN_PASSWORD not in r.text and "bad-bad-bad" not in r.text


def test_metrics_access_modes(tmpdir_path):
    make_superuser(tmpdir_path)
    for mode, anon_status in [("off", 404), ("token", 401), ("open", 200), ("loopback", 200)]:
        srv = Server(tmpdir_path, [f"--metrics-access={mode}", "--trusted-proxies=127.0.0.1"]).start()
        try:
            c = Client(srv.url)
            assert c.get("/metrics").status_code == anon_status
            tok = c.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
            assert Client(srv.url, tok).get("/metrics").status_code == (404 if mode == "off" else 200)
            if mode == "loopback":
                # A client behind the local proxy is not on loopback.
                assert_error(c.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}), 401)
        finally:
            assert srv.stop() == 0


def test_alert_rules_and_dashboard_refer_to_real_metrics(server):
    """The rules pass promtool's unit tests, and every metric the rules and the
    dashboard use is one Basalt exports (or a recording rule)."""
    import json
    import re
    import yaml
    p = promtool()
    d = os.path.join(ROOT, "deploy", "prometheus")
    assert subprocess.run([p, "check", "rules", "basalt.rules.yml"], cwd=d, capture_output=True).returncode == 0
    t = subprocess.run([p, "test", "rules", "basalt.tests.yml"], cwd=d, capture_output=True, text=True)
    assert t.returncode == 0, t.stdout + t.stderr
    exported = set()
    for line in Client(server.url).get("/metrics").text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            exported.add(name)
            if kind == "histogram":
                exported |= {name + "_bucket", name + "_sum", name + "_count"}
    rules = yaml.safe_load(open(os.path.join(d, "basalt.rules.yml")))
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dash = json.load(open(os.path.join(ROOT, "deploy", "grafana", "basalt-dashboard.json")))
    exprs += [t["expr"] for p_ in dash["panels"] for t in p_["targets"]]
    used = set()
    for e in exprs:
        used |= set(re.findall(r"\b(basalt_[a-z_]+|process_[a-z_]+|basalt:[a-z0-9_:]+)", e))
    missing = {m for m in used if m not in exported and m not in recorded}
    assert not missing, missing
    am = yaml.safe_load(open(os.path.join(d, "alertmanager.yml")))
    receivers = {r["name"] for r in am["receivers"]}
    assert am["route"]["receiver"] in receivers
    assert all(r["receiver"] in receivers for r in am["route"]["routes"])
