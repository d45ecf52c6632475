"""TF Serving's REST JSON bodies <-> NumPy inputs, outputs and Example protos.

- predict: ``{"signature_name", "instances" | "inputs"}`` -> NumPy arrays
  typed by the signature (`parse_predict_body`); outputs -> ``{"predictions"}``
  (row format) or ``{"outputs"}`` (columnar) (`predict_json`);
- classify / regress: ``{"signature_name", "context", "examples"}`` -> the gRPC
  request proto (`parse_examples_body`; feature values: numbers, strings,
  ``true`` / ``false``, or lists of them); a ``ClassificationResponse`` ->
  ``{"results": [[[label, score], ...], ...]}`` (`classify_json`).

Binary values are ``{"b64": "..."}``; outputs whose name ends in ``_bytes``
come back the same way. Bad values raise `errors.ServingError` with TF
Serving's message. The routes and the HTTP side are `rest`'s.
"""

import base64

import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2

from keras_fgvc.serving import errors

_INT64_RANGE = (-(2**63), 2**63 - 1)
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
