"""TF Serving's REST API on ``--rest_api_port``.

- ``GET  /v1/models/NAME[/versions/V]``            model status
- ``GET  /v1/models/NAME[/versions/V]/metadata``   signature defs
- ``POST /v1/models/NAME[/versions/V]:predict``    ``{"signature_name", "instances" | "inputs"}``
- ``POST /v1/models/NAME[/versions/V]:classify``   ``{"signature_name", "context", "examples"}``
  -> ``{"results": [[[label, score], ...], ...]}``
- ``POST /v1/models/NAME[/versions/V]:regress``    same body; answers TF Serving's errors

``/labels/L`` may stand for ``/versions/V`` (NOT_FOUND, as on gRPC: labels
are not supported). The JSON bodies are `rest_json`'s (its parse / format
functions are importable from here too); classify and regress turn the body
into the gRPC request proto and call the same code as the gRPC API
(`classification`). Errors are ``{"error": "..."}`` with TF Serving's HTTP
status for the gRPC code.

HTTP itself (framing, timeouts, connection, header and body limits) is
`http_server`'s; here the body's JSON nesting is bounded before it is parsed
(``--rest_max_json_depth``), and POSTs are admitted by the server's shared
`limits.Admission`.
"""

import dataclasses
import json
import logging
import re

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    model_pb2,
    regression_pb2,
)

from keras_fgvc.serving import classification, errors, grpc_service, http_server, limits
from keras_fgvc.serving.rest_json import (
    classify_json,
    parse_examples_body,
    parse_predict_body,
    predict_json,
)

LOG = logging.getLogger("keras_fgvc.serving")
_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)"
                   r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                   r"(?P<rest>/metadata|:predict|:classify|:regress)?$")
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_DEPTH_CHUNK = 1 << 20
DEFAULT_MAX_JSON_DEPTH = 32


def json_depth(raw, limit):
    """The nesting depth of JSON text `raw` (bytes), or ``limit + 1`` as soon as it passes `limit`.

    Strings are blanked out first (one regular expression, linear time), then
    brackets are counted with NumPy, so a body nested 100,000 deep costs
    milliseconds and is refused before the (recursive) JSON parser sees it.
    """
    text = _JSON_STRING.sub(b'""', raw)
    codes = np.frombuffer(text, dtype=np.uint8)
    depth, deepest = 0, 0
    for start in range(0, len(codes), _DEPTH_CHUNK):
        chunk = codes[start:start + _DEPTH_CHUNK]
        steps = ((chunk == 0x5B) | (chunk == 0x7B)).astype(np.int32)
        steps -= ((chunk == 0x5D) | (chunk == 0x7D)).astype(np.int32)
        if not steps.any():
            continue
        levels = np.cumsum(steps) + depth
        deepest = max(deepest, int(levels.max()))
        depth = int(levels[-1])
        if deepest > limit:
            return limit + 1
    return deepest


