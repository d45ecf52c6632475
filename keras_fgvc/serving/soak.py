"""Soak test of the loopback server: valid traffic, malformed requests and hot swaps together.

`run_soak` starts `serving/server.py` in a subprocess on 127.0.0.1 (`launch`),
serving the (untrained) `build_example_detector`, then:

1. *quiet*: ``grpc_clients`` gRPC and ``rest_clients`` REST clients send valid
   requests (one PNG each) for ``quiet_s``; their p99 is the reference;
2. *soak*: the same clients for ``duration_s``, while one gRPC and one REST
   attacker send the malformed requests of issue 18 in a loop (tensors
   declaring gigabytes, a 20000 x 20000 PNG header, too many rows, NaN pixels,
   bad Content-Length, deep JSON, chunked bodies, a body that never
   arrives, ...) and ``swaps`` new versions are published (an atomic rename
   of a complete export, as `keras_fgvc.export` publishes).

Result: valid requests and their failures, p50 / p99 of both phases, the
server's RSS (``/proc``) before and after, the answers the malformed requests
got, and whether the goals hold: no failed valid request, RSS growth under
100 MB, soak p99 within 3x the quiet p99. Driven by `benchmarks/serving_soak.py`.
"""

import base64
import http.client
import json
import os
import shutil
import socket
import tempfile
import threading
import time

import grpc
import numpy as np

# free_port is also importable from here (its home before `launch`).
from keras_fgvc.serving.launch import free_port, free_ports, start_server  # noqa: F401

GOAL_RSS_GROWTH_MB = 100.0
GOAL_P99_RATIO = 3.0


def rss_mb(pid):
    """Resident set size of process `pid` in MB (Linux ``/proc``), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def exchange(port, data, wait_s=3.0):
    """Send raw `data` to 127.0.0.1:`port`; the bytes received until close or `wait_s`."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # refused early (e.g. 413 before the body): read the answer
        received, deadline = b"", time.monotonic() + wait_s
        while time.monotonic() < deadline:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
    return received


def http_statuses(raw):
    """The status codes of the HTTP responses in `raw`."""
    return [int(part[:3]) for part in raw.split(b"HTTP/1.1 ")[1:] if part[:3].isdigit()]


def _percentiles(ms):
    if not ms:
        return {"count": 0}
    values = np.asarray(ms)
    return {"count": len(ms), "p50_ms": round(float(np.percentile(values, 50)), 3),
            "p99_ms": round(float(np.percentile(values, 99)), 3),
            "max_ms": round(float(values.max()), 3)}


def _png_header(width, height):
    import struct

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0" * 68


def _malformed_grpc(png):
    """``[(name, PredictRequest)]``: the gRPC requests of issue 18, each to be refused."""
    from tensorflow.core.framework import tensor_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2

    from keras_fgvc.serving import tensors

    def request(signature, key, proto):
        r = predict_pb2.PredictRequest()
        r.model_spec.name = "det"
        r.model_spec.signature_name = signature
        r.inputs[key].CopyFrom(proto)
        return r

    def declared(shape, dtype, values=()):
        proto = tensor_pb2.TensorProto(dtype=dtype)
        for d in shape:
            proto.tensor_shape.dim.add().size = d
        proto.string_val.extend(values)
        return proto

    nan = np.zeros((1, 28, 28, 1), np.float32)
    nan[0, 1, 2, 0] = np.nan
    return [
        ("declared_20000x28x28x1_no_values",
         request("predict_images", "images", declared([20000, 28, 28, 1], types_pb2.DT_FLOAT))),
        ("declared_20000_images_one_value",
         request("serving_default", "image_bytes", declared([20000], types_pb2.DT_STRING, [png]))),
        ("png_header_20000x20000",
         request("serving_default", "image_bytes",
                 declared([1], types_pb2.DT_STRING, [_png_header(20000, 20000)]))),
        ("batch_257", request("serving_default", "image_bytes",
                              declared([257], types_pb2.DT_STRING, [png] * 257))),
        ("nan_pixels", request("predict_images", "images", tensors.to_tensor_proto(nan))),
        ("not_an_image", request("serving_default", "image_bytes",
                                 declared([1], types_pb2.DT_STRING, [b"hello"]))),
    ]


