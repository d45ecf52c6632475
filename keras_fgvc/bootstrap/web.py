"""The labelling page and its JSON API (Flask), served by a threaded werkzeug server.

    python -m keras_fgvc.bootstrap serve --db project.db --port 8080
    # or: from keras_fgvc.bootstrap.web import serve; serve("project.db", port=8080)

Pages (plain HTML/JS/CSS from `static/`, no CDN, works offline): ``/`` one
candidate at a time (keys y / n / u / z), ``/grid`` a page of one category for
bulk reject, ``/status`` counts, selection quality, agreement, gold accuracy.

JSON API (the pages use it too; errors are ``{"error": message}``):
  GET  /api/status                       rounds, counts per category, labelers
  GET  /api/next?labeler=NAME&n=K[&category=C][&round=R]   {"tasks": [...]}
  POST /api/decisions {"decisions": [{task_id, labeler, decision, seconds}]}
       -> 200 {"recorded": count, "skipped": [{task_id, labeler, reason}]}
       (skipped: the task's slots went to other labelers, e.g. after a lease
       lapsed); a malformed body, an unknown task or decision -> 400,
       nothing written
  POST /api/undo {"task_id", "labeler"}  -> {"undone": true | false}
  GET  /api/quality                      selection precision / recall, kappa, gold
  GET  /api/export/decisions.jsonl       every decision, one JSON object a line
  GET  /images/<image_id>                the image file, byte for byte

Access: bound to 127.0.0.1 by default, and then only requests addressed to a
loopback name are answered (no DNS rebinding). Another host needs
`auth_token`, checked on every request: ``Authorization: Bearer TOKEN``, or
``?token=TOKEN`` once in the page's URL, which sets a cookie.
"""

import hmac
import json
import logging
import os
from urllib.parse import urlencode

from flask import Flask, Response, jsonify, redirect, request, send_file, send_from_directory
from werkzeug.exceptions import HTTPException
from werkzeug.serving import WSGIRequestHandler
from werkzeug.serving import make_server as _werkzeug_server

from keras_fgvc.bootstrap.store import open_store

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
COOKIE = "kfgvc_token"
PAGES = {"/": "index.html", "/grid": "grid.html", "/status": "status.html"}


class _KeepAliveHandler(WSGIRequestHandler):
    """HTTP/1.1, so a browser (or script) reuses its connection between requests."""

    protocol_version = "HTTP/1.1"

    def log_request(self, code="-", size="-"):
        # werkzeug formats the line (URL decoding included: 30 us) before the logger
        # drops it; skip that unless request logging is on (`log_requests`).
        if logging.getLogger("werkzeug").isEnabledFor(logging.INFO):
            super().log_request(code, size)


