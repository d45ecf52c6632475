"""The REST API's routes and its JSON answers over HTTP (bodies: test_rest_json.py)."""

import http.client
import json

from keras_fgvc.serving import rest


class _BrokenManager:
    def get(self, name, version=None):
        raise RuntimeError("boom")


def test_handler_answers_json_and_keeps_the_connection():
    server = rest.RestServer(_BrokenManager(), "127.0.0.1", 0)
    server.start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for method, path, body, code, message in [
            ("POST", "/v1/models/det:classify", {"examples": [{"x": 1}]}, 500,
             "RuntimeError: boom"),
            ("POST", "/v1/models/det:classify", {"examples": [[1]]}, 400,
             "must be a JSON object of features"),
            ("GET", "/v1/models/det:classify", None, 400, "Classify requests must use POST."),
            ("GET", "/v1/models/det/labels/stable", None, 404,
             "Servable not found for request: Label(det, stable)"),
            ("POST", "/v1/models/det/metadata", {}, 400, "Unsupported POST"),
            ("POST", "/v1/models/det:explain", {}, 404, "Malformed request"),
        ]:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, data)
            response = conn.getresponse()
            payload = json.loads(response.read())
            assert (response.status, payload) == (code, {"error": payload["error"]}), path
            assert message in payload["error"], (path, payload)
    finally:
        conn.close()
        server.stop()