def _malformed_rest():
    """``[(name, raw bytes)]``: the REST requests of issue 18, each answered with an error."""
    path = b"/v1/models/det:predict"

    def post(body, extra=b"Connection: close\r\n"):
        return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + extra
                + b"Content-Length: %d\r\n\r\n" % len(body) + body)

    body = json.dumps({"signature_name": ["x"]}).encode()
    chunked = (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    return [
        ("json_nested_100000", post(b"[" * 100_000 + b"]" * 100_000)),
        ("instances_nested_900",
         post(b'{"instances": ' + b"[" * 900 + b"]" * 900 + b"}")),
        ("signature_name_list", post(body)),
        ("content_length_abc", b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Length: abc\r\n\r\n{}"),
        ("content_length_minus_1", b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Length: -1\r\n\r\n{}"),
        ("chunked_body", chunked),
        ("body_30mb_declared", b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Length: 30000000\r\n\r\n"),
    ]


class _Soak:
    def __init__(self, port, rest_port, png, grpc_clients, rest_clients):
        self.port, self.rest_port, self.png = port, rest_port, png
        self.grpc_clients, self.rest_clients = grpc_clients, rest_clients
        self.lock = threading.Lock()
        self.phase = "quiet"
        self.latency = {"quiet": [], "soak": []}
        self.failures = []
        self.versions = set()
        self.malformed = {}
        self.stop = threading.Event()

    def record(self, ms, version=None):
        with self.lock:
            self.latency[self.phase].append(ms)
            if version is not None:
                self.versions.add(version)

    def fail(self, what):
        with self.lock:
            self.failures.append(f"{self.phase}: {what}")

    def grpc_worker(self):
        from keras_fgvc.serving.client import PredictionClient

        images = np.array([self.png], object)
        with PredictionClient(f"127.0.0.1:{self.port}", timeout_s=30, max_retries=0) as c:
            while not self.stop.is_set():
                start = time.perf_counter()
                try:
                    _, version = c.predict("det", {"image_bytes": images})
                except grpc.RpcError as err:
                    self.fail(f"gRPC {err.code()}: {err.details()}")
                    continue
                self.record((time.perf_counter() - start) * 1e3, version)

    def rest_worker(self):
        body = json.dumps({"instances": [{"b64": base64.b64encode(self.png).decode()}]})
        conn = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=30)
        while not self.stop.is_set():
            start = time.perf_counter()
            try:
                conn.request("POST", "/v1/models/det:predict", body,
                             {"Content-Type": "application/json"})
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as err:
                self.fail(f"REST {type(err).__name__}: {err}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=30)
                continue
            if response.status != 200:
                self.fail(f"REST {response.status}: {payload[:200]!r}")
                continue
            self.record((time.perf_counter() - start) * 1e3)
        conn.close()

    def note(self, name, answer):
        with self.lock:
            counts = self.malformed.setdefault(name, {})
            counts[answer] = counts.get(answer, 0) + 1

    def grpc_attacker(self):
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        requests = _malformed_grpc(self.png)
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while not self.stop.is_set():
                for name, request in requests:
                    try:
                        stub.Predict(request, timeout=10)
                        self.note(name, "OK")
                    except grpc.RpcError as err:
                        self.note(name, err.code().name)
                time.sleep(0.02)

    def rest_attacker(self):
        requests = _malformed_rest()
        while not self.stop.is_set():
            for name, raw in requests:
                statuses = http_statuses(exchange(self.rest_port, raw, wait_s=5.0))
                self.note(name, ",".join(map(str, statuses)) or "no answer")
            time.sleep(0.02)

    def stalled_bodies(self):
        """A Content-Length larger than the body sent, every 2 s: must be answered 408."""
        raw = (b"POST /v1/models/det:predict HTTP/1.1\r\nHost: x\r\n"
               b"Content-Length: 1000\r\n\r\n{\"instances\": ")
        while not self.stop.wait(2.0):
            statuses = http_statuses(exchange(self.rest_port, raw, wait_s=15.0))
            self.note("content_length_larger_than_body", ",".join(map(str, statuses))
                      or "no answer")


def build_example_detector(num_classes=4, embedding_dim=0, seed=0):
    """The smallest exportable detector: 28x28x1 images in [0, 255] -> N + 1 softmax.

    Two strided convolutions and a dense layer (index 0 = background), with dict
    outputs ``logits`` / ``probabilities`` (/ ``embedding``) as the exporter
    expects. The soak and `benchmarks/serving.py` serve it untrained, so they
    measure the server rather than the model; the export and serving tests train
    it briefly (``tests/fixtures/example_detector.py``).

    Args:
        num_classes: classes including background (index 0).
        embedding_dim: when > 0, add an L2-normalised ``embedding`` output.
        seed: weight initialisation seed.
    """
    import keras

    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((28, 28, 1), name="images")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", kernel_initializer=init)(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", kernel_initializer=init)(x)
    features = keras.layers.Flatten()(x)
    logits = keras.layers.Dense(num_classes, kernel_initializer=init, name="logits")(features)
    outputs = {
        "logits": logits,
        "probabilities": keras.layers.Softmax(name="probabilities")(logits),
    }
    if embedding_dim:
        embedding = keras.layers.Dense(embedding_dim, kernel_initializer=init)(features)
        outputs["embedding"] = keras.layers.UnitNormalization(name="embedding")(embedding)
    return keras.Model(inputs, outputs, name="example_detector")


def _export_versions(base, staging, count):
    """Version 1 in `base`/det, and `count` more complete exports waiting in `staging`."""
    from keras_fgvc.export import saved_model

    model = build_example_detector()
    names = ["sandal", "bag", "ankle_boot"]
    saved_model.export_model(model, base, "det", names, update_model_config=False)
    staged = []
    for i in range(count):
        path = saved_model.export_model(model, staging, "det", names, [0.5 - 0.1 * (i + 1)] * 3,
                                        update_model_config=False)
        staged.append(path)
    return staged


def run_soak(duration_s=60.0, quiet_s=15.0, grpc_clients=8, rest_clients=4, swaps=2,
             log_path=None):
    """Run the soak (module docstring); returns the result dict."""
    import tensorflow as tf

    from keras_fgvc.serving.client import PredictionClient

    png = tf.io.encode_png(np.random.default_rng(0).integers(
        0, 256, (28, 28, 1), dtype=np.uint8)).numpy()
    with tempfile.TemporaryDirectory() as root:
        base, staging = os.path.join(root, "models"), os.path.join(root, "staging")
        staged = _export_versions(base, staging, swaps)
        port, rest_port = free_ports(2)
        with start_server(
                [f"--port={port}", f"--rest_api_port={rest_port}", "--model_name=det",
                 f"--model_base_path={base}/det", "--file_system_poll_wait_seconds=0.5",
                 "--rest_timeout_seconds=5"],
                log_path or os.path.join(root, "server.log"),
                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")) as server:
            with PredictionClient(f"127.0.0.1:{port}", timeout_s=300) as probe:
                probe.wait_until_available("det", timeout_s=300)
            soak = _Soak(port, rest_port, png, grpc_clients, rest_clients)
            workers = ([threading.Thread(target=soak.grpc_worker) for _ in range(grpc_clients)]
                       + [threading.Thread(target=soak.rest_worker) for _ in range(rest_clients)])
            for t in workers:
                t.start()
            time.sleep(min(2.0, quiet_s / 4))  # connections up, first requests done
            with soak.lock:
                soak.latency["quiet"].clear()
            time.sleep(quiet_s)
            rss_before = rss_mb(server.pid)
            with soak.lock:
                soak.phase = "soak"
            attackers = [threading.Thread(target=soak.grpc_attacker),
                         threading.Thread(target=soak.rest_attacker),
                         threading.Thread(target=soak.stalled_bodies)]
            for t in attackers:
                t.start()
            start, rss_peak, swapped = time.monotonic(), rss_before or 0.0, []
            swap_times = [duration_s * (i + 1) / (swaps + 1) for i in range(swaps)]
            while (elapsed := time.monotonic() - start) < duration_s:
                if swap_times and elapsed >= swap_times[0]:
                    swap_times.pop(0)
                    path = staged[len(swapped)]
                    version = max(int(v) for v in os.listdir(os.path.join(base, "det"))
                                  if v.isdigit()) + 1
                    shutil.move(path, os.path.join(base, "det", f".tmp-swap-{version}"))
                    os.rename(os.path.join(base, "det", f".tmp-swap-{version}"),
                              os.path.join(base, "det", str(version)))
                    swapped.append(version)
                rss_peak = max(rss_peak, rss_mb(server.pid) or 0.0)
                time.sleep(0.25)
            soak.stop.set()
            for t in workers + attackers:
                t.join(timeout=60)
            rss_after = rss_mb(server.pid)
            alive = server.poll() is None
    quiet, loaded = _percentiles(soak.latency["quiet"]), _percentiles(soak.latency["soak"])
    ratio = (loaded["p99_ms"] / quiet["p99_ms"]) if quiet.get("p99_ms") and loaded.get(
        "p99_ms") else None
    growth = (rss_after - rss_before) if rss_after and rss_before else None
    malformed_ok = {name: answers.get("OK", 0) + answers.get("200", 0)
                    + answers.get("no answer", 0) for name, answers in soak.malformed.items()}
    return {
        "duration_s": duration_s, "quiet_s": quiet_s, "grpc_clients": grpc_clients,
        "rest_clients": rest_clients, "swaps": swapped,
        "versions_served": sorted(soak.versions),
        "valid_requests": {"quiet": quiet, "soak": loaded},
        "failed_valid_requests": len(soak.failures), "failures": soak.failures[:20],
        "p99_ratio_soak_to_quiet": round(ratio, 3) if ratio else None,
        "server_rss_mb": {"before_soak": rss_before, "after_soak": rss_after,
                          "peak": rss_peak, "growth": growth},
        "malformed_answers": soak.malformed,
        "malformed_accepted_or_unanswered": sum(malformed_ok.values()),
        "server_alive": alive,
        "goals": {
            "no_failed_valid_requests": not soak.failures,
            "rss_growth_below_mb": GOAL_RSS_GROWTH_MB,
            "rss_growth_ok": growth is not None and growth < GOAL_RSS_GROWTH_MB,
            "p99_ratio_below": GOAL_P99_RATIO,
            "p99_ok": ratio is not None and ratio < GOAL_P99_RATIO,
            "every_malformed_request_refused": not any(malformed_ok.values()),
            "both_swaps_served": set(swapped) <= soak.versions,
        },
    }
