"""Rate limits decided in Redis (--redis): they hold in total across instances, a
dead or stopped Redis degrades them to each instance's share (never a 5xx, never a
hang), and they come back by themselves when Redis does. Instances here have data
folders of their own (SQLite or PostgreSQL alike): rate limiting shares only Redis.

Every Server here is one process whatever BASALT_TEST_TOPOLOGY says
(topology="single"): the test builds its own topology of instances and Redis, which
the cluster topology (its own Redis per server) would double and rewire."""
import os
import shutil
import subprocess
import tempfile

import pytest
import requests

from conftest import BIN, RedisServer, Server, make_superuser, metric, wait_until

ANON = 6
LIMITS = [f"--rate-limit-anon={ANON}", "--rate-limit-user=0", "--rate-limit-burst=0", "--rate-limit-auth=0"]
PATH = "/api/collections/users/records"  # anonymous, limited: 200 or 4xx, 429 past the limit


def start(tmp, redis, extra=()):
    d = tempfile.mkdtemp(prefix="basalt-it-", dir=tmp)
    make_superuser(d)
    # Exact counts need every decision made in Redis: a time-out generous enough for
    # a loaded machine, unless the test is about time-outs.
    timeout = [] if any(a.startswith("--redis-timeout-ms") for a in extra) else ["--redis-timeout-ms=1000"]
    return Server(d, LIMITS + [f"--redis={redis.url}", *timeout, *extra], topology="single").start()


@pytest.fixture
def folder():
    d = tempfile.mkdtemp(prefix="basalt-rl-")
    yield d
    if not os.environ.get("BASALT_KEEP_TMP"):
        shutil.rmtree(d, ignore_errors=True)


def statuses(srv, n):
    return [requests.get(srv.url + PATH, timeout=5).status_code for _ in range(n)]


def wait_connected(*servers):
    for s in servers:
        wait_until(lambda: metric(s.url, "basalt_redis_up") == 1 and metric(s.url, "basalt_ratelimit_degraded") == 0,
                   what=f"{s.url} connected to Redis")


def test_limit_holds_in_total_across_instances(folder, redis_server):
    a, b = start(folder, redis_server), start(folder, redis_server)
    try:
        wait_connected(a, b)
        got = statuses(a, 3) + statuses(b, 3)
        assert 429 not in got, got
        # The seventh anonymous request from this address is refused on either.
        r = requests.get(a.url + PATH, timeout=5)
        assert r.status_code == 429, r.text
        assert r.headers["ratelimit-limit"] == str(ANON)
        assert int(r.headers["retry-after"]) >= 1
        assert requests.get(b.url + PATH, timeout=5).status_code == 429
        # Decided in Redis: its key is there, and neither instance decided locally.
        assert redis_server.cli("EXISTS", "basalt:rl:i:127.0.0.1") == "1"
        assert metric(a.url, "basalt_ratelimit_local_decisions_total") == 0
        assert metric(b.url, "basalt_ratelimit_local_decisions_total") == 0
        # Both announce themselves; one that drains leaves the set at once.
        wait_until(lambda: metric(a.url, "basalt_redis_live_instances") == 2, what="two live instances")
        assert redis_server.cli("ZCARD", "basalt:instances") == "2"
        assert b.stop() == 0
        assert redis_server.cli("ZCARD", "basalt:instances") == "1"
    finally:
        assert a.stop() == 0 and b.stop() == 0


def test_headers_match_the_local_limiter(folder, redis_server):
    a = start(folder, redis_server)
    try:
        wait_connected(a)
        rem = [int(requests.get(a.url + PATH, timeout=5).headers["ratelimit-remaining"]) for _ in range(ANON)]
        assert rem == list(range(ANON - 1, -1, -1)), rem
    finally:
        assert a.stop() == 0


def test_script_cache_flushed_falls_back_to_eval(folder, redis_server):
    a = start(folder, redis_server)
    try:
        wait_connected(a)
        assert statuses(a, 2) and redis_server.cli("SCRIPT", "FLUSH") == "OK"
        got = statuses(a, ANON - 2)
        assert 429 not in got, got
        assert requests.get(a.url + PATH, timeout=5).status_code == 429
        assert metric(a.url, "basalt_ratelimit_local_decisions_total") == 0  # EVAL answered, not the fallback
    finally:
        assert a.stop() == 0


