"""A bounded HTTP/1.1 server for the REST API: h11 parses, every request gets a JSON answer.

HTTP/1.1 framing is h11's (python-hyper: Content-Length and chunked bodies,
keep-alive, pipelining, ``Expect: 100-continue``); this module adds the limits
a server facing untrusted clients needs:

- at most ``max_connections`` open connections (one thread each); one more is
  answered 503 and closed at once;
- a whole request (headers and body) must arrive within ``timeout_s`` of the
  previous answer (also the keep-alive idle time); a request cut short is
  answered 408 and closed, so a wrong ``Content-Length`` holds nothing;
- headers: at most ``max_header_bytes`` in all and ``max_headers`` fields (431);
- body: at most ``max_body_bytes``, refused by its ``Content-Length`` before it
  is read, or as soon as a chunked body passes it (413);
- a request with both ``Content-Length`` and ``Transfer-Encoding``, a bad
  ``Content-Length`` or any other malformed request is answered 400 and the
  connection closed: a body is never read as a second request (no smuggling).

Errors are ``{"error": "..."}`` (TF Serving's shape), and each bad request
logs one line.
"""

import dataclasses
import json
import logging
import socket
import threading
import time

import h11

LOG = logging.getLogger("keras_fgvc.serving")

_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            408: b"Request Timeout", 413: b"Content Too Large", 429: b"Too Many Requests",
            431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
            501: b"Not Implemented", 503: b"Service Unavailable", 504: b"Gateway Timeout"}


@dataclasses.dataclass(frozen=True)
class HttpLimits:
    """Limits of `HttpServer` (flags: ``--rest_max_connections``, ``--rest_timeout_seconds``,
    ``--rest_max_header_bytes``, ``--max_message_bytes``)."""

    max_connections: int = 32
    timeout_s: float = 10.0
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    max_body_bytes: int = 16 * 1024 * 1024


