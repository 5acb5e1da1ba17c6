from conftest import Client, assert_error


def test_health_exact(shared_server):
    r = Client(shared_server.url).get("/api/health")
    assert r.status_code == 200
    assert r.json() == {"message": "API is healthy.", "code": 200, "data": {}}
    assert r.headers["content-type"] == "application/json"


def test_readiness(shared_server):
    c = Client(shared_server.url)
    assert c.get("/api/basalt/ready").status_code == 200
    assert c.get("/api/health?ready=1").status_code == 200


def test_unknown_route_and_method(shared_server):
    c = Client(shared_server.url)
    assert_error(c.get("/api/nope"), 404)
    assert_error(c.req("PUT", "/api/health"), 405)


def test_request_id_echoed(shared_server):
    r = Client(shared_server.url).get("/api/health", headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"


def test_cors_preflight(shared_server):
    r = Client(shared_server.url).req("OPTIONS", "/api/collections/x/records")
    assert r.status_code == 204
    assert "authorization" in r.headers["access-control-allow-headers"]
