"""Classify / Regress on a fake servable: serialized examples, context, TF Serving errors."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from keras_fgvc.serving import classification, errors
from keras_fgvc.serving.servable import Servable

PREDICT_METHOD = "tensorflow/serving/predict"


def _signature(method, *inputs):
    sig = meta_graph_pb2.SignatureDef(method_name=method)
    for name in inputs:
        sig.inputs[name].dtype = tf.string.as_datatype_enum
    return sig


class _FakeServable:
    """Signature lookup of the real `Servable`; `predict` records its inputs."""

    name, version = "det", 3
    signature = Servable.signature

    def __init__(self):
        self.signature_defs = {
            "serving_default": _signature(PREDICT_METHOD, "image_bytes"),
            "classify": _signature(classification.CLASSIFY_METHOD, "inputs"),
            "regress": _signature(classification.REGRESS_METHOD, "inputs"),
        }
        self.inputs = None

    def predict(self, key, inputs, output_filter=(), context=None):
        self.inputs = inputs
        batch = len(inputs["inputs"])
        scores = np.tile(np.array([[0.25, 0.75]], np.float32), (batch, 1))
        classes = np.array([[b"cat", b"dog"]] * batch, object)
        return key, {"scores": scores, "classes": classes}


def _example(**features):
    example = tf.train.Example()
    for key, value in features.items():
        feature = example.features.feature[key]
        if isinstance(value, bytes):
            feature.bytes_list.value.append(value)
        else:
            feature.int64_list.value.append(value)
    return example


def test_serialized_examples_merge_the_context_into_each_example():
    model_input = input_pb2.Input()
    with_context = model_input.example_list_with_context
    with_context.context.CopyFrom(_example(image=b"ctx", k=1))
    with_context.examples.extend([_example(id=1), _example(id=2, k=5)])
    serialized = classification.serialized_examples(model_input)
    assert serialized.dtype == object and serialized.shape == (2,)
    parsed = tf.io.parse_example(serialized, {
        "image": tf.io.FixedLenFeature([], tf.string),
        "id": tf.io.FixedLenFeature([], tf.int64),
        "k": tf.io.FixedLenFeature([], tf.int64)})
    assert parsed["image"].numpy().tolist() == [b"ctx", b"ctx"]
    assert parsed["id"].numpy().tolist() == [1, 2]
    assert parsed["k"].numpy().tolist() == [1, 5]  # an example's feature wins over the context
    plain = input_pb2.Input()
    plain.example_list.examples.append(_example(id=7))
    assert list(classification.serialized_examples(plain)) == [_example(id=7).SerializeToString()]
    for empty in (input_pb2.Input(), input_pb2.Input(example_list=input_pb2.ExampleList())):
        with pytest.raises(errors.ServingError, match="Input is empty."):
            classification.serialized_examples(empty)


def test_classify_response_and_tf_serving_errors():
    servable = _FakeServable()
    request = classification_pb2.ClassificationRequest()
    request.model_spec.signature_name = "classify"
    request.input.example_list.examples.extend([_example(id=1), _example(id=2)])
    response = classification.classify(servable, request)
    assert list(servable.inputs["inputs"]) == [_example(id=i).SerializeToString() for i in (1, 2)]
    assert response.model_spec.name == "det" and response.model_spec.version.value == 3
    assert response.model_spec.signature_name == "classify"
    assert [[(c.label, c.score) for c in row.classes]
            for row in response.result.classifications] == [[("cat", 0.25), ("dog", 0.75)]] * 2

    request.model_spec.signature_name = ""
    with pytest.raises(errors.ServingError) as info:
        classification.classify(servable, request)
    assert info.value.message == ("Expected classification signature method_name to be "
                                  "tensorflow/serving/classify. Was: tensorflow/serving/predict")

    regress = regression_pb2.RegressionRequest()
    regress.input.CopyFrom(request.input)
    for signature_name, code, message in [
        ("", grpc.StatusCode.INVALID_ARGUMENT,
         "Expected regression signature method_name to be tensorflow/serving/regress. "
         "Was: tensorflow/serving/predict"),
        ("nope", grpc.StatusCode.INVALID_ARGUMENT, "No signature was found with the name: nope"),
        ("regress", grpc.StatusCode.UNIMPLEMENTED,
         "Regress is not implemented by the loopback server."),
    ]:
        regress.model_spec.signature_name = signature_name
        with pytest.raises(errors.ServingError) as info:
            classification.regress(servable, regress)
        assert (info.value.code, info.value.message) == (code, message)