class RestApi:
    """TF Serving's REST API over a `ModelManager`: ``handle(method, target, body)``.

    Args:
        manager: the `ModelManager`.
        admission: the server's `limits.Admission` (shared with gRPC).
        max_json_depth: deepest JSON nesting accepted (``--rest_max_json_depth``).
    """

    def __init__(self, manager, admission=None, max_json_depth=DEFAULT_MAX_JSON_DEPTH):
        self._manager = manager
        self._admission = admission or limits.Admission(0)
        self._max_json_depth = int(max_json_depth)

    def handle(self, method, target, body):
        """``(http_status, payload)``: the answer, or ``{"error": ...}``; never raises."""
        try:
            if method == "GET":
                return 200, self._get(method, target)
            if method == "POST":
                with self._admission.admit():
                    return 200, self._post(method, target, body)
            raise errors.ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                      f"Unsupported HTTP method {method}; use GET or POST.")
        except errors.ServingError as err:
            status = 405 if err.code == grpc.StatusCode.UNIMPLEMENTED and method not in (
                "GET", "POST") else err.http_status
            return status, {"error": err.message}
        except Exception as err:  # noqa: BLE001 - a bug still gets a JSON answer, one log line
            LOG.debug("REST %s %s failed", method, target, exc_info=True)
            err = errors.internal(f"{type(err).__name__}: {err}")
            return err.http_status, {"error": err.message}

    @staticmethod
    def _route(method, target):
        """``(ModelSpec, rest)`` of the path; ``rest`` is '', '/metadata' or ':method'."""
        match = _PATH.match(target.split("?")[0])
        if not match:
            raise errors.not_found(f"Malformed request: {method} {target[:200]}")
        spec = model_pb2.ModelSpec(name=match["name"], version_label=match["label"] or "")
        if match["version"]:
            spec.version.value = int(match["version"])
        return spec, match["rest"] or ""

    def _get(self, method, target):
        spec, rest = self._route(method, target)
        if rest.startswith(":"):
            raise errors.invalid_argument(f"{rest[1:].capitalize()} requests must use POST.")
        version = grpc_service.requested_version(spec)
        if rest == "/metadata":
            servable = self._manager.get(spec.name, version)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, sig in servable.signature_defs.items():
                signature_map.signature_def[key].CopyFrom(sig)
            return {
                "model_spec": {"name": spec.name, "signature_name": "",
                               "version": str(servable.version)},
                "metadata": {"signature_def": json_format.MessageToDict(
                    signature_map, preserving_proto_field_name=True)},
            }
        response = grpc_service.status_response(self._manager.status(spec.name, version))
        return json_format.MessageToDict(response, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)

    def _body(self, raw):
        if json_depth(raw, self._max_json_depth) > self._max_json_depth:
            raise errors.invalid_argument(
                f"JSON Parse error: the body is nested deeper than {self._max_json_depth} "
                "levels (--rest_max_json_depth).")
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, RecursionError) as err:
            raise errors.invalid_argument(f"JSON Parse error: {err}") from None
        if not isinstance(body, dict):
            raise errors.invalid_argument("The request body must be a JSON object.")
        return body

    def _post(self, method, target, raw):
        spec, rest = self._route(method, target)
        if not rest.startswith(":"):
            raise errors.invalid_argument(f"Unsupported POST to {target[:200]}.")
        method, body = rest[1:], self._body(raw)
        if method == "predict":
            servable = self._manager.get(spec.name, grpc_service.requested_version(spec))
            signature_name = body.get("signature_name", "")
            if not isinstance(signature_name, str):
                raise errors.invalid_argument("'signature_name' must be a string.")
            _, sig = servable.signature(signature_name)
            inputs, row_format = parse_predict_body(body, sig)
            _, outputs = servable.predict(signature_name, inputs)
            return predict_json(outputs, row_format)
        # As in TF Serving: the body becomes the gRPC request, then the gRPC code runs.
        request_type = (classification_pb2.ClassificationRequest if method == "classify"
                        else regression_pb2.RegressionRequest)
        request = parse_examples_body(body, request_type(model_spec=spec), method)
        servable = self._manager.get(spec.name, grpc_service.requested_version(spec))
        if method == "classify":
            return classify_json(classification.classify(servable, request))
        classification.regress(servable, request)  # TF Serving's error for the signature
        raise errors.unimplemented("Regress is not implemented by the loopback server.")


class RestServer:
    """The REST API on a bounded HTTP/1.1 server (`http_server.HttpServer`) in daemon threads.

    Args:
        manager: the `ModelManager`.
        host, port: where to listen (0 picks a free port).
        max_body_bytes: largest request body (0: the `http_server.HttpLimits` default).
        admission: the server's `limits.Admission`.
        http_limits: `http_server.HttpLimits` (its ``max_body_bytes`` is
            replaced by `max_body_bytes` when that is given).
        max_json_depth: deepest JSON nesting accepted.
    """

    def __init__(self, manager, host, port, max_body_bytes=0, admission=None,
                 http_limits=None, max_json_depth=DEFAULT_MAX_JSON_DEPTH):
        http_limits = http_limits or http_server.HttpLimits()
        if max_body_bytes:
            http_limits = dataclasses.replace(http_limits, max_body_bytes=int(max_body_bytes))
        self.api = RestApi(manager, admission, max_json_depth)
        self._http = http_server.HttpServer(self.api.handle, host, port, http_limits)
        self.port = self._http.port

    @property
    def open_connections(self):
        return self._http.open_connections

    def start(self):
        self._http.start()

    def stop(self):
        self._http.stop()
