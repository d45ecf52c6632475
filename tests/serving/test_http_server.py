"""The REST front's HTTP/1.1: every request gets one JSON answer, and no client can hold it.

Raw sockets on 127.0.0.1 send what an attacker would; each case is bounded
by short socket timeouts. The API behind is real (`rest.RestServer`) over a
manager that knows no model, so the body's parsing shows in the answer.
"""

import json
import logging
import socket
import threading
import time

import pytest

from keras_fgvc.serving import errors, http_server, rest
from keras_fgvc.serving.soak import exchange

CLASSIFY = "/v1/models/det:classify"
UNPARSED = b'{"examples": [[1]]}'  # parsed -> 400 "must be a JSON object of features"


class _NoModels:
    def get(self, name, version=None):
        raise errors.not_found(f"Servable not found for request: Latest({name})")

    def status(self, name, version=None):
        raise errors.not_found(f"Could not find any versions of model {name}")


@pytest.fixture
def server():
    limits = http_server.HttpLimits(max_connections=8, timeout_s=1.0, max_header_bytes=4096,
                                    max_body_bytes=1 << 20)
    rest_server = rest.RestServer(_NoModels(), "127.0.0.1", 0, http_limits=limits)
    rest_server.start()
    yield rest_server
    rest_server.stop()


def _answers(raw):
    """``[(status, json payload)]`` of the HTTP responses in `raw`."""
    answers = []
    for part in raw.split(b"HTTP/1.1 ")[1:]:
        head, _, body = part.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        answers.append((int(head[:3]), json.loads(body[:length])))
    return answers


def _post(body, headers=b""):
    return (b"POST " + CLASSIFY.encode() + b" HTTP/1.1\r\nHost: x\r\n" + headers
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def test_malformed_requests_get_one_json_400_and_the_connection_closes(server):
    head = b"POST " + CLASSIFY.encode() + b" HTTP/1.1\r\nHost: x\r\n"
    for request, status, message in [
        (head + b"Content-Length: abc\r\n\r\n{}", 400, "Content-Length"),
        (head + b"Content-Length: -1\r\n\r\n{}", 400, "Content-Length"),
        (head + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
         "both Content-Length and Transfer-Encoding"),
        (b"GARBAGE\r\n\r\n", 400, "Malformed HTTP request"),
        (head + b"X-Big: " + b"a" * 8000 + b"\r\nContent-Length: 2\r\n\r\n{}", 431, "headers"),
        (_post(b"[" * 100_000 + b"]" * 100_000), 400, "nested deeper than 32"),
        (_post(b'{"signature_name": ["x"], "examples": [{}]}'), 400, "must be a string"),
        (head + b"Content-Length: 30000000\r\n\r\n", 413, "exceeds the limit"),  # body unsent
    ]:
        start = time.monotonic()
        answers = _answers(exchange(server.port, request))
        assert time.monotonic() - start < 2.5, request[:80]  # answered, not left to time out
        assert len(answers) == 1, (request[:80], answers)
        assert answers[0][0] == status and message in answers[0][1]["error"], answers
        assert list(answers[0][1]) == ["error"]


def test_chunked_body_is_read_as_one_request_never_smuggled(server):
    body = UNPARSED
    chunked = (b"POST " + CLASSIFY.encode() + b" HTTP/1.1\r\nHost: x\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n" % 5 + body[:5] + b"\r\n"
               + b"%x\r\n" % (len(body) - 5) + body[5:] + b"\r\n0\r\n\r\n")
    # Then a second, pipelined request on the same connection.
    raw = exchange(server.port, chunked + b"GET /v1/models/det HTTP/1.1\r\nHost: x\r\n"
                    b"Connection: close\r\n\r\n")
    answers = _answers(raw)
    assert [status for status, _ in answers] == [400, 404]
    assert "must be a JSON object of features" in answers[0][1]["error"]  # the body was read
    assert "Could not find any versions of model det" in answers[1][1]["error"]
    # A chunked body over the size limit is refused as soon as it passes it.
    chunk = b"%x\r\n" % 65536 + b" " * 65536 + b"\r\n"
    big = (b"POST " + CLASSIFY.encode() + b" HTTP/1.1\r\nHost: x\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 20)
    assert _answers(exchange(server.port, big))[0][0] == 413


def test_short_body_times_out_and_frees_the_connection(server):
    for request in (_post(b"{}")[:-2] + b"",  # Content-Length 2, nothing sent
                    b"POST " + CLASSIFY.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 1000\r\n\r\n{\"examples\": "):
        start = time.monotonic()
        answers = _answers(exchange(server.port, request, wait_s=5.0))
        assert 0.9 < time.monotonic() - start < 3.0
        assert answers and answers[0][0] == 408, answers
    deadline = time.monotonic() + 3
    while server.open_connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.open_connections == 0


def test_idle_sockets_are_capped_and_time_out(server):
    before = threading.active_count()
    sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=3)
               for _ in range(64)]
    try:
        time.sleep(0.3)
        assert server.open_connections == 8
        assert threading.active_count() - before <= 8
        refused = 0
        for sock in sockets[8:]:
            data = sock.recv(65536)
            refused += bool(data) and _answers(data)[0][0] == 503
        assert refused == 56
        time.sleep(1.5)  # idle past --rest_timeout_seconds: closed
        assert server.open_connections == 0
        status, _ = _answers(exchange(server.port, _post(UNPARSED)))[0]
        assert status == 400  # serving again
    finally:
        for sock in sockets:
            sock.close()


def test_each_bad_request_logs_one_line_without_a_traceback(server, caplog):
    caplog.set_level(logging.INFO, logger="keras_fgvc.serving")
    for request in (_post(b"[" * 100_000), _post(UNPARSED),
                    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"):
        exchange(server.port, request, wait_s=2.0)
    records = [r for r in caplog.records if r.name == "keras_fgvc.serving"]
    assert len(records) == 3, [r.getMessage() for r in records]
    for record in records:
        assert record.exc_info is None and "Traceback" not in record.getMessage()
        assert len(record.getMessage()) < 600


def test_keep_alive_serves_many_requests_on_one_connection(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as sock:
        for _ in range(3):
            sock.sendall(_post(UNPARSED))
            data = b""
            while b"}" not in data:
                data += sock.recv(65536)
            assert _answers(data)[0][0] == 400
