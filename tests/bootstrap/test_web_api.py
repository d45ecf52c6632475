"""The HTTP JSON API and the pages: Flask's test client and a real socket, on both backends."""

import json
import re
import threading
import urllib.error
import urllib.request

import pytest

from keras_fgvc.bootstrap import web
from tests.bootstrap.conftest import make_project

TASK_KEYS = {"task_id", "candidate_id", "image_url", "category", "score", "exemplar_urls"}


@pytest.fixture
def client(project):
    store, info = project
    app = web.create_app(None, store=store)
    return app.test_client(), store, info


def _post(client, path, body, **kwargs):
    return client.post(path, data=json.dumps(body), content_type="application/json", **kwargs)


def test_next_decisions_status_round_trip(client):
    client, store, info = client
    response = client.get("/api/next?labeler=ann&n=3")
    assert response.status_code == 200
    tasks = response.get_json()["tasks"]
    assert len(tasks) == 3 and all(TASK_KEYS <= set(t) for t in tasks)
    decisions = [{"task_id": t["task_id"], "labeler": "ann", "decision": d, "seconds": 1.25}
                 for t, d in zip(tasks, ["accept", "reject", "unsure"])]
    response = _post(client, "/api/decisions", {"decisions": decisions})
    assert response.status_code == 200 and response.get_json() == {"recorded": 3,
                                                                   "skipped": []}
    status = client.get("/api/status").get_json()
    (round_1,) = status["rounds"]
    assert (round_1["accepted"], round_1["rejected"], round_1["unsure"], round_1["pending"]) == (
        1, 1, 1, 27)
    assert status["labelers"] == {"ann": 3}
    # The same decisions again (a retry) change nothing.
    assert _post(client, "/api/decisions", {"decisions": decisions}).get_json() == {
        "recorded": 3, "skipped": []}
    assert store.count("decision") == 3
    # Bob was never handed ann's tasks, and their one slot is taken: not recorded, said so.
    late = _post(client, "/api/decisions", {"decisions": [dict(decisions[0], labeler="bob")]})
    assert late.status_code == 200 and late.get_json()["recorded"] == 0
    ((skipped,),) = [late.get_json()["skipped"]]
    assert skipped["task_id"] == tasks[0]["task_id"] and skipped["labeler"] == "bob"
    assert "went to other labelers" in skipped["reason"] and store.count("decision") == 3
    one_category = client.get("/api/next?labeler=bob&n=50&category=bee").get_json()["tasks"]
    assert one_category and {t["category"] for t in one_category} == {"bee"}


def test_image_url_serves_the_file_byte_for_byte(client):
    client, store, info = client
    task = client.get("/api/next?labeler=ann").get_json()["tasks"][0]
    response = client.get(task["image_url"])
    with open(store.image_path(task["candidate_id"]), "rb") as f:
        assert response.data == f.read()
    assert response.mimetype == "image/png"
    for url in task["exemplar_urls"] + task["neighbor_urls"]:
        assert client.get(url).status_code == 200
    missing = client.get("/images/987654")
    assert missing.status_code == 404 and "no image" in missing.get_json()["error"]