def test_dead_redis_degrades_then_recovers(folder):
    redis = RedisServer(folder).start()
    a, b = start(folder, redis), start(folder, redis)
    try:
        wait_connected(a, b)
        wait_until(lambda: metric(a.url, "basalt_redis_live_instances") == 2, what="two live instances")
        redis.stop()
        # Still serving: health, readiness (not --redis-required) and the API.
        assert requests.get(a.url + "/api/health", timeout=5).status_code == 200
        assert requests.get(a.url + "/api/health?ready=1", timeout=5).status_code == 200
        got = statuses(a, ANON)
        assert all(s != 429 and s < 500 for s in got[:ANON // 2]), got
        # Each instance keeps its share: the limit divided by the two live instances.
        assert got[ANON // 2:] == [429] * (ANON - ANON // 2), got
        r = requests.get(a.url + PATH, timeout=5)
        assert r.status_code == 429 and r.headers["ratelimit-limit"] == str(ANON // 2)
        assert metric(a.url, "basalt_ratelimit_degraded") == 1
        assert metric(a.url, "basalt_redis_up") == 0
        assert metric(a.url, "basalt_ratelimit_local_decisions_total") > 0
        assert metric(a.url, "basalt_redis_errors_total") > 0
        # Redis returns on the same port: decisions are Redis's again, by themselves.
        redis = RedisServer(folder, port=redis.port).start()
        wait_connected(a, b)
        before = metric(b.url, "basalt_ratelimit_local_decisions_total")
        got = statuses(b, ANON)
        assert 429 not in got, got  # a fresh key in the new Redis
        assert requests.get(a.url + PATH, timeout=5).status_code == 429  # and shared again
        assert metric(b.url, "basalt_ratelimit_local_decisions_total") == before
    finally:
        redis.stop()
        assert a.stop() == 0 and b.stop() == 0


def test_stopped_redis_never_hangs_a_request(folder, redis_server):
    a = start(folder, redis_server, ["--redis-timeout-ms=50"])
    try:
        wait_connected(a)
        redis_server.pause()  # accepts connections, answers nothing
        # Every request is answered (a hang would hit the client's time-out), none 5xx.
        got = [requests.get(a.url + "/api/collections/users/records", timeout=5).status_code for _ in range(4)]
        assert all(s < 500 for s in got), got
        assert metric(a.url, "basalt_redis_timeouts_total") > 0
        assert metric(a.url, "basalt_ratelimit_degraded") == 1
        redis_server.resume()
        wait_connected(a)
    finally:
        redis_server.resume()
        assert a.stop() == 0


def test_redis_required_fails_readiness(folder):
    redis = RedisServer(folder)  # never started: nothing listens on its port
    a = start(folder, redis, ["--redis-required=1"])
    b = start(folder, redis)
    try:
        assert requests.get(a.url + "/api/health", timeout=5).status_code == 200  # liveness
        r = requests.get(a.url + "/api/health?ready=1", timeout=5)
        assert r.status_code == 503 and "Redis" in r.json()["message"], r.text
        assert requests.get(b.url + "/api/health?ready=1", timeout=5).status_code == 200
        assert requests.get(a.url + PATH, timeout=5).status_code < 500  # still serving
        redis.start()
        wait_until(lambda: requests.get(a.url + "/api/health?ready=1", timeout=5).status_code == 200,
                   what="readiness once Redis is up")
    finally:
        redis.stop() if redis.proc else None
        assert a.stop() == 0 and b.stop() == 0


@pytest.mark.parametrize("url", ["redis://redis.example:6379", "http://127.0.0.1:6379", "redis://127.0.0.1:99999",
                                 "redis://127.0.0.1:6379/x"])
def test_bad_redis_url_stops_start_up(folder, url):
    out = subprocess.run([BIN, "serve", "--http=127.0.0.1:0", f"--dir={folder}", f"--redis={url}"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2, out.stderr
    assert "setting redis" in out.stderr, out.stderr


def test_without_redis_nothing_changes(folder):
    d = tempfile.mkdtemp(prefix="basalt-it-", dir=folder)
    make_superuser(d)
    a = Server(d, LIMITS, topology="single").start()
    try:
        got = statuses(a, ANON + 1)
        assert got[-1] == 429 and 429 not in got[:-1], got
        assert metric(a.url, "basalt_redis_up") is None  # no Redis metrics at all
    finally:
        assert a.stop() == 0


def test_waiting_decision_does_not_block_the_loop(folder, redis_server):
    """A request waiting for Redis holds no worker: while it waits (Redis stopped,
    a long time-out), every other request is served, on every worker."""
    import threading
    a = start(folder, redis_server, ["--redis-timeout-ms=3000"])
    try:
        wait_connected(a)
        redis_server.pause()
        done = []
        waiters = [threading.Thread(target=lambda: done.append(requests.get(a.url + PATH, timeout=30).status_code))
                   for _ in range(4)]  # on both workers, very likely
        for t in waiters:
            t.start()
        # Exempt requests need no decision: answered while the others still wait.
        for _ in range(20):
            assert requests.get(a.url + "/api/health", timeout=2).status_code == 200
        assert not done, "the limited requests were answered before Redis could decide"
        redis_server.resume()
        for t in waiters:
            t.join(timeout=30)
        assert len(done) == 4 and all(s < 500 for s in done), done
    finally:
        redis_server.resume()
        assert a.stop() == 0


def test_redis_lost_and_back_under_load(folder):
    """Readers at full speed while Redis is killed, restarted, stopped and resumed:
    no request fails, none hangs, and decisions return to Redis at the end."""
    import threading
    redis = RedisServer(folder).start()
    d = tempfile.mkdtemp(prefix="basalt-it-", dir=folder)
    make_superuser(d)
    a = Server(d, ["--rate-limit-anon=1000000", "--rate-limit-user=0", "--rate-limit-burst=0",
                   "--rate-limit-auth=0", f"--redis={redis.url}"], topology="single").start()
    stop = threading.Event()
    seen, errors = [], []

    def reader():
        s = requests.Session()
        while not stop.is_set():
            try:
                seen.append(s.get(a.url + "/api/collections/users/records", timeout=5).status_code)
            except requests.RequestException as e:  # a hang shows as a time-out here
                errors.append(repr(e))

    threads = [threading.Thread(target=reader) for _ in range(4)]
    try:
        wait_connected(a)
        for t in threads:
            t.start()
        wait_until(lambda: len(seen) > 50, what="load running")
        redis.stop()
        n = len(seen)
        wait_until(lambda: len(seen) > n + 50, what="requests served while Redis is dead")
        redis = RedisServer(folder, port=redis.port).start()
        wait_connected(a)
        redis.pause()
        n = len(seen)
        wait_until(lambda: len(seen) > n + 50, what="requests served while Redis is stopped")
        redis.resume()
        wait_connected(a)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        redis.resume()
        redis.stop()
        assert a.stop() == 0
    assert not errors, errors[:3]
    assert seen and all(s < 500 for s in seen), sorted(set(seen))


def test_password_and_database_of_the_url(folder):
    redis = RedisServer(folder, args=["--requirepass", "s3cr@t"]).start()
    good = start(folder, type("R", (), {"url": f"redis://:s3cr%40t@127.0.0.1:{redis.port}/2"})())
    bad = start(folder, type("R", (), {"url": f"redis://:wrong@127.0.0.1:{redis.port}"})())
    try:
        wait_connected(good)
        assert statuses(good, 1) and redis.cli("-n", "2", "EXISTS", "basalt:rl:i:127.0.0.1") == "1"
        # A refused password: the instance serves, degraded, and says why in its log.
        assert metric(bad.url, "basalt_redis_up") == 0
        assert requests.get(bad.url + PATH, timeout=5).status_code < 500
        assert requests.get(bad.url + "/api/health?ready=1", timeout=5).status_code == 200
        with open(os.path.join(bad.dir, "server.log")) as f:
            assert "check the password" in f.read()
    finally:
        redis.stop()
        assert good.stop() == 0 and bad.stop() == 0
