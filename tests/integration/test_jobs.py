"""Durable jobs: retries with back-off, the dead letter, time-outs, a job left by
an instance killed mid-run taken again once its lease ran out, graceful stop,
cron ticks run once across two instances, and the crons API."""
import time

import pytest

from conftest import (ADMIN_EMAIL, ADMIN_PASSWORD, BACKEND, Client, Server, assert_error, define_collection,
                      instance_urls, make_superuser, metrics_text)
from mailhelp import wait_job, wait_metrics

FAST = ["--jobs-test-handlers=1", "--jobs-poll-ms=50", "--jobs-backoff-ms=100"]


def boot(d, *extra):
    srv = Server(d, FAST + list(extra)).start()
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    return srv, admin


@pytest.fixture
def jobs_server(tmpdir_path):
    make_superuser(tmpdir_path)
    srv, admin = boot(tmpdir_path)
    yield srv, admin
    assert srv.stop() == 0


def queue(admin, name, payload=None, **kw):
    r = admin.post("/api/basalt/jobs", json={"name": name, "payload": payload or {}, **kw})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def test_retries_then_success(jobs_server):
    srv, admin = jobs_server
    jid = queue(admin, "test.flaky", {"failures": 2}, maxAttempts=5)
    job = wait_job(admin, jid, ["done", "dead"])
    assert job["state"] == "done" and job["attempts"] == 3 and job["lastError"] == ""


def test_backoff_schedules_the_retry_later(jobs_server):
    srv, admin = jobs_server
    # the first retry waits base..base/2 (jitter): with a job of its own back-off
    # seen through the row: runAt is after the failure by at least half the base
    jid = queue(admin, "test.flaky", {"failures": 5}, maxAttempts=6)
    deadline = time.time() + 10
    while time.time() < deadline:
        j = admin.get(f"/api/basalt/jobs/{jid}").json()
        if j["attempts"] >= 1 and j["state"] == "ready":
            break
        time.sleep(0.01)
    assert j["state"] == "ready" and j["lastError"].startswith("planned failure")
    assert j["runAt"] - j["updated"] >= 50 * (2 ** (j["attempts"] - 1)) - 5
    job = wait_job(admin, jid, ["done", "dead"])
    assert job["state"] == "done" and job["attempts"] == 6


def test_dead_letter_after_max_attempts(jobs_server):
    srv, admin = jobs_server
    jid = queue(admin, "test.flaky", {"failures": 99}, maxAttempts=3)
    job = wait_job(admin, jid, ["dead"])
    assert job["attempts"] == 3 and job["lastError"] == "planned failure 3 of 99"
    dead = admin.get("/api/basalt/jobs?state=dead").json()["items"]
    assert [j["id"] for j in dead] == [jid]
    m = wait_metrics(admin, 'basalt_jobs{state="dead"} 1')
    assert 'basalt_jobs{state="dead"} 1' in m and "basalt_job_dead_total 1" in m
    assert "basalt_job_failures_total 3" in m


def test_timeout_counts_as_failure(jobs_server):
    srv, admin = jobs_server
    jid = queue(admin, "test.sleep", {"ms": 5000}, maxAttempts=1, timeoutMs=300)
    job = wait_job(admin, jid, ["dead"])
    assert "deadline" in job["lastError"] or "timed out" in job["lastError"]


def test_bad_job_requests(jobs_server):
    srv, admin = jobs_server
    assert_error(admin.post("/api/basalt/jobs", json={"name": "no.such"}), 400, "name")
    assert_error(admin.post("/api/basalt/jobs", json={"name": "test.flaky", "maxAttempts": 0}), 400, "maxAttempts")
    assert_error(admin.post("/api/basalt/jobs", json={"name": "test.flaky", "payload": [1]}), 400, "payload")
    assert_error(admin.get("/api/basalt/jobs?state=weird"), 400)
    assert_error(admin.get("/api/basalt/jobs/nope"), 404)
    anon = Client(srv.url)
    assert_error(anon.post("/api/basalt/jobs", json={"name": "test.flaky"}), 401)
    assert_error(anon.get("/api/basalt/jobs"), 401)


