"""End to end: train -> export -> loopback server subprocess -> gRPC / REST clients.

One server process serves the whole module (started once by the fixture);
tests run in file order and read the served version from the server rather
than assuming it.
"""

import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from keras_fgvc.export import model_config, saved_model, versions
from keras_fgvc.serving.client import PredictionClient
from keras_fgvc.serving.launch import free_ports, start_server
from tests.fixtures import example_detector

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMES = ["sandal", "bag", "ankle_boot"]
THRESHOLDS = [0.5, 0.4, 0.6]
MAX_MESSAGE_BYTES = 1_000_000
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def _png(image):
    return tf.io.encode_png(image).numpy()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    # The server starts first, on an empty model directory (as TF Serving may), and picks
    # up version 1 once it is exported; its start-up overlaps the training.
    root = tmp_path_factory.mktemp("serving")
    base = str(root / "models")
    model_config.write_model_config(os.path.join(base, "models.config"),
                                    [("det", os.path.join(base, "det"))])
    port, rest_port = free_ports(2)
    log_path = str(root / "server.log")
    server = start_server(
        [f"--port={port}", f"--rest_api_port={rest_port}",
         f"--model_config_file={base}/models.config",
         "--file_system_poll_wait_seconds=0.2", "--model_config_file_poll_wait_seconds=0.5",
         "--enable_batching",
         "--batch_timeout_micros=500", "--max_batch_size=16",
         f"--max_message_bytes={MAX_MESSAGE_BYTES}", "--grpc_max_threads=16",
         "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=2"],
        log_path, env=ENV, cwd=REPO)
    proc = server.proc
    client = PredictionClient(f"127.0.0.1:{port}", timeout_s=30.0)
    try:
        model, _, _ = example_detector.cached_example_detector()
        images, _ = example_detector.load_fashion_mnist("test", limit=32) or (
            np.random.default_rng(0).integers(0, 256, (32, 28, 28, 1), dtype=np.uint8), None)
        workdir = example_detector.write_example_workdir(model, str(root / "workdir"),
                                                         THRESHOLDS)
        saved_model.export_from_workdir(workdir, base, "det")
        client.wait_until_available("det", timeout_s=180)
        yield {"proc": proc, "client": client, "port": port, "rest_port": rest_port,
               "base": base, "model": model, "images": images, "workdir": workdir,
               "log": log_path}
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def _expected(model, images, thresholds=THRESHOLDS):
    probs = model(images.astype("float32"))["probabilities"].numpy()
    return {"scores": probs[:, 1:], "background": probs[:, 0],
            "detected": probs[:, 1:] >= np.asarray(thresholds)}


def _latest(served):
    return max(s["version"] for s in served["client"].get_model_status("det")
               if s["state"] == "AVAILABLE")


def test_predict_png_bytes_matches_in_process_model(served):
    client, images = served["client"], served["images"][:7]
    pngs = [_png(i) for i in images]
    outputs, version = client.predict("det", {"image_bytes": np.array(pngs, object)})
    assert version == 1
    assert sorted(outputs) == ["background", "detected", "scores"]
    expected = _expected(served["model"], images)
    for key, value in expected.items():
        np.testing.assert_allclose(outputs[key], value, rtol=1e-5, atol=1e-6)
    for batch in (1, 7):
        got = client.predict_images("det", images[:batch].astype("float32"))
        np.testing.assert_allclose(got["scores"], expected["scores"][:batch], rtol=1e-5,
                                   atol=1e-6)
    only_scores, _ = client.predict("det", {"image_bytes": np.array(pngs[:2], object)},
                                    output_filter=["scores"])
    assert list(only_scores) == ["scores"]


def test_metadata_status_and_labels(served):
    client = served["client"]
    signatures, version = client.get_model_metadata("det")
    assert version == 1
    assert sorted(signatures) == ["classify", "metadata", "predict_images", "serving_default"]
    assert signatures["classify"].method_name == "tensorflow/serving/classify"
    default = signatures["serving_default"]
    assert list(default.inputs) == ["image_bytes"]
    assert default.inputs["image_bytes"].dtype == tf.string.as_datatype_enum
    assert sorted(default.outputs) == ["background", "detected", "scores"]
    assert default.outputs["detected"].dtype == tf.bool.as_datatype_enum
    names, thresholds = client.labels("det")
    assert names == NAMES
    np.testing.assert_allclose(thresholds, THRESHOLDS, rtol=1e-6)
    assert client.get_model_status("det") == [
        {"version": 1, "state": "AVAILABLE", "error_code": 0, "error_message": ""}]