def test_bad_requests_get_400_and_write_nothing(client):
    client, store, _ = client
    task = client.get("/api/next?labeler=ann").get_json()["tasks"][0]
    good = {"task_id": task["task_id"], "labeler": "ann", "decision": "accept", "seconds": 1}
    cases = [
        (json.dumps({"decisions": [good]}), "text/plain", "must be JSON"),
        ("{not json", "application/json", "not valid JSON"),
        (json.dumps([good]), "application/json", "the body must be"),
        (json.dumps({"decisions": [good], "extra": 1}), "application/json", "the body must be"),
        (json.dumps({"decisions": "accept"}), "application/json", "must be a list"),
        (json.dumps({"decisions": [good, dict(good, task_id=10**6)]}), "application/json",
         "unknown task_id 1000000"),
        (json.dumps({"decisions": [good, dict(good, decision="yes")]}), "application/json",
         "decision must be one of"),
        (json.dumps({"decisions": [good, dict(good, labeler=None)]}), "application/json",
         "labeler"),
        (json.dumps({"decisions": [good, dict(good, task_id=2**64)]}), "application/json",
         "out of the 64-bit integer range"),
        (json.dumps({"decisions": [good, dict(good, seconds=10**400)]}), "application/json",
         "seconds must be a finite number")]
    for body, content_type, message in cases:
        response = client.post("/api/decisions", data=body, content_type=content_type)
        assert response.status_code == 400, (body, response.data)
        assert message in response.get_json()["error"], (message, response.get_json())
    assert store.count("decision") == 0
    for url, message in (("/api/next", "labeler is required"),
                         ("/api/next?labeler=ann&n=x", "n must be an integer"),
                         ("/api/next?labeler=ann&n=0", "n must be >= 1"),
                         (f"/api/next?labeler=ann&round={2**64}", "64-bit"),
                         ("/api/next?labeler=ann&category=dog", "unknown category 'dog'")):
        response = client.get(url)
        assert response.status_code == 400 and message in response.get_json()["error"], url
    response = client.get("/api/nothing")
    assert response.status_code == 404 and "error" in response.get_json()
    assert client.get("/api/decisions").status_code == 405


def test_undo_quality_and_export(client):
    client, store, _ = client
    tasks = client.get("/api/next?labeler=ann&n=2").get_json()["tasks"]
    _post(client, "/api/decisions", {"decisions": [
        {"task_id": t["task_id"], "labeler": "ann", "decision": "accept", "seconds": 2.0}
        for t in tasks]})
    response = _post(client, "/api/undo", {"task_id": tasks[0]["task_id"], "labeler": "ann"})
    assert response.get_json() == {"undone": True}
    assert _post(client, "/api/undo", {"task_id": tasks[0]["task_id"],
                                       "labeler": "ann"}).get_json() == {"undone": False}
    assert _post(client, "/api/undo", {"task_id": 5}).status_code == 400
    export = client.get("/api/export/decisions.jsonl")
    assert export.status_code == 200 and export.mimetype == "application/x-ndjson"
    rows = [json.loads(line) for line in export.data.decode().splitlines()]
    assert [(r["task_id"], r["labeler"], r["decision"]) for r in rows] == [
        (tasks[1]["task_id"], "ann", "accept")]
    assert rows[0]["path"] == store.image_path(tasks[1]["candidate_id"])
    quality = client.get("/api/quality").get_json()
    assert quality["overlap"] == 1 and quality["rounds"][0]["round"] == 1
    assert set(quality["rounds"][0]["overall"]) >= {"precision", "recall"}


def test_pages_are_served_offline(client):
    client, _, _ = client
    for path, marker in (("/", 'id="candidate"'), ("/grid", 'id="grid"'),
                         ("/status", 'id="quality"')):
        response = client.get(path)
        assert response.status_code == 200 and marker in response.data.decode()
        html = response.data.decode()
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert not [a for a in assets if "//" in a], f"{path} loads from elsewhere: {assets}"
        for asset in (a for a in assets if a.startswith("/static/")):
            served = client.get(asset)
            assert served.status_code == 200, asset
            assert not re.search(r"https?://", served.data.decode()), asset


def test_auth_token(project):
    store, _ = project
    token = "s3cret-token"
    client = web.create_app(None, auth_token=token, store=store).test_client()
    assert client.get("/api/status").status_code == 401
    assert client.get("/api/status", headers={"Authorization": "Bearer wrong-token"}
                      ).status_code == 401
    assert client.get("/api/status", headers={"Authorization": f"Bearer {token}"}
                      ).status_code == 200
    page = client.get(f"/?token={token}&labeler=ann")
    assert page.status_code == 302 and page.headers["Location"] == "/?labeler=ann"
    assert f"{web.COOKIE}={token}" in page.headers["Set-Cookie"]
    assert client.get("/api/status").status_code == 200  # the cookie now
    assert client.get("/images/1").status_code == 200
    # Without a token the app answers loopback names only (no DNS rebinding).
    open_client = web.create_app(None, store=store).test_client()
    assert open_client.get("/api/status").status_code == 200
    assert open_client.get("/api/status", headers={"Host": "evil.example:8080"}
                           ).status_code == 403


