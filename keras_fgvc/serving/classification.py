"""TF Serving's example-based APIs (Classify, Regress) over one `Servable`.

The gRPC and REST front ends both build a ``ClassificationRequest`` /
``RegressionRequest`` and call these functions, so the two APIs give the same
answers and the same errors (as ``classifier.cc`` / ``regressor.cc`` of TF
Serving do). The ``Input`` is sent to the signature as serialized
``tf.Example`` s; with ``example_list_with_context`` each example is the
serialized context followed by the serialized example, which parses as their
merge (TF Serving's ``InputToSerializedExampleTensor``). Images in the
``image/encoded`` feature are held to the servable's pixel limits before the
model decodes them.
"""

import numpy as np
from tensorflow_serving.apis import classification_pb2

from keras_fgvc.serving import errors, limits
from keras_fgvc.serving.servable import DEFAULT_SIGNATURE

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
IMAGE_FEATURE = "image/encoded"


def encoded_images(model_input):
    """Every ``image/encoded`` bytes value the model will decode for an ``Input`` proto.

    A context's image is decoded once per example, so it is listed once per example.
    """
    which = model_input.WhichOneof("kind")
    if which == "example_list":
        examples = list(model_input.example_list.examples)
    elif which == "example_list_with_context":
        with_context = model_input.example_list_with_context
        examples = [with_context.context] * len(with_context.examples)
        examples += list(with_context.examples)
    else:
        examples = []
    values = []
    for example in examples:
        feature = example.features.feature.get(IMAGE_FEATURE)
        if feature is not None:
            values.extend(feature.bytes_list.value)
    return values


def serialized_examples(model_input):
    """The serialized ``tf.Example`` s of an ``Input`` proto, as an object array [batch]."""
    which = model_input.WhichOneof("kind")
    if which == "example_list":
        examples = [e.SerializeToString() for e in model_input.example_list.examples]
    elif which == "example_list_with_context":
        with_context = model_input.example_list_with_context
        context = with_context.context.SerializeToString()
        examples = [context + e.SerializeToString() for e in with_context.examples]
    else:
        examples = []
    if not examples:
        raise errors.invalid_argument("Input is empty.")
    array = np.empty(len(examples), dtype=object)
    array[:] = examples
    return array


def classify(servable, request, context=limits.NO_DEADLINE):
    """A ``ClassificationResponse`` for `request` (a ``ClassificationRequest``) on `servable`.

    `context`: the caller's `limits.CallContext` (checked before the model runs).
    """
    key, sig = servable.signature(request.model_spec.signature_name)
    if sig.method_name != CLASSIFY_METHOD:
        raise errors.invalid_argument(
            f"Expected classification signature method_name to be {CLASSIFY_METHOD}. "
            f"Was: {sig.method_name}")
    examples = serialized_examples(request.input)
    if len(sig.inputs) != 1:
        raise errors.invalid_argument("Expected one input Tensor.")
    input_key = next(iter(sig.inputs))
    request_limits = getattr(servable, "limits", None)
    if request_limits is not None:
        request_limits.check_batch(len(examples))
        request_limits.check_images(IMAGE_FEATURE, encoded_images(request.input))
    _, outputs = servable.predict(key, {input_key: examples}, context=context)
    response = classification_pb2.ClassificationResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = key
    scores = outputs.get("scores")
    classes = outputs.get("classes")
    first = scores if scores is not None else classes
    if first is None:
        raise errors.invalid_argument("Expected classification signature outputs to contain "
                                      "at least one of classes and scores.")
    for i in range(first.shape[0]):
        row = response.result.classifications.add()
        for j in range(first.shape[1]):
            item = row.classes.add()
            if classes is not None:
                label = classes[i][j]
                item.label = label.decode() if isinstance(label, bytes) else str(label)
            if scores is not None:
                item.score = float(scores[i][j])
    return response


def regress(servable, request):
    """Regress `request` (a ``RegressionRequest``) on `servable`.

    No exported model has a regression signature, so this only answers TF
    Serving's errors: a missing signature, or one whose method is not
    ``tensorflow/serving/regress``; a real regression signature is UNIMPLEMENTED.
    """
    key = request.model_spec.signature_name or DEFAULT_SIGNATURE
    sig = servable.signature_defs.get(key)
    if sig is None:
        raise errors.invalid_argument(f"No signature was found with the name: {key}")
    if sig.method_name != REGRESS_METHOD:
        raise errors.invalid_argument(
            f"Expected regression signature method_name to be {REGRESS_METHOD}. "
            f"Was: {sig.method_name}")
    raise errors.unimplemented("Regress is not implemented by the loopback server.")