def test_bad_requests_get_tf_serving_status_codes(served):
    client, images = served["client"], served["images"]
    png = _png(images[0])
    ok = {"image_bytes": np.array([png], object)}
    invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    cases = [
        (dict(model_name="nope", inputs=ok), not_found, "Servable not found"),
        (dict(model_name="det", inputs=ok, version=99), not_found, "Specific(det, 99)"),
        (dict(model_name="det", inputs=ok, signature_name="nope"), invalid,
         'signature key "nope" not found'),
        (dict(model_name="det", inputs={}), invalid, "Missing but required: {image_bytes}"),
        (dict(model_name="det", inputs=ok, output_filter=["nope"]), invalid,
         "output tensor alias not found in signature: nope"),
        (dict(model_name="det", inputs={**ok, "extra": np.zeros(1)}), invalid,
         "Sent extra: {extra}"),
        (dict(model_name="det", inputs={"image_bytes": np.zeros(1, np.float32)}), invalid,
         "to be string but float32"),
        (dict(model_name="det", inputs={"image_bytes": np.array([[png]], object)}), invalid,
         "signature expects [-1]"),
        (dict(model_name="det", inputs={"images": np.zeros((1, 28, 28, 3), np.float32)},
              signature_name="predict_images"), invalid, "expects [-1,28,28,1]"),
        (dict(model_name="det", inputs={"image_bytes": np.array([b"GIF89a?"], object)}),
         invalid, ""),
        (dict(model_name="det", inputs={"image_bytes": np.array([b"hello"], object)}),
         invalid, "not a JPEG, PNG, GIF, BMP or WebP image"),
        (dict(model_name="det", inputs={"image_bytes": np.array([png[:60]], object)}),
         invalid, ""),
        (dict(model_name="det", inputs={"image_bytes": np.array([png] * 17, object)}),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than the maximum batch size 16"),
        (dict(model_name="det", inputs={"image_bytes": np.array([b"\x89PNG" * 300_000],
                                                                 object)}),
         grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    ]
    for kwargs, code, message in cases:
        with pytest.raises(grpc.RpcError) as info:
            client.predict(**kwargs)
        assert info.value.code() == code, (kwargs, info.value.details())
        assert message in info.value.details()
        # ... and the server keeps serving.
        np.testing.assert_allclose(client.predict("det", ok)[0]["scores"],
                                   _expected(served["model"], images[:1])["scores"], rtol=1e-5,
                                   atol=1e-6)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(client._channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "det"
    request.metadata_field.append("nope")
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModelMetadata(request, timeout=30)
    assert info.value.code() == invalid
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "det"
    classify.model_spec.signature_name = "serving_default"
    classify.input.example_list.examples.add()
    with pytest.raises(grpc.RpcError) as info:
        stub.Classify(classify, timeout=30)
    assert info.value.code() == invalid and "classification signature" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        client.get_model_status("nope")
    assert info.value.code() == not_found


def test_classify(served):
    images = served["images"][:3]
    stub = prediction_service_pb2_grpc.PredictionServiceStub(served["client"]._channel)
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "det"
    request.model_spec.signature_name = "classify"
    for image in images:
        example = request.input.example_list.examples.add()
        example.features.feature["image/encoded"].bytes_list.value.append(_png(image))
    response = stub.Classify(request, timeout=30)
    assert response.model_spec.version.value == 1
    expected = _expected(served["model"], images)["scores"]
    assert len(response.result.classifications) == 3
    for row, scores in zip(response.result.classifications, expected):
        assert [c.label for c in row.classes] == NAMES
        np.testing.assert_allclose([c.score for c in row.classes], scores, rtol=1e-5, atol=1e-6)


def _grpc_classify(stub, pngs):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "det"
    request.model_spec.signature_name = "classify"
    for png in pngs:
        example = request.input.example_list.examples.add()
        example.features.feature["image/encoded"].bytes_list.value.append(png)
    return stub.Classify(request, timeout=30)


def test_rest_classify_matches_grpc_and_regress_answers_tf_serving_error(served):
    pngs = [_png(i) for i in served["images"][:3]]
    b64 = [{"b64": base64.b64encode(p).decode()} for p in pngs]
    stub = prediction_service_pb2_grpc.PredictionServiceStub(served["client"]._channel)
    expected = [[[c.label, c.score] for c in row.classes]
                for row in _grpc_classify(stub, pngs).result.classifications]
    version = _latest(served)
    # One keep-alive connection throughout: an error answer never drops it.
    conn = http.client.HTTPConnection("127.0.0.1", served["rest_port"], timeout=30)

    def post(path, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("POST", f"/v1/models/det{path}", data,
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())

    def assert_results(payload, rows):
        assert [[label for label, _ in row] for row in payload["results"]] == [
            [label for label, _ in row] for row in rows]
        np.testing.assert_allclose([[s for _, s in row] for row in payload["results"]],
                                   [[s for _, s in row] for row in rows], rtol=0, atol=1e-6)

    try:
        for path in (":classify", f"/versions/{version}:classify"):
            status, payload = post(path, {"signature_name": "classify",
                                          "examples": [{"image/encoded": v} for v in b64]})
            assert status == 200, payload
            assert [[label for label, _ in row] for row in payload["results"]] == [NAMES] * 3
            assert_results(payload, expected)
        # Context features are shared by every example (extra features are ignored).
        status, payload = post(":classify", {"signature_name": "classify",
                                             "context": {"image/encoded": b64[1]},
                                             "examples": [{"id": 1}, {"id": [2, 3]}]})
        assert status == 200, payload
        assert_results(payload, [expected[1], expected[1]])

        ok = {"signature_name": "classify", "examples": [{"image/encoded": b64[0]}]}
        for path, body, code, message in [
            (":classify", b'{"examples": [', 400, "JSON Parse error"),
            (":classify", b"[]", 400, "must be a JSON object"),
            (":classify", {"signature_name": "classify"}, 400, "key 'examples' is expected"),
            (":classify", {**ok, "examples": []}, 400, "'examples' value is an empty array"),
            (":classify", {**ok, "examples": "x"}, 400, "to be a list/array"),
            (":classify", {**ok, "examples": [[1]]}, 400, "must be a JSON object of features"),
            (":classify", {**ok, "examples": [{"image/encoded": [[1]]}]}, 400,
             "unexpected JSON type: array"),
            (":classify", {**ok, "examples": [{"image/encoded": {"b64": "%"}}]}, 400,
             "Invalid b64"),
            (":classify", {**ok, "signature_name": ["classify"]}, 400, "must be a string"),
            (":classify", {**ok, "examples": [{"id": 1}]}, 400, "image/encoded"),
            (":classify", {**ok, "examples": [{"image/encoded": "not an image"}]}, 400, ""),
            (":classify", {**ok, "signature_name": "serving_default"}, 400,
             "Expected classification signature method_name to be tensorflow/serving/classify."
             " Was: tensorflow/serving/predict"),
            (":classify", {**ok, "signature_name": "nope"}, 400, 'signature key "nope" not found'),
            ("/versions/42:classify", ok, 404, "Specific(det, 42)"),
            ("/labels/stable:classify", ok, 404, "Label(det, stable)"),
            (":regress", {"examples": [{"x": 1.0}]}, 400,
             "Expected regression signature method_name to be tensorflow/serving/regress. "
             "Was: tensorflow/serving/predict"),
            (":regress", {"signature_name": "nope", "examples": [{"x": 1.0}]}, 400,
             "No signature was found with the name: nope"),
            (":regress", {"examples": []}, 400, "'examples' value is an empty array"),
        ]:
            status, payload = post(path, body)
            assert status == code and isinstance(payload.get("error"), str), (path, payload)
            assert message in payload["error"], (path, body, payload)
            assert "Traceback" not in payload["error"]
        status, payload = post(":classify", ok)  # the same connection still serves
        assert status == 200
        assert_results(payload, expected[:1])
    finally:
        conn.close()
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "det"
    regress.input.example_list.examples.add()
    with pytest.raises(grpc.RpcError) as info:
        stub.Regress(regress, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == ("Expected regression signature method_name to be "
                                    "tensorflow/serving/regress. Was: tensorflow/serving/predict")


def _http(url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_rest_api(served):
    root = f"http://127.0.0.1:{served['rest_port']}/v1/models"
    status, payload = _http(f"{root}/det")
    assert status == 200
    assert payload["model_version_status"][0]["version"] == "1"
    assert payload["model_version_status"][0]["state"] == "AVAILABLE"
    status, payload = _http(f"{root}/det/metadata")
    assert status == 200 and payload["model_spec"]["version"] == "1"
    sigs = payload["metadata"]["signature_def"]["signature_def"]
    assert sorted(sigs["serving_default"]["outputs"]) == ["background", "detected", "scores"]
    images = served["images"][:3]
    instances = [{"b64": base64.b64encode(_png(i)).decode()} for i in images]
    status, payload = _http(f"{root}/det:predict", {"instances": instances})
    assert status == 200, payload
    expected = _expected(served["model"], images)
    np.testing.assert_allclose([p["scores"] for p in payload["predictions"]],
                               expected["scores"], rtol=1e-5, atol=1e-6)
    assert [p["detected"] for p in payload["predictions"]] == expected["detected"].tolist()
    status, payload = _http(f"{root}/det/versions/1:predict", {
        "signature_name": "predict_images", "inputs": images.astype("float32").tolist()})
    assert status == 200
    np.testing.assert_allclose(payload["outputs"]["background"], expected["background"],
                               rtol=1e-5, atol=1e-6)
    for url, body, code in [
        (f"{root}/nope", None, 404),
        (f"{root}/det:predict", {"instances": [{"b64": base64.b64encode(b"x").decode()}]}, 400),
        (f"{root}/det:predict", {"signature_name": "nope", "instances": []}, 400),
        (f"{root}/det/versions/42:predict", {"instances": instances}, 404),
    ]:
        status, payload = _http(url, body)
        assert status == code and isinstance(payload.get("error"), str), (url, payload)


def test_cli_prints_detections_or_background(served, tmp_path):
    images = served["images"]
    expected = _expected(served["model"], images)
    hit = int(np.flatnonzero(expected["detected"].any(axis=1))[0])
    miss = int(np.flatnonzero(~expected["detected"].any(axis=1))[0])
    paths = []
    for index in (hit, miss):
        path = str(tmp_path / f"img{index}.png")
        with open(path, "wb") as f:
            f.write(_png(images[index]))
        paths.append(path)
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "serving", "client.py"), "--server",
         f"127.0.0.1:{served['port']}", "--model", "det", *paths],
        capture_output=True, text=True, timeout=300, env=ENV, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    classes = [NAMES[j] for j in np.flatnonzero(expected["detected"][hit])]
    assert lines[0].startswith(f"{paths[0]}: ")
    for name in classes:
        score = expected["scores"][hit][NAMES.index(name)]
        assert f"{name} ({score:.3f})" in lines[0]
    assert lines[1] == f"{paths[1]}: background ({expected['background'][miss]:.3f})"


def test_new_version_picked_up_under_load_without_failures(served):
    client, model = served["client"], served["model"]
    before = _latest(served)
    pngs = np.array([_png(i) for i in served["images"][:2]], object)
    failures, seen, stop = [], [], threading.Event()

    def worker():
        with PredictionClient(f"127.0.0.1:{served['port']}", timeout_s=30) as c:
            while not stop.is_set():
                try:
                    seen.append(c.predict("det", {"image_bytes": pngs})[1])
                except grpc.RpcError as err:
                    failures.append(f"{err.code()}: {err.details()}")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        path = saved_model.export_model(model, served["base"], "det", NAMES, [0.0, 0.0, 0.0])
        new = int(os.path.basename(path))
        deadline = time.monotonic() + 120
        while new not in seen[-50:] and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # requests keep flowing across the swap
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not failures, failures[:5]
    assert before in seen and new in seen
    assert _latest(served) == new
    status = {s["version"]: s["state"] for s in client.get_model_status("det")}
    assert status[new] == "AVAILABLE" and status[before] == "END"
    detected = client.predict_image_bytes("det", list(pngs))["detected"]
    assert detected.all()  # the new version's thresholds (0.0) are in effect


def test_version_that_fails_to_load_keeps_old_one_serving(served):
    base, client = served["base"], served["client"]
    serving = _latest(served)
    model_dir = os.path.join(base, "det")
    broken = versions.next_version(model_dir)
    temp = os.path.join(model_dir, f".tmp-broken-{broken}")
    os.makedirs(os.path.join(temp, "variables"))
    with open(os.path.join(temp, "saved_model.pb"), "wb") as f:
        f.write(b"this is not a SavedModel")
    os.rename(temp, os.path.join(model_dir, str(broken)))
    deadline = time.monotonic() + 60
    status = {}
    while time.monotonic() < deadline:
        status = {s["version"]: s for s in client.get_model_status("det")}
        if broken in status and status[broken]["state"] == "END":
            break
        time.sleep(0.1)
    assert status[broken]["state"] == "END"
    assert status[broken]["error_code"] != 0 and status[broken]["error_message"]
    assert status[serving]["state"] == "AVAILABLE"
    _, version = client.predict("det", {"image_bytes": np.array([_png(served["images"][0])],
                                                                 object)})
    assert version == serving
    with open(served["log"]) as f:
        assert f"Failed to load servable det version {broken}" in f.read()


_KILLED_EXPORT = textwrap.dedent(
    """
    import os, runpy, signal, sys
    real_rename = os.rename
    def rename(src, dst):
        if os.path.basename(dst).isdigit():
            os.kill(os.getpid(), signal.SIGKILL)  # killed after writing, before publishing
        real_rename(src, dst)
    os.rename = rename
    script, workdir, base = sys.argv[1:4]
    sys.argv = [script, f"--workdir={workdir}", f"--model_base_path={base}", "--model_name=det"]
    runpy.run_path(script, run_name="__main__")  # the export/saved_model.py entry point
    """
)


def test_export_killed_half_way_leaves_previous_version_servable(served):
    base, client = served["base"], served["client"]
    serving = _latest(served)
    model_dir = os.path.join(base, "det")
    on_disk = versions.list_versions(model_dir)
    script = os.path.join(REPO, "export", "saved_model.py")
    result = subprocess.run([sys.executable, "-c", _KILLED_EXPORT, script, served["workdir"], base],
                            capture_output=True, text=True, timeout=300, env=ENV, cwd=REPO)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    leftovers = [e for e in os.listdir(model_dir) if e.startswith(versions.TEMP_PREFIX)]
    # The killed export's temporary version and staging directories, never a version.
    assert len(leftovers) == 2
    assert any(os.path.exists(os.path.join(model_dir, e, "saved_model.pb")) for e in leftovers)
    assert versions.list_versions(model_dir) == on_disk
    time.sleep(1.0)  # several polls of the server
    assert _latest(served) == serving
    _, version = client.predict("det", {"image_bytes": np.array([_png(served["images"][0])],
                                                                 object)})
    assert version == serving


def test_model_added_to_models_config_is_served(served):
    client = served["client"]
    saved_model.export_model(served["model"], served["base"], "det2", NAMES, THRESHOLDS,
                             warmup_batch_sizes=())
    config = model_config.read_model_config(os.path.join(served["base"], "models.config"))
    assert [n for n, _, _ in model_config.model_entries(config)] == ["det", "det2"]
    assert client.wait_until_available("det2", timeout_s=60) == 1
    images = served["images"][:2]
    got = client.predict_images("det2", images.astype("float32"))
    np.testing.assert_allclose(got["scores"], _expected(served["model"], images)["scores"],
                               rtol=1e-5, atol=1e-6)
    assert client.predict("det", {"image_bytes": np.array([_png(images[0])], object)})[1] >= 2


def test_sigterm_shuts_down_gracefully(served):
    proc = served["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    with open(served["log"]) as f:
        assert "Server stopped." in f.read()


def test_tensorflow_thread_flags_size_the_pools(served):
    # tensorflow_model_server's thread flags carry over, and set the pools before any load.
    with open(served["log"]) as f:
        log = f.read()
    assert "TensorFlow intra_op parallelism: 1 threads." in log
    assert "TensorFlow inter_op parallelism: 2 threads." in log
    assert log.index("inter_op parallelism") < log.index("Successfully loaded servable")
