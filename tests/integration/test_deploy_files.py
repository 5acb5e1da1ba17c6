"""The deploy files (deploy/) checked by the tool made for each, and the HAProxy
configuration driven with real requests. A checker is skipped only when its tool is
not installed, with the reason."""
import configparser
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

import pytest
import requests
import yaml

from conftest import BIN, Server, free_port, make_superuser

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(REPO, "deploy")


# The checks of shipped files that involve neither Basalt's binary nor its backend run
# once, in the plain suite: under ASan, on PostgreSQL or on a cluster they would check
# the same files with the same tools again (the Prometheus rules' unit tests alone take
# 10-15 s on the loaded machine).
once = pytest.mark.skipif(os.environ.get("BASALT_TEST_BACKEND") == "postgres"
                          or "asan" in os.environ.get("BASALT_BIN", ""),
                          reason="checks shipped files with their own tools, not Basalt's binary or backend: "
                                 "runs once, in the plain suite")


def need(tool):
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (Debian package: "
                    f"{ {'haproxy': 'haproxy', 'systemd-analyze': 'systemd', 'promtool': 'prometheus', 'patroni': 'patroni', 'pgbackrest': 'pgbackrest'}.get(tool, tool)})")
    return path


@pytest.fixture(scope="module")
def tls_cert():
    d = tempfile.mkdtemp(prefix="basalt-deploy-")
    key, crt = os.path.join(d, "k.pem"), os.path.join(d, "c.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    both = os.path.join(d, "both.pem")
    with open(both, "w") as f:
        f.write(open(crt).read() + open(key).read())
    yield d, both
    shutil.rmtree(d, ignore_errors=True)


def haproxy_cfg(cert, extra=None):
    """The shipped haproxy.cfg with the certificate and error file paths of this machine,
    and with `extra` substitutions (regex -> replacement)."""
    with open(os.path.join(DEPLOY, "haproxy", "haproxy.cfg")) as f:
        cfg = f.read()
    cfg = cfg.replace("/etc/haproxy/certs/basalt.pem", cert)
    cfg = cfg.replace("/etc/haproxy/errors/", os.path.join(DEPLOY, "haproxy", "errors") + "/")
    for pat, rep in (extra or {}).items():
        cfg = re.sub(pat, rep, cfg, flags=re.M)
    return cfg


@once
def test_haproxy_config_is_valid(tls_cert):
    need("haproxy")
    d, cert = tls_cert
    path = os.path.join(d, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(haproxy_cfg(cert))
    out = subprocess.run(["haproxy", "-c", "-f", path], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[WARNING]" not in out.stdout + out.stderr, out.stdout + out.stderr


@pytest.fixture(scope="module")
def proxied(tls_cert):
    """The shipped HAProxy configuration in front of a real Basalt: every server line
    points at it, the listeners move to free loopback ports, and the process-level
    settings that need root (chroot, user, daemon, the system socket and log) go."""
    need("haproxy")
    d, cert = tls_cert
    data = tempfile.mkdtemp(prefix="basalt-deploy-srv-")
    make_superuser(data)
    srv = Server(data, ["--trusted-proxies=127.0.0.1", "--max-connections-per-ip=0"]).start()
    https, http = free_port(), free_port()
    cfg = haproxy_cfg(cert, {
        r"^\s*(chroot|user|group|daemon|stats socket|stats timeout|log /dev/log local1).*$": "",
        r"^(\s*)log /dev/log local0$": r"\1log stderr format short local0 notice",
        r"^(\s*)maxconn 100000$": r"\1maxconn 1000",
        r"^(\s*)bind :443 ": rf"\1bind 127.0.0.1:{https} ",
        r"^(\s*)bind :80$": rf"\1bind 127.0.0.1:{http}",
        r"^(\s*)bind 127\.0\.0\.1:500[01]$": rf"\1bind 127.0.0.1:{free_port()}",
        r"^(\s*server \S+) 10\.0\.0\.1\d:8090 check": rf"\1 127.0.0.1:{srv.port} check",
        r"^(\s*server \S+) 10\.0\.0\.2\d:5432 check port 8008": rf"\1 127.0.0.1:{free_port()} check port {free_port()}",
    })
    path = os.path.join(d, "run.cfg")
    with open(path, "w") as f:
        f.write(cfg)
    log = open(os.path.join(d, "haproxy.log"), "wb")
    p = subprocess.Popen(["haproxy", "-db", "-f", path], stdout=log, stderr=log)
    url = f"https://127.0.0.1:{https}"
    try:
        end = time.time() + 15
        while True:
            try:
                if requests.get(url + "/api/health?ready=1", verify=False, timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert p.poll() is None, open(os.path.join(d, "haproxy.log")).read()
            assert time.time() < end, "HAProxy with the shipped configuration did not pass traffic to Basalt"
            time.sleep(0.2)
        yield {"https": https, "http": http, "url": url, "data": data, "server": srv}
    finally:
        if p.poll() is None:
            p.terminate()
            p.wait(timeout=10)
        log.close()
        srv.stop()
        shutil.rmtree(data, ignore_errors=True)


def raw_tls(port, payload, alpn=("http/1.1",)):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(list(alpn))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            chosen = s.selected_alpn_protocol()
            if payload is None:
                return chosen, b""
            s.sendall(payload)
            data = b""
            try:
                while True:
                    c = s.recv(65536)
                    if not c:
                        break
                    data += c
            except (socket.timeout, ssl.SSLError):
                pass
    return chosen, data


def test_haproxy_terminates_tls_and_offers_http2(proxied):
    chosen, _ = raw_tls(proxied["https"], None, alpn=("h2", "http/1.1"))
    assert chosen == "h2"
    r = requests.get(proxied["url"] + "/api/health", verify=False, timeout=5)
    assert r.status_code == 200 and r.json()["code"] == 200
    assert "max-age" in r.headers.get("Strict-Transport-Security", "")
    # Plain HTTP is sent to HTTPS.
    r = requests.get(f"http://127.0.0.1:{proxied['http']}/api/health", allow_redirects=False, timeout=5)
    assert r.status_code == 301 and r.headers["Location"].startswith("https://")


def basalt_paths(proxied):
    """The paths Basalt's access log has seen (the requests that reached it): every
    instance's in cluster mode, where the request may reach either."""
    import json
    paths = []
    for line in proxied["server"].log_text().splitlines():
        if line.startswith("{") and '"module":"access"' in line:
            paths.append(json.loads(line).get("path", ""))
    return paths


def test_haproxy_smuggling_attempts(proxied):
    # Content-Length and Transfer-Encoding together. HAProxy 2.6 cannot refuse them with
    # a 400 (docs/deploy.md, "Request smuggling"): its HTTP/1 parser drops the
    # Content-Length before any rule runs, so no rule can see both. What it does instead
    # is checked here, in both header orders: the chunked framing wins, the client's
    # connection closes after one answer, and the request hidden after the body never
    # reaches Basalt (its access log is the proof; the control shows the probe would
    # be logged had it arrived).
    for n, heads in enumerate((b"Content-Length: 44\r\nTransfer-Encoding: chunked\r\n",
                               b"Transfer-Encoding: chunked\r\nContent-Length: 44\r\n")):
        smuggle = (b"POST /api/collections/users/auth-with-password HTTP/1.1\r\nHost: x\r\n"
                   b"Content-Type: application/json\r\n" + heads + b"\r\n"
                   b"0\r\n\r\nGET /api/smuggled-probe-%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
        _, data = raw_tls(proxied["https"], smuggle)
        assert data.count(b"HTTP/1.1 ") == 1, data
        assert b"connection: close" in data.lower(), data
        # Basalt refuses the pair itself (400, "both Content-Length and ..."): not this
        # answer, so HAProxy forwarded the chunked body without the Content-Length.
        assert b"both Content-Length and Transfer-Encoding" not in data, data
    time.sleep(0.5)  # Basalt's access log is buffered per worker for a moment
    _, data = raw_tls(proxied["https"], b"GET /api/smuggled-probe-control HTTP/1.1\r\nHost: x\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 404"), data
    paths = []
    end = time.time() + 10
    while "/api/smuggled-probe-control" not in paths and time.time() < end:
        time.sleep(0.2)
        paths = basalt_paths(proxied)
    assert "/api/smuggled-probe-control" in paths
    assert "/api/collections/users/auth-with-password" in paths  # the outer request did arrive
    assert not [p for p in paths if p.startswith("/api/smuggled-probe-") and not p.endswith("control")], paths
    # Two different lengths (the parser refuses them; equal ones it merges, as RFC 9110
    # allows), a Transfer-Encoding that is not chunked alone (refused by the rules).
    for payload in (
        b"POST /api/health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"POST /api/health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    ):
        _, data = raw_tls(proxied["https"], payload)
        # HAProxy's parser answers 422 to conflicting lengths, the rules 400; Basalt
        # would have answered 405 (POST /api/health): it never sees them.
        assert data.startswith((b"HTTP/1.1 400", b"HTTP/1.1 422")), data


def test_systemd_unit_verifies(tmp_path):
    need("systemd-analyze")
    with open(os.path.join(DEPLOY, "systemd", "basalt.service")) as f:
        unit = f.read()
    for key in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/basalt", "DynamicUser=yes",
                "PrivateTmp=yes", "CapabilityBoundingSet=", "SystemCallFilter=@system-service"):
        assert key in unit, key
    # verify needs the binary to exist: the one just built stands in for /usr/local/bin.
    path = tmp_path / "basalt.service"
    path.write_text(unit.replace("/usr/local/bin/basalt", os.path.abspath(BIN)))
    out = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stderr.strip(), out.stdout + out.stderr
    out = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(path)], capture_output=True, text=True,
                         timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
    assert m and float(m.group(1)) <= 2.0, out.stdout[-500:]


@once
def test_prometheus_rules(tmp_path):
    need("promtool")
    d = os.path.join(DEPLOY, "prometheus")
    rules = [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith(".rules.yml")]
    out = subprocess.run(["promtool", "check", "rules", *rules], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run(["promtool", "test", "rules", "basalt-cluster.tests.yml"], cwd=d, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    text = open(os.path.join(d, "basalt-cluster.rules.yml")).read()
    for metric in ("basalt_db_replica_lag_seconds", "basalt_backup_last_verified_timestamp_seconds",
                   "haproxy_backend_active_servers", 'status=~"5.."', "histogram_quantile(0.99"):
        assert metric in text, metric


def k8s_docs():
    with open(os.path.join(DEPLOY, "k8s", "basalt.yaml")) as f:
        return {d["kind"]: d for d in yaml.safe_load_all(f) if d}


def test_k8s_manifests():
    docs = k8s_docs()
    dep = docs["Deployment"]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/api/health?ready=1"
    assert c["livenessProbe"]["httpGet"]["path"] == "/api/health"
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    port = c["ports"][0]["containerPort"]
    svc = docs["Service"]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["targetPort"] in ("http", port)
    hpa = docs["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    res = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"]
           for m in hpa["spec"]["metrics"] if m["type"] == "Resource"}
    assert res == {"cpu": 70, "memory": 80}
    custom = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    assert any("duration" in n for n in custom) and any("in_flight" in n for n in custom), custom
    # Each custom metric has the adapter rule that serves it.
    adapter = docs["ConfigMap"]["data"]["config.yaml"]
    for n in custom:
        assert f"as: {n}" in adapter, n
    pdb = docs["PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert "minAvailable" in pdb["spec"] or "maxUnavailable" in pdb["spec"]


def test_containerfile():
    with open(os.path.join(DEPLOY, "container", "Containerfile")) as f:
        text = f.read()
    froms = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert froms and all(re.match(r"docker\.io/library/debian:12", x) for x in froms), froms
    assert re.search(r"^USER (?!root)\S+", text, flags=re.M)
    assert "HEALTHCHECK" in text and "/api/health" in text
    assert "scripts/deps.sh build" in text
    assert re.search(r"^STOPSIGNAL SIGTERM", text, flags=re.M)


@once
def test_patroni_config_validates(tmp_path):
    with open(os.path.join(DEPLOY, "patroni", "patroni.yml")) as f:
        cfg = yaml.safe_load(f)
    dcs = cfg["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True
    assert "pgbackrest" in dcs["postgresql"]["parameters"]["archive_command"]
    need("patroni")
    out = subprocess.run(["patroni", "--validate-config", os.path.join(DEPLOY, "patroni", "patroni.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_pgbackrest_config():
    cp = configparser.ConfigParser(strict=True, interpolation=None)
    cp.read(os.path.join(DEPLOY, "pgbackrest", "pgbackrest.conf"))
    assert cp["global"]["repo1-retention-full"] and cp["global"]["repo1-cipher-type"] == "aes-256-cbc"
    assert cp["basalt"]["pg1-path"]


@once
def test_pgbackrest_restore_drill(tmp_path):
    """Base backup, writes, restore to a time between two batches and to the latest:
    the rows match (deploy/pgbackrest/drill.sh, about a minute)."""
    need("pgbackrest")
    if not os.path.exists("/usr/lib/postgresql/15/bin/postgres"):
        pytest.skip("PostgreSQL 15 is not installed (Debian package postgresql-15)")
    prom = tmp_path / "backup.prom"
    out = subprocess.run([os.path.join(DEPLOY, "pgbackrest", "drill.sh"), "--metrics-file", str(prom), "--rows", "200"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1] == "6 passed, 0 failed", out.stdout
    m = re.search(r"^basalt_backup_last_verified_timestamp_seconds\{[^}]*\} (\d+)$", prom.read_text(), flags=re.M)
    assert m and abs(int(m.group(1)) - time.time()) < 600


def test_cluster_script_refuses_bad_input(tmp_path):
    sh = os.path.join(DEPLOY, "local", "cluster.sh")
    out = subprocess.run([sh, "status", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "holds no cluster" in out.stderr, out.stderr
    out = subprocess.run([sh, "up", "--instances", "0", "--dir", str(tmp_path / "c")], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode != 0 and "--instances" in out.stderr, out.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run([sh, "up", "--port", str(port), "--dir", str(tmp_path / "c")], capture_output=True,
                             text=True, timeout=30)
    assert out.returncode != 0 and f"port {port}" in out.stderr and "taken" in out.stderr, out.stderr
    out = subprocess.run([sh, "down", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "not touching it" in out.stderr, out.stderr
    out = subprocess.run([sh, "frobnicate"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "usage" in out.stderr