def test_make_server_refuses_a_public_host_without_token(tmp_path):
    with pytest.raises(ValueError, match="auth_token"):
        web.make_server(str(tmp_path / "x.db"), host="0.0.0.0", port=0)
    with pytest.raises(ValueError, match="at least 8"):
        web.make_server(str(tmp_path / "x.db"), host="0.0.0.0", port=0, auth_token="short")
    with pytest.raises(ValueError, match="port"):
        web.make_server(str(tmp_path / "x.db"), port=70000)


def _http(base, path, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers=dict(
        headers or {}, **({"Content-Type": "application/json"} if data else {})))
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_over_a_real_socket(db, tmp_path):
    store, info = make_project(db, str(tmp_path), n_pool=40)
    store.close()
    server = web.make_server(db, port=0, auth_token="a-long-token")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    auth = {"Authorization": "Bearer a-long-token"}
    try:
        assert _http(base, "/api/status")[0] == 401
        seen, errors = {}, []

        def labeler(name):
            try:
                while True:
                    status, body = _http(base, f"/api/next?labeler={name}&n=3", headers=auth)
                    tasks = json.loads(body)["tasks"]
                    if not tasks:
                        return
                    seen.setdefault(name, []).extend(t["task_id"] for t in tasks)
                    status, body = _http(base, "/api/decisions", {"decisions": [
                        {"task_id": t["task_id"], "labeler": name, "decision": "reject",
                         "seconds": 0.5} for t in tasks]}, headers=auth)
                    assert (status, json.loads(body)) == (200, {"recorded": len(tasks),
                                                                "skipped": []})
            except Exception as e:  # surfaced below
                errors.append(e)

        threads = [threading.Thread(target=labeler, args=(n,)) for n in ("a", "b", "c", "d")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        handed = [i for ids in seen.values() for i in ids]
        assert len(handed) == len(set(handed)) == 40
        status, body = _http(base, "/api/status", headers=auth)
        assert json.loads(body)["rounds"][0]["rejected"] == 40
        path = info["paths"][0]
        status, body = _http(base, f"/images/{info['ids'][path]}", headers=auth)
        with open(path, "rb") as f:
            assert (status, body) == (200, f.read())
        status, body = _http(base, "/api/export/decisions.jsonl", headers=auth)
        rows = [json.loads(line) for line in body.decode().splitlines()]
        assert status == 200 and len(rows) == 40 and {r["decision"] for r in rows} == {"reject"}
        status, body = _http(base, "/api/decisions", {"decisions": [{"task_id": 1}]},
                             headers=auth)
        assert status == 400 and "labeler" in json.loads(body)["error"]
    finally:
        server.shutdown()
        server.server_close()
        server.app.extensions["bootstrap_store"].close()


def test_request_lines_are_formatted_only_when_logged(tmp_path, monkeypatch, caplog):
    import logging

    import werkzeug.serving

    db = str(tmp_path / "project.db")
    make_project(db, str(tmp_path), n_pool=3)[0].close()
    formatted, real = [], werkzeug.serving.uri_to_iri
    monkeypatch.setattr(werkzeug.serving, "uri_to_iri",
                        lambda uri: formatted.append(uri) or real(uri))
    level = logging.getLogger("werkzeug").level
    try:
        for log_requests in (False, True):
            server = web.make_server(db, port=0, log_requests=log_requests)
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            try:
                status, _ = _http(f"http://127.0.0.1:{server.server_port}",
                                  f"/api/status?logged={log_requests}")
            finally:
                server.shutdown()
                server.server_close()
                server.app.extensions["bootstrap_store"].close()
            assert status == 200
    finally:
        logging.getLogger("werkzeug").setLevel(level)
    assert formatted == ["/api/status?logged=True"]
    assert "GET /api/status?logged=True HTTP/1.1" in caplog.text
