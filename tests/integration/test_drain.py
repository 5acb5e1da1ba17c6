"""--shutdown-drain-delay: after SIGTERM readiness fails first while requests are still
served, so that a load balancer's checks take the instance out before it stops
accepting; then the usual drain and a clean exit."""
import signal
import time

import requests

from conftest import TOPOLOGY, Server, make_superuser


def test_readiness_fails_first_then_stops(tmpdir_path):
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path, ["--shutdown-drain-delay=1500"]).start()
    # In cluster mode the url is HAProxy's; the instance itself is what drains.
    url = f"http://127.0.0.1:{srv.ports[0]}" if TOPOLOGY == "cluster" else srv.url
    assert requests.get(url + "/api/health?ready=1", timeout=5).status_code == 200
    t0 = time.time()
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    r = requests.get(url + "/api/health?ready=1", timeout=5)
    assert r.status_code == 503, r.text
    assert r.json()["message"] == "The server is shutting down."
    # Still serving everything else, on new connections too.
    s = requests.Session()
    assert s.get(url + "/api/health", timeout=5).status_code == 200
    r = s.post(url + "/api/collections/_superusers/auth-with-password", timeout=5,
               json={"identity": "admin@example.com", "password": "admin-password-1"})
    assert r.status_code == 200, r.text
    assert srv.proc.poll() is None
    assert srv.proc.wait(timeout=15) == 0
    took = time.time() - t0
    assert took >= 1.4, f"stopped after {took:.2f}s, before the drain delay"
    srv.stop()


def test_without_delay_stops_accepting_at_once(tmpdir_path):
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path).start()
    url = f"http://127.0.0.1:{srv.ports[0]}" if TOPOLOGY == "cluster" else srv.url
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=15) == 0
    try:
        requests.get(url + "/api/health", timeout=2)
        raise AssertionError("still accepting after SIGTERM without a drain delay")
    except requests.ConnectionError:
        pass
    srv.stop()
