"""The server bounds the work of every request (issue 18), against the exported example detector.

An in-process `ModelServer` (gRPC + REST on 127.0.0.1) serves the Fashion-MNIST
detector. Each case sends what an attacker sent: a request that is tiny on
the wire but declares gigabytes, an image header declaring 400 megapixels,
more requests than the server admits, a caller gone before the model runs,
and a version copied in two steps. Each is answered quickly, or loads.
"""

import http.client
import json
import os
import shutil
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

from keras_fgvc.export import saved_model
from keras_fgvc.serving import grpc_service, server
from keras_fgvc.serving.client import PredictionClient
from keras_fgvc.serving.launch import free_port
from tests.fixtures import example_detector
from tests.serving.image_files import png_header

pytestmark = pytest.mark.slow

NAMES = ["sandal", "bag", "ankle_boot"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model, images, _ = example_detector.cached_example_detector()
    base = str(tmp_path_factory.mktemp("hardening") / "det")
    saved_model.export_model(model, os.path.dirname(base), "det", NAMES, warmup_batch_sizes=())
    options = server.ServerOptions(port=0, rest_api_port=free_port(), model_name="det",
                                   model_base_path=base, file_system_poll_wait_seconds=0.2)
    model_server = server.ModelServer(options).start()
    client = PredictionClient(f"127.0.0.1:{model_server.port}", timeout_s=30, max_retries=0)
    try:
        yield {"server": model_server, "client": client, "base": base, "model": model,
               "png": tf.io.encode_png(images[0]).numpy()}
    finally:
        client.close()
        model_server.stop(grace_seconds=0)


def _declared(shape, dtype, values=()):
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for d in shape:
        proto.tensor_shape.dim.add().size = d
    if dtype == types_pb2.DT_STRING:
        proto.string_val.extend(values)
    return proto


def _raw_predict(client, signature, key, proto, timeout=30):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "det"
    request.model_spec.signature_name = signature
    request.inputs[key].CopyFrom(proto)
    return client._predict.Predict(request, timeout=timeout)


def test_tiny_requests_declaring_huge_tensors_are_refused_at_once(served):
    client, png = served["client"], served["png"]
    cases = [
        # 22 bytes on the wire, [20000, 28, 28, 1] floats declared: was 3.9 GB and 39 s.
        ("predict_images", "images", _declared([20000, 28, 28, 1], types_pb2.DT_FLOAT),
         grpc.StatusCode.INVALID_ARGUMENT, "declares 15680000 values but 0 were sent"),
        ("serving_default", "image_bytes", _declared([20000], types_pb2.DT_STRING, [png]),
         grpc.StatusCode.INVALID_ARGUMENT, "declares 20000 values but 1 were sent"),
        # A 20000 x 20000 PNG header: refused before decoding (was +1.9 GB).
        ("serving_default", "image_bytes",
         _declared([1], types_pb2.DT_STRING, [png_header(20000, 20000) + b"\0" * 64]),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "20000 x 20000 png image"),
        # More rows than the default --max_batch_size (256), each a valid image.
        ("serving_default", "image_bytes", _declared([257], types_pb2.DT_STRING, [png] * 257),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than the maximum batch size 256"),
    ]
    for signature, key, proto, code, message in cases:
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            _raw_predict(client, signature, key, proto)
        assert time.monotonic() - start < 2.0, message
        assert info.value.code() == code and message in info.value.details(), info.value
    outputs, _ = client.predict("det", {"image_bytes": np.array([png], object)})
    assert outputs["scores"].shape == (1, 3)  # and the server keeps serving


def test_over_the_concurrency_limit_is_resource_exhausted_on_grpc_and_rest(served):
    model_server, client, png = served["server"], served["client"], served["png"]
    admission = model_server.admission
    held = [admission.admit() for _ in range(admission.max_concurrent)]
    try:
        with pytest.raises(grpc.RpcError) as info:
            client.predict("det", {"image_bytes": np.array([png], object)})
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max_concurrent_requests" in info.value.details()
        conn = http.client.HTTPConnection("127.0.0.1", model_server.rest_port, timeout=10)
        conn.request("POST", "/v1/models/det:predict", json.dumps({"instances": []}))
        response = conn.getresponse()
        assert response.status == 429 and "error" in json.loads(response.read())
        conn.close()
    finally:
        for slot in held:
            slot.__exit__(None, None, None)
    assert client.predict("det", {"image_bytes": np.array([png], object)})[0]["scores"].size


class _GoneCaller:
    """A `grpc.ServicerContext` whose caller cancelled, or whose deadline passed."""

    def __init__(self, active, remaining):
        self.active, self.remaining, self.aborted = active, remaining, None

    def is_active(self):
        return self.active

    def time_remaining(self):
        return self.remaining

    def abort(self, code, details):
        self.aborted = (code, details)
        raise grpc.RpcError(details)


def test_no_model_call_once_the_caller_is_gone(served, monkeypatch):
    manager = served["server"].manager
    servable = manager.get("det")
    calls = []
    monkeypatch.setattr(servable, "run_unbatched", lambda *a, **k: calls.append(a))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "det"
    request.inputs["image_bytes"].CopyFrom(
        _declared([1], types_pb2.DT_STRING, [served["png"]]))
    servicer = grpc_service.PredictionServicer(manager)
    for context, code in [(_GoneCaller(True, 0.0), grpc.StatusCode.DEADLINE_EXCEEDED),
                          (_GoneCaller(False, 5.0), grpc.StatusCode.CANCELLED)]:
        with pytest.raises(grpc.RpcError):
            servicer.Predict(request, context)
        assert context.aborted[0] == code
    assert calls == []


def test_rest_bad_bodies_of_the_issue_get_json_400(served):
    conn = http.client.HTTPConnection("127.0.0.1", served["server"].rest_port, timeout=10)
    nested = {"instances": json.loads("[" * 900 + "]" * 900)}
    try:
        for body, message in [
            ({"signature_name": ["x"]}, "must be a string"),
            (nested, "nested deeper than"),
            ({"signature_name": "predict_images", "instances": [[[[float("nan")]] * 28] * 28]},
             "NaN"),
        ]:
            conn.request("POST", "/v1/models/det:predict", json.dumps(body))
            response = conn.getresponse()
            payload = json.loads(response.read())
            assert response.status == 400 and message in payload["error"], payload
    finally:
        conn.close()


def test_version_whose_variables_arrive_later_loads_once_complete(served):
    base, client = served["base"], served["client"]
    current = max(int(v) for v in os.listdir(base) if v.isdigit())
    staged = os.path.join(os.path.dirname(base), "staged")
    shutil.copytree(os.path.join(base, str(current)), staged)
    new = os.path.join(base, str(current + 1))
    os.makedirs(new)
    for name in os.listdir(staged):  # step 1: everything but variables/
        if name != "variables":
            src = os.path.join(staged, name)
            (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, os.path.join(new, name))
    time.sleep(1.5)  # the server tries (and fails) to load the incomplete version
    shutil.copytree(os.path.join(staged, "variables"), os.path.join(new, "variables"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = {s["version"]: s["state"] for s in client.get_model_status("det")}
        if status.get(current + 1) == "AVAILABLE":
            break
        time.sleep(0.2)
    assert status.get(current + 1) == "AVAILABLE", status
    _, version = client.predict("det", {"image_bytes": np.array([served["png"]], object)})
    assert version == current + 1
