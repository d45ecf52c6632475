"""Client: retries on UNAVAILABLE with backoff, deadlines, output formatting (fake server)."""

import concurrent.futures
import socket
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from keras_fgvc.serving import client as client_lib


class _Flaky(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, failures, sleep_s=0.0):
        self.failures = failures
        self.sleep_s = sleep_s
        self.calls = 0
        self.lock = threading.Lock()

    def Predict(self, request, context):  # noqa: N802
        with self.lock:
            self.calls += 1
            fail = self.calls <= self.failures
        if fail:
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        time.sleep(self.sleep_s)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = 3
        x = tf.make_ndarray(request.inputs["x"])
        response.outputs["y"].CopyFrom(tf.make_tensor_proto(x * 2))
        assert request.model_spec.signature_name == "sig"
        return response


@pytest.fixture
def fake_server():
    servers = []

    def start(servicer):
        server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(0).wait()


def test_retries_unavailable_then_succeeds(fake_server):
    servicer = _Flaky(failures=2)
    with client_lib.PredictionClient(fake_server(servicer), backoff_s=0.01) as client:
        out, version = client.predict("m", {"x": np.arange(3.0)}, signature_name="sig")
        assert client.retries == 2
    np.testing.assert_array_equal(out["y"], [0.0, 2.0, 4.0])
    assert version == 3 and servicer.calls == 3


def test_gives_up_after_max_retries(fake_server):
    servicer = _Flaky(failures=100)
    with client_lib.PredictionClient(fake_server(servicer), max_retries=2,
                                     backoff_s=0.01) as client:
        with pytest.raises(grpc.RpcError) as info:
            client.predict("m", {"x": np.arange(3.0)}, signature_name="sig")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.calls == 3


def test_deadline_is_enforced_and_not_retried(fake_server):
    servicer = _Flaky(failures=0, sleep_s=1.0)
    with client_lib.PredictionClient(fake_server(servicer), timeout_s=0.2) as client:
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            client.predict("m", {"x": np.arange(3.0)}, signature_name="sig")
        assert time.monotonic() - start < 0.9
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert servicer.calls == 1


def test_no_server_fails_within_the_deadline():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with client_lib.PredictionClient(f"127.0.0.1:{port}", timeout_s=1.0,
                                     backoff_s=0.05) as client:
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            client.predict("m", {"x": np.arange(3.0)}, signature_name="sig")
        assert time.monotonic() - start < 3.0
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_format_detections():
    outputs = {
        "scores": np.array([[0.9, 0.2, 0.7], [0.1, 0.2, 0.3]], np.float32),
        "detected": np.array([[True, False, True], [False, False, False]]),
        "background": np.array([0.05, 0.8], np.float32),
    }
    lines = client_lib.format_detections(["a.png", "b.jpg"], outputs, ["x", "y", "z"])
    assert lines == ["a.png: x (0.900), z (0.700)", "b.jpg: background (0.800)"]
    assert client_lib.detections(outputs, ["x", "y", "z"]) == [
        [("x", pytest.approx(0.9)), ("z", pytest.approx(0.7))], []]


def test_bad_arguments():
    with pytest.raises(ValueError, match="timeout_s"):
        client_lib.PredictionClient(timeout_s=0)
    with pytest.raises(ValueError, match="max_retries"):
        client_lib.PredictionClient(max_retries=-1)