def test_crons_api(jobs_server):
    srv, admin = jobs_server
    anon = Client(srv.url)
    assert_error(anon.get("/api/crons"), 401)
    define_collection(admin, {"name": "users", "type": "auth", "createRule": ""})
    anon.post("/api/collections/users/records", json={"email": "u@example.com", "password": "password-123",
                                                       "passwordConfirm": "password-123"})
    user = Client(srv.url, anon.login("users", "u@example.com", "password-123"))
    assert_error(user.get("/api/crons"), 403)
    assert_error(user.post("/api/crons/__basaltJobsCleanup__"), 403)
    crons = admin.get("/api/crons").json()
    ids = [c["id"] for c in crons]
    assert {"__basaltJobsCleanup__", "__basaltOTPCleanup__", "__basaltWebhookLogCleanup__"} <= set(ids)
    assert all(set(c) == {"id", "expression"} for c in crons)
    assert_error(admin.post("/api/crons/missing"), 404)
    assert admin.post("/api/crons/__basaltJobsCleanup__").status_code == 204
    deadline = time.time() + 10
    while time.time() < deadline:
        done = [j for j in admin.get("/api/basalt/jobs?state=done").json()["items"] if j["name"] == "jobs.cleanup"]
        if done:
            break
        time.sleep(0.05)
    assert done and done[0]["payload"]["cron"] == "__basaltJobsCleanup__"


def test_lease_expiry_after_sigkill(tmpdir_path):
    make_superuser(tmpdir_path)
    a, admin = boot(tmpdir_path, "--jobs-lease-grace-ms=300")
    jid = queue(admin, "test.sleep", {"first_ms": 60000, "ms": 10}, timeoutMs=1500, maxAttempts=3)
    wait_job(admin, jid, ["running"])
    a.kill()  # mid-job: the row stays "running" with a lease
    b, admin = boot(tmpdir_path, "--jobs-lease-grace-ms=300")
    try:
        job = wait_job(admin, jid, ["done", "dead"], timeout=30)
        assert job["state"] == "done" and job["attempts"] == 2
        # Counted by whichever instance took the job again (summed in cluster mode).
        assert "basalt_job_lease_expired_total 1" in metrics_text(admin.url, admin.token)
    finally:
        assert b.stop() == 0


def test_graceful_stop_lets_a_running_job_finish(tmpdir_path):
    make_superuser(tmpdir_path)
    a, admin = boot(tmpdir_path)
    jid = queue(admin, "test.sleep", {"ms": 1500}, timeoutMs=20000, maxAttempts=1)
    wait_job(admin, jid, ["running"])
    assert a.stop() == 0
    b, admin = boot(tmpdir_path)
    try:
        job = admin.get(f"/api/basalt/jobs/{jid}").json()
        assert job["state"] == "done" and job["attempts"] == 1
    finally:
        assert b.stop() == 0


def test_cron_tick_runs_once_across_two_instances(tmpdir_path):
    """Two instances on one database: the every-minute test cron's next tick is
    queued once (its unique key), and run once."""
    make_superuser(tmpdir_path)
    a, admin = boot(tmpdir_path)
    b, _ = boot(tmpdir_path)
    try:
        deadline = time.time() + 75
        ticks = []
        while time.time() < deadline:
            items = admin.get("/api/basalt/jobs").json()["items"]
            ticks = [j for j in items if j["name"] == "test.flaky" and j["payload"].get("cron") == "__basaltTestTick__"]
            if ticks and all(j["state"] == "done" for j in ticks):
                break
            time.sleep(0.5)
        assert ticks, "no tick within 75 s"
        time.sleep(2)  # both schedulers have seen the tick by now
        items = admin.get("/api/basalt/jobs").json()["items"]
        ticks = [j for j in items if j["payload"].get("cron") == "__basaltTestTick__"]
        by_tick = {}
        for j in ticks:
            by_tick.setdefault(j["payload"]["tick"], []).append(j)
        assert all(len(v) == 1 for v in by_tick.values()), by_tick
        assert all(t % 60000 == 0 for t in by_tick)
    finally:
        assert a.stop() == 0
        assert b.stop() == 0


