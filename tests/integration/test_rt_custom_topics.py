"""Custom realtime topics (no '/'): PocketBase takes any string as a subscription, and
its JS SDK subscribes to "PB_CONNECT" (pb.realtime.subscribe("PB_CONNECT", ...)) to
hear of each (re)connection. Basalt takes such a topic beside the others and addresses
no record event to it; a collection's bare name stays an error that says what to write."""
import json
import urllib.parse

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Client, Server, assert_error, make_superuser
from rtclient import SSE


def test_pb_connect_topic_is_accepted_and_inert(tmpdir_path):
    make_superuser(tmpdir_path)
    srv = Server(tmpdir_path, []).start()
    try:
        admin = Client(srv.url)
        admin.token = admin.login("_superusers", ADMIN_EMAIL, ADMIN_PASSWORD)
        r = admin.post("/api/collections", json={"name": "memos", "listRule": "", "viewRule": "",
                                                  "fields": [{"name": "text", "type": "text"}]})
        assert r.status_code == 200, r.text
        s = SSE(srv.url)
        anon = Client(srv.url)
        sub = lambda topics: anon.post("/api/realtime", json={"clientId": s.client_id, "subscriptions": topics})
        # What the SDK sends once a page has both a record subscription and PB_CONNECT.
        assert sub(["memos/*", "PB_CONNECT"]).status_code == 204
        admin.post("/api/collections/memos/records", json={"text": "one"})
        evs = s.collect()
        assert [e["event"] for e in evs] == ["memos/*"], evs
        assert json.loads(evs[0]["data"])["record"]["text"] == "one"
        # Alone, or with an app's own names: accepted, and nothing arrives.
        assert sub(["PB_CONNECT", "my-app.notices"]).status_code == 204
        admin.post("/api/collections/memos/records", json={"text": "two"})
        assert s.collect() == []
        # A collection's name alone is a mistake: the message says what to write.
        body = assert_error(sub(["memos"]), 400)
        assert "memos/*" in body["message"]
        # Options need a collection; a control character is refused as before.
        assert_error(sub(["PB_CONNECT?options=" + urllib.parse.quote("{}")]), 400)
        assert_error(sub(["PB_CONNECT\r\nevent: forged"]), 400)
        s.close()
    finally:
        assert srv.stop() == 0