def _host_name(host_header):
    """The host part of a Host header ('[::1]:80' -> '::1', 'a:80' -> 'a')."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _check_token(auth_token):
    if auth_token is not None and (not isinstance(auth_token, str) or len(auth_token) < 8):
        raise ValueError("auth_token must be a string of at least 8 characters")


def _error(status, message):
    response = jsonify(error=message)
    response.status_code = status
    return response


def _json_body():
    if not request.is_json:
        raise ValueError("the body must be JSON (Content-Type: application/json)")
    try:
        return json.loads(request.get_data(as_text=True))
    except ValueError as e:
        raise ValueError(f"the body is not valid JSON: {e}") from e


def _int_arg(name, default=None):
    value = request.args.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def create_app(db, auth_token=None, store=None):
    """The Flask app of the project in `db` (a path or URL); `store` overrides opening it."""
    _check_token(auth_token)
    store = store or open_store(db)
    app = Flask(__name__, static_folder=STATIC, static_url_path="/static")
    app.json.sort_keys = False
    app.extensions["bootstrap_store"] = store

    @app.before_request
    def _guard():
        if auth_token is None:
            if _host_name(request.host) not in LOOPBACK:
                return _error(403, "this server answers loopback addresses only; "
                                   "serve with an auth token to open it to others")
            return None
        header = request.headers.get("Authorization", "")
        offered = [header[7:] if header.startswith("Bearer ") else None,
                   request.cookies.get(COOKIE), request.args.get("token")]
        if not any(t is not None and hmac.compare_digest(t.encode(), auth_token.encode())
                   for t in offered):
            return _error(401, "missing or wrong token: send 'Authorization: Bearer TOKEN' "
                               "or open the page once with ?token=TOKEN")
        return None

    @app.after_request
    def _remember_token(response):
        token = request.args.get("token")
        if auth_token is not None and token is not None and \
                hmac.compare_digest(token.encode(), auth_token.encode()):
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.errorhandler(ValueError)
    def _bad_request(error):
        return _error(400, str(error))

    @app.errorhandler(HTTPException)
    def _http(error):
        return _error(error.code, f"{error.name}: {error.description}")

    @app.errorhandler(Exception)
    def _internal(error):
        app.logger.exception("request failed")
        return _error(500, f"internal error: {type(error).__name__}: {error}")

    for path, page in PAGES.items():
        app.add_url_rule(path, f"page_{page}", lambda page=page: _page(page))

    def _page(page):
        token = request.args.get("token")
        if token is not None:  # the cookie is set; drop the token from the address bar
            query = urlencode([(k, v) for k, v in request.args.items(multi=True)
                               if k != "token"])
            return redirect(request.path + (f"?{query}" if query else ""))
        return send_from_directory(STATIC, page)

    @app.get("/images/<int:image_id>")
    def image(image_id):
        try:
            path = store.image_path(image_id)
        except KeyError as e:
            return _error(404, e.args[0])
        if not os.path.isfile(path):
            return _error(404, f"image {image_id} is missing on disk: {path}")
        response = send_file(path, conditional=True)
        response.headers["Cache-Control"] = "private, max-age=3600"
        return response

    @app.get("/api/status")
    def status():
        return jsonify(store.status())

    @app.get("/api/next")
    def next_tasks():
        labeler = request.args.get("labeler")
        if not labeler:
            raise ValueError("labeler is required: /api/next?labeler=NAME&n=K")
        tasks = store.next_tasks(labeler, _int_arg("n", 1),
                                 category=request.args.get("category") or None,
                                 round=_int_arg("round"))
        return jsonify(tasks=tasks)

    @app.post("/api/decisions")
    def decisions():
        body = _json_body()
        if not isinstance(body, dict) or set(body) != {"decisions"}:
            raise ValueError('the body must be {"decisions": [{"task_id", "labeler", '
                             '"decision", "seconds"}, ...]}')
        return jsonify(store.record_decisions(body["decisions"], report=True))

    @app.post("/api/undo")
    def undo():
        body = _json_body()
        if not isinstance(body, dict) or set(body) != {"task_id", "labeler"}:
            raise ValueError('the body must be {"task_id": ID, "labeler": NAME}')
        return jsonify(undone=store.undo(body["task_id"], body["labeler"]))

    @app.get("/api/quality")
    def quality():
        return jsonify(store.quality())

    @app.get("/api/export/decisions.jsonl")
    def export_decisions():
        def lines():
            for row in store.iter_decisions():
                yield json.dumps(row) + "\n"

        return Response(lines(), mimetype="application/x-ndjson", headers={
            "Content-Disposition": "attachment; filename=decisions.jsonl"})

    return app


def make_server(db, host="127.0.0.1", port=8080, auth_token=None, log_requests=False):
    """A threaded werkzeug server of `create_app(db, auth_token)` (not yet serving).

    A host other than 127.0.0.1 / localhost / ::1 needs `auth_token`.
    `port=0` picks a free port (`server.server_port`). The app's store is
    `server.app.extensions["bootstrap_store"]`.
    """
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be a host name or address, got {host!r}")
    _check_token(auth_token)
    if host not in LOOPBACK and auth_token is None:
        raise ValueError(f"binding to {host} opens the labelling page to the network: "
                         "give an auth_token (--auth_token) or bind to 127.0.0.1")
    if not isinstance(port, int) or not 0 <= port < 65536:
        raise ValueError(f"port must be an integer in [0, 65535], got {port!r}")
    app = create_app(db, auth_token=auth_token)
    logging.getLogger("werkzeug").setLevel(logging.INFO if log_requests else logging.WARNING)
    try:
        return _werkzeug_server(host, port, app, threaded=True,
                                request_handler=_KeepAliveHandler)
    except BaseException:
        app.extensions["bootstrap_store"].close()
        raise


def serve(db, host="127.0.0.1", port=8080, auth_token=None, log_requests=False):
    """Serve the labelling page and API until interrupted (see the module docstring)."""
    server = make_server(db, host, port, auth_token, log_requests)
    shown = f"[{host}]" if ":" in host else host
    print(f"Serving the labelling page on http://{shown}:{server.server_port}/"
          + (" (open it once with ?token=TOKEN)" if auth_token else ""), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.app.extensions["bootstrap_store"].close()