def _metric(admin, name):
    for line in metrics_text(admin.url, admin.token).splitlines():  # every instance's, summed
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def _queue_many(admin, n):
    ids = []
    for _ in range(n):
        ids.append(queue(admin, "test.flaky", {"failures": 0}))
    return ids


def _wait_all_done(admin, ids, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        jobs = [admin.get(f"/api/basalt/jobs/{i}").json() for i in ids]
        if all(j["state"] == "done" for j in jobs):
            return jobs
        time.sleep(0.3)
    raise AssertionError(f"not all done: {[j['state'] for j in jobs]}")


def test_many_runners_on_two_instances_run_each_job_once(tmpdir_path):
    """Eight runner threads on each of two instances on one database: every job runs
    exactly once (attempt 1, and the instances' handler runs add up to the jobs)."""
    make_superuser(tmpdir_path)
    a, admin_a = boot(tmpdir_path, "--jobs-threads=8")
    b, admin_b = boot(tmpdir_path, "--jobs-threads=8")
    try:
        t0 = int(time.time() * 1000)
        runs0 = _metric(admin_a, "basalt_job_runs_total") + _metric(admin_b, "basalt_job_runs_total")
        ids = _queue_many(admin_a, 120)
        jobs = _wait_all_done(admin_a, ids)
        assert all(j["attempts"] == 1 for j in jobs), [j for j in jobs if j["attempts"] != 1]
        time.sleep(1)  # any duplicate run would have started by now
        runs = _metric(admin_a, "basalt_job_runs_total") + _metric(admin_b, "basalt_job_runs_total") - runs0
        # Other jobs that ran meanwhile (the every-minute test cron's tick).
        others = [j for j in admin_a.get("/api/basalt/jobs").json()["items"]
                  if j["id"] not in ids and j["updated"] >= t0]
        assert runs == len(ids) + sum(j["attempts"] for j in others)
    finally:
        assert a.stop() == 0
        assert b.stop() == 0


@pytest.mark.skipif(BACKEND != "postgres", reason="PostgreSQL: SQLite's claims go through its one writer")
def test_postgres_claims_stay_off_the_writer(tmpdir_path):
    """On PostgreSQL the runners claim and record outcomes on the pool's connections
    (FOR UPDATE SKIP LOCKED), not as jobs of the single writer: the writer's count of
    background jobs hardly moves while 80 jobs run (it did by two per job). The request
    log is off: its flushes are upkeep jobs of the writer too, one a second per worker
    that served a request (through HAProxy, both workers of each instance), which
    would blur what is counted here. The maintenance thread's check for collections
    changed elsewhere (asked for by every commit of the other instance in cluster
    mode) is a read on the pool: four writer jobs a second before."""
    make_superuser(tmpdir_path)
    srv, admin = boot(tmpdir_path, "--logs-max-days=0")
    try:
        # Each instance's own writer (cluster mode: each of the two is held to the bound).
        writers = [Client(u, admin.token) for u in instance_urls(srv.url)]
        before = [_metric(w, "basalt_store_background_jobs_total") for w in writers]
        t0 = time.time()
        ids = _queue_many(admin, 80)
        _wait_all_done(admin, ids)
        after = [_metric(w, "basalt_store_background_jobs_total") for w in writers]
        # The scheduler's gauges still go through the writer, one job every 2 s (a bound
        # that grows with the time taken, so a slow machine is no failure; claims on the
        # writer added two per job, 160 here).
        for b, a in zip(before, after):
            assert a - b <= 4 + (time.time() - t0), (before, after, time.time() - t0)
    finally:
        assert srv.stop() == 0
