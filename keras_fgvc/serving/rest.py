"""TF Serving's REST API on ``--rest_api_port``.

- ``GET  /v1/models/NAME[/versions/V]``            model status
- ``GET  /v1/models/NAME[/versions/V]/metadata``   signature defs
- ``POST /v1/models/NAME[/versions/V]:predict``    ``{"signature_name", "instances" | "inputs"}``
- ``POST /v1/models/NAME[/versions/V]:classify``   ``{"signature_name", "context", "examples"}``
  -> ``{"results": [[[label, score], ...], ...]}``
- ``POST /v1/models/NAME[/versions/V]:regress``    same body; answers TF Serving's errors

``/labels/L`` may stand for ``/versions/V`` (NOT_FOUND, as on gRPC: labels
are not supported). Classify and regress build the gRPC request proto from
the JSON (feature values: numbers, strings, ``true`` / ``false``, or lists of
them) and call the same code as the gRPC API (`classification`). Binary
values are ``{"b64": "..."}``; outputs whose name ends in ``_bytes`` come back
the same way. Errors are ``{"error": "..."}`` with TF Serving's HTTP status
for the gRPC code.

HTTP itself (framing, timeouts, connection, header and body limits) is
`http_server`'s; here the body's JSON nesting is bounded before it is parsed
(``--rest_max_json_depth``), and POSTs are admitted by the server's shared
`limits.Admission`.
"""

import base64
import dataclasses
import json
import logging
import re

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    model_pb2,
    regression_pb2,
)

from keras_fgvc.serving import classification, errors, grpc_service, http_server, limits

LOG = logging.getLogger("keras_fgvc.serving")
_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)"
                   r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                   r"(?P<rest>/metadata|:predict|:classify|:regress)?$")
_INT64_RANGE = (-(2**63), 2**63 - 1)
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_DEPTH_CHUNK = 1 << 20
DEFAULT_MAX_JSON_DEPTH = 32
_FLOAT32_MAX = float(np.finfo(np.float32).max)


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


def _json_type(value):
    for kind, name in ((type(None), "null"), (bool, "bool"), ((int, float), "number"),
                       (str, "string"), (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _add_feature_value(feature, name, value):
    """Append one JSON value to a ``tf.train.Feature`` (TF Serving's JSON -> Example rules)."""
    if isinstance(value, bool):
        kind, item = "int64_list", int(value)
    elif isinstance(value, int):
        if not _INT64_RANGE[0] <= value <= _INT64_RANGE[1]:
            raise errors.invalid_argument(
                f"Feature: {name} has element {value} outside the int64 range.")
        kind, item = "int64_list", value
    elif isinstance(value, float):
        if np.isfinite(value) and abs(value) > _FLOAT32_MAX:
            raise errors.invalid_argument(
                f"Feature: {name} has element {value} that does not fit in a float.")
        kind, item = "float_list", value
    elif isinstance(value, str):
        try:
            kind, item = "bytes_list", value.encode()
        except UnicodeEncodeError as err:
            raise errors.invalid_argument(f"Feature: {name} is not valid UTF-8: {err}") from err
    elif isinstance(value, dict) and set(value) == {"b64"}:
        kind, item = "bytes_list", _decode_value(value)
    else:
        raise errors.invalid_argument(
            f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}")
    current = feature.WhichOneof("kind")
    if current not in (None, kind):
        raise errors.invalid_argument(
            f"Unexpected element type in feature: {name} expecting type: "
            f"{current.removesuffix('_list')}")
    getattr(feature, kind).value.append(item)


def _example(where, value):
    if not isinstance(value, dict):
        raise errors.invalid_argument(
            f"{where} must be a JSON object of features but got JSON {_json_type(value)}.")
    example = example_pb2.Example()
    for name, content in value.items():
        feature = example.features.feature[name]
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(feature, name, item)
    return example


def parse_examples_body(body, request, method="classify"):
    """Fill `request` (a Classification- or RegressionRequest) from a :classify / :regress body.

    Sets ``model_spec.signature_name`` and ``input``: ``example_list``, or
    ``example_list_with_context`` when the body has a ``context``. Returns `request`.
    """
    signature_name = body.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise errors.invalid_argument("'signature_name' must be a string.")
    request.model_spec.signature_name = signature_name
    if "examples" not in body:
        raise errors.invalid_argument(
            f"When method is {method}, key 'examples' is expected and was not found.")
    examples = body["examples"]
    if not isinstance(examples, list):
        raise errors.invalid_argument("Expecting 'examples' value to be a list/array.")
    if not examples:
        raise errors.invalid_argument("'examples' value is an empty array.")
    if "context" in body:
        target = request.input.example_list_with_context
        target.context.CopyFrom(_example("'context'", body["context"]))
    else:
        target = request.input.example_list
    for i, item in enumerate(examples):
        target.examples.add().CopyFrom(_example(f"examples[{i}]", item))
    return request


def classify_json(response):
    """TF Serving's classify response body for a ``ClassificationResponse``."""
    return {"results": [[[c.label, c.score] for c in row.classes]
                        for row in response.result.classifications]}


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
