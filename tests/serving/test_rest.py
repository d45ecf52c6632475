"""REST body parsing and response formatting (TF Serving's row and columnar formats)."""

import base64

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from keras_fgvc.serving import errors, rest


def _signature(**inputs):
    sig = meta_graph_pb2.SignatureDef()
    for name, dtype in inputs.items():
        sig.inputs[name].dtype = dtype
    return sig


def test_row_format_with_b64():
    sig = _signature(image_bytes=types_pb2.DT_STRING)
    body = {"instances": [{"b64": base64.b64encode(b"\x89PNG1").decode()},
                          {"b64": base64.b64encode(b"\xff\xd8\xff2").decode()}]}
    inputs, row_format = rest.parse_predict_body(body, sig)
    assert row_format
    assert list(inputs["image_bytes"]) == [b"\x89PNG1", b"\xff\xd8\xff2"]
    named = {"instances": [{"image_bytes": {"b64": base64.b64encode(b"abc").decode()}}]}
    assert list(rest.parse_predict_body(named, sig)[0]["image_bytes"]) == [b"abc"]


def test_columnar_format_and_dtypes():
    sig = _signature(images=types_pb2.DT_FLOAT)
    inputs, row_format = rest.parse_predict_body({"inputs": [[1, 2], [3, 4]]}, sig)
    assert not row_format
    assert inputs["images"].dtype == np.float32
    np.testing.assert_array_equal(inputs["images"], [[1, 2], [3, 4]])
    inputs, _ = rest.parse_predict_body({"inputs": {"images": [[1.5]]}}, sig)
    np.testing.assert_array_equal(inputs["images"], [[1.5]])
    with pytest.raises(errors.ServingError, match="cannot convert to float32"):
        rest.parse_predict_body({"inputs": [["a"]]}, sig)


def test_bad_bodies_are_invalid_argument():
    sig = _signature(image_bytes=types_pb2.DT_STRING)
    for body, message in [
        ({}, "Missing 'instances' or 'inputs'"),
        ({"instances": [], "inputs": []}, "both"),
        ({"instances": "x"}, "must be a list"),
        ({"instances": [{"b64": "%%%"}]}, "Invalid b64"),
        ({"instances": [3]}, "to be string"),
    ]:
        with pytest.raises(errors.ServingError, match=message) as info:
            rest.parse_predict_body(body, sig)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.http_status == 400


def test_predict_json():
    outputs = {"scores": np.array([[0.5, 0.25]], np.float32),
               "detected": np.array([[True, False]]),
               "class_names": np.array([b"a"], object)}
    rows = rest.predict_json({k: outputs[k] for k in ("scores", "detected")}, True)
    assert rows == {"predictions": [{"scores": [0.5, 0.25], "detected": [True, False]}]}
    assert rest.predict_json({"scores": outputs["scores"]}, True) == {
        "predictions": [[0.5, 0.25]]}
    assert rest.predict_json({"class_names": outputs["class_names"]}, False) == {
        "outputs": ["a"]}
    assert rest.predict_json({"x_bytes": np.array([b"\x00"], object)}, False) == {
        "outputs": [{"b64": "AA=="}]}