class _Refused(Exception):
    """Answer `status` with `message` and close the connection."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def _json_bytes(payload):
    return json.dumps(payload).encode()


def raw_response(status, payload, close=True):
    """The bytes of a complete JSON response (used where h11's state machine cannot answer)."""
    body = _json_bytes(payload)
    head = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Error")),
            b"Content-Type: application/json", b"Content-Length: %d" % len(body)]
    if close:
        head.append(b"Connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class HttpServer:
    """Serves ``handle(method, target, body) -> (status, payload)`` over HTTP/1.1 with JSON bodies.

    Args:
        handle: called with the method and target (str) and the whole body
            (bytes); returns an int status and a JSON-serialisable payload.
            It should not raise (anything raised is answered 500).
        host, port: where to listen (port 0 picks a free one; see ``port``).
        limits: `HttpLimits`.
    """

    def __init__(self, handle, host, port, limits=HttpLimits()):
        self._handle = handle
        self.limits = limits
        self._listener = socket.create_server((host, port), backlog=128)
        self._listener.settimeout(0.25)
        self.port = self._listener.getsockname()[1]
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._open = set()
        self._open_lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="rest-accept",
                                        daemon=True)
        self.refused_connections = 0

    @property
    def open_connections(self):
        with self._open_lock:
            return len(self._open)

    def start(self):
        self._thread.start()

    def stop(self):
        """Stop accepting, close open connections, and wait for the accept thread."""
        self._stopped.set()
        self._thread.join(timeout=10)
        self._listener.close()
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # === Connections ===
    def _accept_loop(self):
        while not self._stopped.is_set():
            try:
                conn, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopped.is_set():
                    return
                time.sleep(0.05)  # e.g. out of file descriptors: back off, keep serving
                continue
            if not self._slots.acquire(blocking=False):
                self.refused_connections += 1
                LOG.warning("REST connection from %s:%d refused: %d connections open "
                            "(--rest_max_connections)", peer[0], peer[1],
                            self.limits.max_connections)
                self._refuse(conn)
                continue
            with self._open_lock:
                self._open.add(conn)
            threading.Thread(target=self._serve, args=(conn, peer), name="rest-conn",
                             daemon=True).start()

    def _refuse(self, conn):
        try:
            conn.settimeout(1.0)
            conn.sendall(raw_response(503, {
                "error": f"Too many connections: the limit is {self.limits.max_connections}; "
                         "retry later."}))
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            conn.close()

    def _serve(self, conn, peer):
        where = f"{peer[0]}:{peer[1]}"
        h = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        try:
            while not self._stopped.is_set():
                deadline = time.monotonic() + self.limits.timeout_s
                try:
                    if not self._one_request(h, conn, deadline, where):
                        break
                except _Refused as err:
                    LOG.warning("REST bad request from %s: %d %s", where, err.status, err.message)
                    conn.settimeout(1.0)
                    conn.sendall(raw_response(err.status, {"error": err.message}))
                    break
                if h.our_state is h11.MUST_CLOSE or h.their_state is h11.MUST_CLOSE:
                    break
                h.start_next_cycle()
        except (OSError, h11.LocalProtocolError):
            pass  # the client went away (or cannot be answered): nothing to do
        finally:
            try:
                conn.close()
            finally:
                with self._open_lock:
                    self._open.discard(conn)
                self._slots.release()

    def _next_event(self, h, conn, deadline):
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as err:
                raise _Refused(err.error_status_hint, f"Malformed HTTP request: {err}") from None
            if event is not h11.NEED_DATA:
                return event
            remaining = deadline - time.monotonic()
            started = h.their_state is not h11.IDLE or bool(h.trailing_data[0])
            if remaining <= 0:
                self._timed_out(started)
            conn.settimeout(remaining)
            try:
                data = conn.recv(65536)
            except TimeoutError:
                self._timed_out(started)
            h.receive_data(data)

    def _timed_out(self, started):
        if started:
            raise _Refused(408, f"The request did not arrive within {self.limits.timeout_s:g} s "
                                "(--rest_timeout_seconds).")
        raise ConnectionAbortedError("idle connection timed out")

    def _one_request(self, h, conn, deadline, where):
        """Read, handle and answer one request; False when the connection is done."""
        request = self._next_event(h, conn, deadline)
        if isinstance(request, h11.ConnectionClosed):
            return False
        if not isinstance(request, h11.Request):
            raise _Refused(400, f"Unexpected HTTP event {type(request).__name__}.")
        self._check_headers(request)
        if h.they_are_waiting_for_100_continue:
            conn.sendall(h.send(h11.InformationalResponse(status_code=100, headers=[])))
        body = bytearray()
        while True:
            event = self._next_event(h, conn, deadline)
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.limits.max_body_bytes:
                    raise _Refused(413, self._too_large(f"more than {len(body)}"))
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise _Refused(400, "The request body ended early.")
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("latin-1")
        try:
            status, payload = self._handle(method, target, bytes(body))
        except Exception as err:  # noqa: BLE001 - a bug still gets a JSON answer
            LOG.debug("REST %s %s failed", method, target, exc_info=True)
            status, payload = 500, {"error": f"{type(err).__name__}: {err}"}
        if status >= 400:
            LOG.warning("REST %s %s from %s: %d %s", method, target[:200], where, status,
                        str(payload.get("error", ""))[:300] if isinstance(payload, dict) else "")
        data = _json_bytes(payload)
        conn.settimeout(self.limits.timeout_s)
        conn.sendall(h.send(h11.Response(status_code=status, headers=[
            ("Content-Type", "application/json"), ("Content-Length", str(len(data)))])))
        conn.sendall(h.send(h11.Data(data=data)))
        conn.sendall(h.send(h11.EndOfMessage()))
        return True

    def _too_large(self, size):
        return (f"The request body of {size} bytes exceeds the limit of "
                f"{self.limits.max_body_bytes} bytes (--max_message_bytes).")

    def _check_headers(self, request):
        size = len(request.target) + sum(len(n) + len(v) + 4 for n, v in request.headers)
        if size > self.limits.max_header_bytes or len(request.headers) > self.limits.max_headers:
            raise _Refused(431, f"The request headers ({len(request.headers)} fields, {size} "
                                f"bytes) exceed the limit of {self.limits.max_headers} fields "
                                f"or {self.limits.max_header_bytes} bytes.")
        names = {n for n, _ in request.headers}
        if b"content-length" in names and b"transfer-encoding" in names:
            raise _Refused(400, "A request may not have both Content-Length and "
                                "Transfer-Encoding.")
        for name, value in request.headers:
            if name == b"content-length" and int(value) > self.limits.max_body_bytes:
                raise _Refused(413, self._too_large(int(value)))

