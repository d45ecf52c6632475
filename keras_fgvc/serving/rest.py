"""TF Serving's REST API on ``--rest_api_port``.

- ``GET  /v1/models/NAME[/versions/V]``            model status
- ``GET  /v1/models/NAME[/versions/V]/metadata``   signature defs
- ``POST /v1/models/NAME[/versions/V]:predict``    ``{"signature_name", "instances" | "inputs"}``

Binary values are ``{"b64": "..."}``; outputs whose name ends in ``_bytes``
come back the same way. Errors are ``{"error": "..."}`` with TF Serving's
HTTP status for the gRPC code.
"""

import base64
import http.server
import json
import re
import threading

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from keras_fgvc.serving import errors, grpc_service

_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
                   r"(?P<rest>/metadata|:predict)?$")


def _decode_value(value):
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (ValueError, TypeError) as err:
                raise errors.invalid_argument(f"Invalid b64 value: {err}") from err
        raise errors.invalid_argument(f"Unexpected object {sorted(value)} in a tensor value.")
    if isinstance(value, list):
        return [_decode_value(v) for v in value]
    return value


def _to_array(key, value, dtype_enum):
    dtype = tf.dtypes.as_dtype(dtype_enum)
    value = _decode_value(value)
    try:
        if dtype == tf.string:
            array = np.array(value, dtype=object)
            flat = array.reshape(-1)
            for i, item in enumerate(flat):
                if isinstance(item, str):
                    flat[i] = item.encode()
                elif not isinstance(item, bytes):
                    raise errors.invalid_argument(
                        f"Expects arg[{key}] to be string but {type(item).__name__} is provided")
            return array
        return np.array(value, dtype=dtype.as_numpy_dtype)
    except (ValueError, TypeError) as err:
        message = f"Input {key}: cannot convert to {dtype.name}: {err}"
        raise errors.invalid_argument(message) from err


def _json_value(key, array):
    if array.dtype.kind in "OS":
        if key.endswith("_bytes"):
            return _map(array, lambda b: {"b64": base64.b64encode(b).decode()})
        return _map(array, lambda b: b.decode("utf-8", "replace"))
    return array.tolist()


def _map(array, fn):
    if not isinstance(array, np.ndarray):
        return fn(array)
    if array.ndim == 0:
        return fn(array.item())
    return [_map(a, fn) for a in array]


def parse_predict_body(body, signature):
    """``(inputs dict, row_format)`` from a predict JSON body for `signature` (a SignatureDef)."""
    keys = sorted(signature.inputs)
    if "instances" in body and "inputs" in body:
        raise errors.invalid_argument("Request has both 'instances' and 'inputs'; send one.")
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise errors.invalid_argument("'instances' must be a list.")
        if len(keys) == 1 and not all(isinstance(i, dict) and set(i) == set(keys)
                                      for i in instances):
            rows = {keys[0]: instances}
        else:
            if not all(isinstance(i, dict) for i in instances):
                raise errors.invalid_argument(
                    f"Each instance must be an object with the inputs {keys}.")
            names = set().union(*[set(i) for i in instances]) if instances else set(keys)
            rows = {k: [i.get(k) for i in instances] for k in names}
        inputs = {k: v for k, v in rows.items()}
        row_format = True
    elif "inputs" in body:
        value = body["inputs"]
        if isinstance(value, dict) and not set(value) == {"b64"}:
            inputs = dict(value)
        elif len(keys) == 1:
            inputs = {keys[0]: value}
        else:
            raise errors.invalid_argument(f"'inputs' must be an object with the inputs {keys}.")
        row_format = False
    else:
        raise errors.invalid_argument("Missing 'instances' or 'inputs' key in the request.")
    arrays = {}
    for k, v in inputs.items():
        if k not in signature.inputs:
            arrays[k] = np.asarray(_decode_value(v), dtype=object)  # reported as extra below
        else:
            arrays[k] = _to_array(k, v, signature.inputs[k].dtype)
    return arrays, row_format


def predict_json(outputs, row_format):
    """TF Serving's predict response body for NumPy `outputs`."""
    if row_format:
        keys = sorted(outputs)
        n = len(next(iter(outputs.values()))) if outputs else 0
        if len(keys) == 1:
            return {"predictions": _json_value(keys[0], outputs[keys[0]])}
        columns = {k: _json_value(k, v) for k, v in outputs.items()}
        return {"predictions": [{k: columns[k][i] for k in keys} for i in range(n)]}
    if len(outputs) == 1:
        key = next(iter(outputs))
        return {"outputs": _json_value(key, outputs[key])}
    return {"outputs": {k: _json_value(k, v) for k, v in outputs.items()}}


def make_handler(manager, max_body_bytes):
    """A BaseHTTPRequestHandler class serving `manager`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "keras_fgvc-loopback"

        def log_message(self, *args):  # quiet: the gRPC side logs what matters
            pass

        def _send(self, status, payload):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self):
            match = _PATH.match(self.path.split("?")[0])
            if not match:
                raise errors.not_found(f"Malformed request: {self.command} {self.path}")
            version = match["version"]
            return match["name"], int(version) if version else None, match["rest"] or ""

        def do_GET(self):  # noqa: N802 - http.server API
            try:
                name, version, rest = self._route()
                if rest == ":predict":
                    raise errors.invalid_argument("Predict requests must use POST.")
                if rest == "/metadata":
                    servable = manager.get(name, version)
                    signature_map = get_model_metadata_pb2.SignatureDefMap()
                    for key, sig in servable.signature_defs.items():
                        signature_map.signature_def[key].CopyFrom(sig)
                    payload = {
                        "model_spec": {"name": name, "signature_name": "",
                                       "version": str(servable.version)},
                        "metadata": {"signature_def": json_format.MessageToDict(
                            signature_map, preserving_proto_field_name=True)},
                    }
                else:
                    response = grpc_service.status_response(manager.status(name, version))
                    payload = json_format.MessageToDict(
                        response, preserving_proto_field_name=True,
                        always_print_fields_with_no_presence=True)
                self._send(200, payload)
            except errors.ServingError as err:
                self._send(err.http_status, {"error": err.message})

        def do_POST(self):  # noqa: N802 - http.server API
            try:
                name, version, rest = self._route()
                length = int(self.headers.get("Content-Length") or 0)
                if max_body_bytes and length > max_body_bytes:
                    self.close_connection = True
                    raise errors.resource_exhausted(
                        f"Request body of {length} bytes exceeds the limit of {max_body_bytes}.")
                raw = self.rfile.read(length)
                if rest != ":predict":
                    raise errors.invalid_argument(f"Unsupported POST to {self.path}.")
                try:
                    body = json.loads(raw or b"{}")
                except ValueError as err:
                    raise errors.invalid_argument(f"JSON Parse error: {err}") from err
                if not isinstance(body, dict):
                    raise errors.invalid_argument("The request body must be a JSON object.")
                servable = manager.get(name, version)
                _, sig = servable.signature(body.get("signature_name", ""))
                inputs, row_format = parse_predict_body(body, sig)
                _, outputs = servable.predict(body.get("signature_name", ""), inputs)
                self._send(200, predict_json(outputs, row_format))
            except errors.ServingError as err:
                self._send(err.http_status, {"error": err.message})

    return Handler


class RestServer:
    """A threaded HTTP server in a daemon thread."""

    def __init__(self, manager, host, port, max_body_bytes=0):
        handler = make_handler(manager, max_body_bytes)
        self._httpd = http.server.ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="rest",
                                        daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)
