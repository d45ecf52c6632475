"""REST body parsing and response formatting (predict row / columnar formats, classify)."""

import base64

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import classification_pb2, regression_pb2

from keras_fgvc.serving import errors, rest_json


def _signature(**inputs):
    sig = meta_graph_pb2.SignatureDef()
    for name, dtype in inputs.items():
        sig.inputs[name].dtype = dtype
    return sig


def test_row_format_with_b64():
    sig = _signature(image_bytes=types_pb2.DT_STRING)
    body = {"instances": [{"b64": base64.b64encode(b"\x89PNG1").decode()},
                          {"b64": base64.b64encode(b"\xff\xd8\xff2").decode()}]}
    inputs, row_format = rest_json.parse_predict_body(body, sig)
    assert row_format
    assert list(inputs["image_bytes"]) == [b"\x89PNG1", b"\xff\xd8\xff2"]
    named = {"instances": [{"image_bytes": {"b64": base64.b64encode(b"abc").decode()}}]}
    assert list(rest_json.parse_predict_body(named, sig)[0]["image_bytes"]) == [b"abc"]


def test_columnar_format_and_dtypes():
    sig = _signature(images=types_pb2.DT_FLOAT)
    inputs, row_format = rest_json.parse_predict_body({"inputs": [[1, 2], [3, 4]]}, sig)
    assert not row_format
    assert inputs["images"].dtype == np.float32
    np.testing.assert_array_equal(inputs["images"], [[1, 2], [3, 4]])
    inputs, _ = rest_json.parse_predict_body({"inputs": {"images": [[1.5]]}}, sig)
    np.testing.assert_array_equal(inputs["images"], [[1.5]])
    with pytest.raises(errors.ServingError, match="cannot convert to float32"):
        rest_json.parse_predict_body({"inputs": [["a"]]}, sig)


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
            rest_json.parse_predict_body(body, sig)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.http_status == 400


def test_predict_json():
    outputs = {"scores": np.array([[0.5, 0.25]], np.float32),
               "detected": np.array([[True, False]]),
               "class_names": np.array([b"a"], object)}
    rows = rest_json.predict_json({k: outputs[k] for k in ("scores", "detected")}, True)
    assert rows == {"predictions": [{"scores": [0.5, 0.25], "detected": [True, False]}]}
    assert rest_json.predict_json({"scores": outputs["scores"]}, True) == {
        "predictions": [[0.5, 0.25]]}
    assert rest_json.predict_json({"class_names": outputs["class_names"]}, False) == {
        "outputs": ["a"]}
    assert rest_json.predict_json({"x_bytes": np.array([b"\x00"], object)}, False) == {
        "outputs": [{"b64": "AA=="}]}


def test_examples_body_to_classification_request():
    image = base64.b64encode(b"\x89PNG\x00").decode()
    body = {"signature_name": "classify",
            "examples": [{"image/encoded": {"b64": image}, "caption": "seaside",
                          "ids": [1, -2], "weight": 0.5, "ok": True, "tags": []},
                         {"image/encoded": [{"b64": image}, "x"]}]}
    request = rest_json.parse_examples_body(body, classification_pb2.ClassificationRequest())
    assert request.model_spec.signature_name == "classify"
    assert request.input.WhichOneof("kind") == "example_list"
    first, second = request.input.example_list.examples
    feature = first.features.feature
    assert list(feature["image/encoded"].bytes_list.value) == [b"\x89PNG\x00"]
    assert list(feature["caption"].bytes_list.value) == [b"seaside"]
    assert list(feature["ids"].int64_list.value) == [1, -2]
    assert list(feature["weight"].float_list.value) == [0.5]
    assert list(feature["ok"].int64_list.value) == [1]
    assert feature["tags"].WhichOneof("kind") is None
    assert list(second.features.feature["image/encoded"].bytes_list.value) == [
        b"\x89PNG\x00", b"x"]

    body = {"context": {"image/encoded": {"b64": image}}, "examples": [{"id": 1}, {}]}
    request = rest_json.parse_examples_body(body, regression_pb2.RegressionRequest(), "regress")
    assert request.model_spec.signature_name == ""
    with_context = request.input.example_list_with_context
    assert list(with_context.context.features.feature["image/encoded"].bytes_list.value) == [
        b"\x89PNG\x00"]
    assert [list(e.features.feature) for e in with_context.examples] == [["id"], []]


def test_bad_examples_bodies_are_invalid_argument():
    for body, message in [
        ({}, "When method is classify, key 'examples' is expected and was not found."),
        ({"examples": {"x": 1}}, "Expecting 'examples' value to be a list/array."),
        ({"examples": []}, "'examples' value is an empty array."),
        ({"examples": [3]}, "examples[0] must be a JSON object of features but got JSON number."),
        ({"examples": [{}], "context": [1]}, "'context' must be a JSON object"),
        ({"examples": [{}], "signature_name": 5}, "'signature_name' must be a string."),
        ({"examples": [{"x": [[1]]}]}, "Feature: x has element with unexpected JSON type: array"),
        ({"examples": [{"x": None}]}, "Feature: x has element with unexpected JSON type: null"),
        ({"examples": [{"x": {"a": 1}}]}, "Feature: x has element with unexpected JSON type: "
                                          "object"),
        ({"examples": [{"x": [1, "a"]}]}, "Unexpected element type in feature: x expecting "
                                          "type: int64"),
        ({"examples": [{"x": [1.5, 2]}]}, "Unexpected element type in feature: x expecting "
                                          "type: float"),
        ({"examples": [{"x": 2**64}]}, "outside the int64 range"),
        ({"examples": [{"x": 1e300}]}, "does not fit in a float"),
        ({"examples": [{"x": {"b64": "%%%"}}]}, "Invalid b64"),
        ({"examples": [{"x": {"b64": 3}}]}, "Invalid b64"),
        ({"examples": [{"x": "\ud800"}]}, "Feature: x is not valid UTF-8"),
    ]:
        with pytest.raises(errors.ServingError) as info:
            rest_json.parse_examples_body(body, classification_pb2.ClassificationRequest())
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert message in info.value.message, (body, info.value.message)


def test_classify_json():
    response = classification_pb2.ClassificationResponse()
    for labels, scores in [(["a", "b"], [0.5, 0.25]), (["a", "b"], [0.125, 1.0])]:
        row = response.result.classifications.add()
        for label, score in zip(labels, scores):
            row.classes.add(label=label, score=score)
    assert rest_json.classify_json(response) == {
        "results": [[["a", 0.5], ["b", 0.25]], [["a", 0.125], ["b", 1.0]]]}
