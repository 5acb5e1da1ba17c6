"""Reminders (plan 004): a collection option schedules a mail at a date field
minus "before", queued in the record write's transaction; the job moves when the
date changes and goes when the record is deleted."""
import datetime
import time

import pytest

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Client, NO_LIMITS, Server, assert_error, define_collection, make_superuser
from mailhelp import SmtpServer, body


def pbdate(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


@pytest.fixture
def setup(tmpdir_path):
    smtp = SmtpServer()
    make_superuser(tmpdir_path)
    try:
        srv = Server(tmpdir_path, NO_LIMITS + smtp.args() + ["--jobs-poll-ms=50"]).start()
    except Exception:
        smtp.stop()
        raise
    admin = Client(srv.url)
    admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
    users = define_collection(admin, {"name": "users", "type": "auth"}).json()
    r = admin.post("/api/collections", json={
        "name": "tasks", "type": "base",
        "fields": [{"name": "title", "type": "text"}, {"name": "due", "type": "date"},
                   {"name": "owner", "type": "relation", "collectionId": users["id"], "maxSelect": 1}],
        "reminders": [{"field": "due", "before": "1h", "mail": "owner", "text": "title"}]})
    assert r.status_code == 200, r.text
    assert r.json()["reminders"] == [{"field": "due", "before": "1h", "mail": "owner", "text": "title"}]
    u = admin.post("/api/collections/users/records", json={"email": "owner@example.com", "password": "password-123",
                                                            "passwordConfirm": "password-123"}).json()
    try:
        yield srv, admin, smtp, u
    finally:
        smtp.stop()
    assert srv.stop() == 0


def reminders(admin, state="ready"):
    return [j for j in admin.get(f"/api/basalt/jobs?state={state}").json()["items"] if j["name"] == "reminder.send"]


def test_reminder_mail_is_sent_before_the_date(setup):
    srv, admin, smtp, u = setup
    due = int(time.time() * 1000) + 3600_000 + 2000
    t = admin.post("/api/collections/tasks/records", json={"title": "Pay the rent", "due": pbdate(due),
                                                           "owner": u["id"]}).json()
    [job] = reminders(admin)
    assert job["runAt"] == due - 3600_000 and job["payload"]["record"] == t["id"]
    m = smtp.wait_for("owner@example.com", timeout=30)
    assert "Reminder" in m["Subject"] and "Pay the rent" in body(m)


def test_reminder_moves_with_the_date_and_goes_with_the_record(setup):
    srv, admin, smtp, u = setup
    due = int(time.time() * 1000) + 2 * 86400_000
    t = admin.post("/api/collections/tasks/records", json={"title": "Later", "due": pbdate(due),
                                                           "owner": u["id"]}).json()
    assert [j["runAt"] for j in reminders(admin)] == [due - 3600_000]
    # an unrelated change keeps one reminder at the same time
    admin.patch(f"/api/collections/tasks/records/{t['id']}", json={"title": "Later still"})
    assert [j["runAt"] for j in reminders(admin)] == [due - 3600_000]
    due2 = due + 86400_000
    admin.patch(f"/api/collections/tasks/records/{t['id']}", json={"due": pbdate(due2)})
    assert [j["runAt"] for j in reminders(admin)] == [due2 - 3600_000]
    # no date, no reminder
    admin.patch(f"/api/collections/tasks/records/{t['id']}", json={"due": ""})
    assert reminders(admin) == []
    admin.patch(f"/api/collections/tasks/records/{t['id']}", json={"due": pbdate(due)})
    assert len(reminders(admin)) == 1
    assert admin.delete(f"/api/collections/tasks/records/{t['id']}").status_code == 204
    assert reminders(admin) == []
    # a date already past schedules nothing
    admin.post("/api/collections/tasks/records", json={"title": "Past", "due": pbdate(due - 5 * 86400_000),
                                                       "owner": u["id"]})
    assert reminders(admin) == []


def test_reminder_option_validation(setup):
    srv, admin, smtp, u = setup
    for bad in ([{"field": "title", "before": "1h", "mail": "owner"}],
                [{"field": "due", "before": "soon", "mail": "owner"}],
                [{"field": "due", "before": "1h", "mail": "title"}],
                [{"field": "due", "before": "1h", "mail": "owner", "text": "due"}],
                {"field": "due"}):
        assert_error(admin.patch("/api/collections/tasks", json={"reminders": bad}), 400)
    # removing the option keeps the collection; removing the field it uses is refused
    fields = admin.get("/api/collections/tasks").json()["fields"]
    assert_error(admin.patch("/api/collections/tasks", json={"fields": [f for f in fields if f["name"] != "due"]}), 400)
    r = admin.patch("/api/collections/tasks", json={"reminders": []})
    assert r.status_code == 200 and "reminders" not in r.json()
