r"""Serving latency and throughput: loopback gRPC server vs calling the signature in-process.

    python benchmarks/serving.py            # writes benchmarks/results/serving.json
    python benchmarks/serving.py --quick    # fewer requests (a smoke run)

Measures p50 / p99 latency and throughput of ``serving_default`` (PNG bytes of
Fashion-MNIST images, the example detector) at batch 1 and 32 with 1 and 8
concurrent clients, for (a) the loaded SavedModel signature called in this
process and (b) gRPC Predict against `serving/server.py` in a subprocess
without server-side batching, and (c) the same server started with
``--enable_batching --batching_parameters_file=F`` for each of `BATCHING`
(TF Serving's BatchingParameters text proto), at batch 1 with 1 and 8 clients,
and (d) two scales at 8 clients x batch 1: the same requests against a no-op
PredictionService on the same gRPC stack (a synchronous grpcio server with the
server's default thread pool) that answers an empty response at once, and
against the real server (`ModelServer`: parsing, checks, batching, response)
whose model call returns a cached answer instead of running: what our server
stack alone can serve on this machine; and (e) the server's Predict path called
in this process without gRPC (request bytes in, response bytes out), with and
without each batching queue.

The 8 clients x batch 1 comparison (the batching goal) and 1 client x batch 1
(the added-latency goal) run every target once in each of ``--rounds`` rounds,
in a shuffled order, with all servers up at once, and every target run comes
right after an in-process run at the same concurrency: on a shared host the
in-process figure alone moved by 30-100% between minutes, so each ratio is the
median over rounds of target / in-process of the same pair (`_paired`), and the
images/s beside it are medians of the target's own runs (a ratio of the two
medians can differ).
Goals: added p50 latency at batch 1 with one client <= 1.5 ms; with batching,
8 clients x batch 1 serve >= 0.8x the in-process images/s at the same
concurrency (p99 latency reported beside it).
"""

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import _paired
from _machine import machine_info
from absl import app, flags

flags.DEFINE_bool("quick", False, "Fewer requests per configuration.")
flags.DEFINE_string("output", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                           "results", "serving.json"), "JSON output path.")
flags.DEFINE_integer("rounds", 3, "Rounds of the paired 8 clients x batch 1 comparison "
                     "(--quick: 1).", lower_bound=1)
flags.DEFINE_integer("requests", 400, "Requests per client per configuration (full run).")
flags.DEFINE_list("batching", None, "Batching configurations to measure (default: all; "
                  "--quick: the first).")
flags.DEFINE_integer("quick_requests", 20, "Requests per client per configuration (--quick).")
flags.DEFINE_string("cached_model_server", "", "Internal (the server-stack ceiling starts "
                    "it): PORT,MODEL_BASE_PATH[,BATCHING_PARAMETERS_FILE]: serve `ModelServer` "
                    "there with every model call answered from a cache.")
flags.DEFINE_integer("noop_server_port", 0, "Internal (the ceiling measurement starts it): serve "
                     "a no-op PredictionService on this port until killed.")

GOAL_MS = 1.5
GOAL_BATCHING_RATIO = 0.8
# name -> BatchingParameters text proto (the file passed to --batching_parameters_file).
BATCHING = {
    "max8_wait500us": "max_batch_size { value: 8 } batch_timeout_micros { value: 500 } "
                      "num_batch_threads { value: 1 }",
    "max8_wait2ms": "max_batch_size { value: 8 } batch_timeout_micros { value: 2000 } "
                    "num_batch_threads { value: 1 }",
    "max16_wait1ms_2threads": "max_batch_size { value: 16 } batch_timeout_micros { value: 1000 } "
                              "num_batch_threads { value: 2 }",
}


def _server(base, port, extra=()):
    """`serving/server.py` serving `base`/det on `port` (a context manager that stops it)."""
    from keras_fgvc.serving.launch import start_server

    return start_server([f"--port={port}", "--model_name=det", f"--model_base_path={base}/det",
                         *extra])


def _serve_noop(port):
    """Block serving a PredictionService whose Predict answers an empty response at once."""
    import concurrent.futures

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from keras_fgvc.serving.server import ServerOptions

    class NoOp(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 - gRPC method name
            return predict_pb2.PredictResponse()

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(
        max_workers=ServerOptions.grpc_max_threads))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(NoOp(), server)
    if not server.add_insecure_port(f"127.0.0.1:{port}"):
        raise OSError(f"Cannot bind 127.0.0.1:{port}.")
    server.start()
    server.wait_for_termination()


def _serve_cached_model(spec):
    """Block serving `ModelServer` whose model calls return the first answer per batch size."""
    from keras_fgvc.serving import servable
    from keras_fgvc.serving.server import ModelServer, ServerOptions

    port, base, *params = spec.split(",")
    run = servable.Servable.run_unbatched
    cache = {}

    def cached(self, key, inputs):
        rows = next(iter(inputs.values())).shape[0]
        if (key, rows) not in cache:
            cache[(key, rows)] = run(self, key, inputs)
        return cache[(key, rows)]

    servable.Servable.run_unbatched = cached
    options = ServerOptions(port=int(port), model_name="det", model_base_path=base,
                            enable_batching=bool(params),
                            batching_parameters_file=params[0] if params else "")
    ModelServer(options).start().wait()


@contextlib.contextmanager
def _child_server(port, flag):
    """A server this script starts in a child process with `flag`, listening on `port`."""
    import grpc

    with tempfile.TemporaryFile("w+") as log:
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), flag],
                                 stdout=log, stderr=subprocess.STDOUT)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                try:
                    grpc.channel_ready_future(channel).result(timeout=120)
                except grpc.FutureTimeoutError:
                    log.seek(0)
                    raise RuntimeError(f"The server did not start (exit code "
                                       f"{child.poll()}):\n{log.read()[-3000:]}") from None
            yield port
        finally:
            child.kill()
            child.wait()


def _grpc(port, pngs, batch, clients, n, warmup):
    from keras_fgvc.serving.client import PredictionClient

    channels = [PredictionClient(f"127.0.0.1:{port}") for _ in range(clients)]
    try:
        return _measure(lambda i: (lambda: channels[i].predict_image_bytes("det", pngs[batch])),
                        clients, n, warmup)
    finally:
        for c in channels:
            c.close()


def _in_process(fn, images, clients, n, warmup):
    """`_measure` of the loaded signature `fn` called in this process on `images`."""
    import tensorflow as tf

    return _measure(lambda i: (lambda: fn(image_bytes=tf.constant(images))), clients, n, warmup)


def _measure(call, clients, requests, warmup=10):
    """Run `requests` calls in each of `clients` threads; latency stats and throughput."""
    import numpy as np

    latencies = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def worker(i):
        fn = call(i)
        for _ in range(warmup):
            fn()
        barrier.wait()
        for _ in range(requests):
            start = time.perf_counter()
            fn()
            latencies[i].append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ms = np.concatenate([np.asarray(lat) for lat in latencies]) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "requests_per_s": round(len(ms) / elapsed, 1)}


def _handler_call(base, name, images, closer):
    """The server's Predict path in this process, no gRPC: request bytes -> response bytes.

    The same pieces as `ModelServer` (a `Servable` with `name`'s batching queue, or
    none, behind `PredictionServicer`), called with a serialised request for the
    encoded `images`; `closer` (a `contextlib.ExitStack`) closes the servable. Returns
    the call.
    """
    from tensorflow_serving.apis import predict_pb2

    from keras_fgvc.serving import batching, grpc_service, tensors
    from keras_fgvc.serving.servable import Servable
    from keras_fgvc.serving.server import ServerOptions

    options = ServerOptions(model_name="det", model_base_path=f"{base}/det",
                            enable_batching=name is not None,
                            batching_parameters_file=f"{base}/{name}.pbtxt" if name else "")
    params = options.batching_parameters()
    version = max(int(v) for v in os.listdir(f"{base}/det") if v.isdigit())
    servable = Servable("det", version, f"{base}/det/{version}", options.request_limits(params),
                        batching.queue_factory(params))
    closer.callback(servable.close)  # its batching threads stop whatever fails next

    class _Manager:
        def get(self, model_name, version=None):
            return servable

    servicer = grpc_service.PredictionServicer(_Manager())
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "det"
    request.inputs["image_bytes"].CopyFrom(tensors.to_tensor_proto(images))
    wire = request.SerializeToString()

    def call():
        response = servicer.Predict(predict_pb2.PredictRequest.FromString(wire), None)
        return response.SerializeToString()

    return call


def _head_to_head(base, pngs, fn, names, rounds, n, warmup):
    """8 clients x batch 1 against every target, all up at once, interleaved over `rounds`.

    Targets: ``in_process`` (the signature), ``handler:none`` / ``handler:NAME`` (the
    server's Predict path in this process, `_handler_call`), ``grpc`` (no batching),
    ``batching:NAME``, ``noop``, ``stack:none`` and ``stack:NAME`` (the cached-model
    server). Returns ``({target: _paired.median_row}, {"in_process" / "grpc": ...})``,
    the second at 1 client x batch 1 (no batching).
    """

    from keras_fgvc.serving.client import PredictionClient
    from keras_fgvc.serving.launch import free_port

    with contextlib.ExitStack() as stack:
        ports = {}
        for name in [None, *names]:
            port = free_port()
            extra = [] if name is None else ["--enable_batching",
                                             f"--batching_parameters_file={base}/{name}.pbtxt"]
            stack.enter_context(_server(base, port, extra))
            ports["grpc" if name is None else f"batching:{name}"] = port
        for target in list(ports):
            with PredictionClient(f"127.0.0.1:{ports[target]}") as probe:
                probe.wait_until_available("det", timeout_s=300)
        port = free_port()
        ports["noop"] = stack.enter_context(_child_server(port, f"--noop_server_port={port}"))
        for name in [None, *names]:
            port = free_port()
            spec = f"{port},{base}/det" + (f",{base}/{name}.pbtxt" if name else "")
            ports[f"stack:{name or 'none'}"] = stack.enter_context(
                _child_server(port, f"--cached_model_server={spec}"))
        handlers = {}
        for name in [None, *names]:
            handlers[f"handler:{name or 'none'}"] = _handler_call(base, name, pngs[1], stack)
        # One client x batch 1 (the added-latency goal) rides in the same rounds. Every
        # target run comes right after an in-process run at its client count (its pair).
        targets = [*handlers, *ports, "1_client:grpc"]
        pairs = {t: [] for t in targets}
        for r in range(rounds):
            for target in _paired.order(targets, r):
                clients = 1 if target.startswith("1_client:") else 8
                local = _in_process(fn, pngs[1], clients, n, warmup)
                if target in handlers:
                    row = _measure(lambda i, t=target: handlers[t], 8, n, warmup)
                else:
                    row = _grpc(ports[target.removeprefix("1_client:")], pngs, 1, clients, n,
                                warmup)
                pairs[target].append((row, local))
                print(json.dumps({"round": r + 1, "target": target, **row,
                                  "in_process_requests_per_s": local["requests_per_s"]}),
                      flush=True)
    eight = {t: _paired.median_row(pairs[t]) for t in targets if not t.startswith("1_client:")}
    eight["in_process"] = _paired.median_row(
        [(local, local) for t in eight for _, local in pairs[t]])
    one = {"grpc": _paired.median_row(pairs["1_client:grpc"])}
    one["in_process"] = _paired.median_row([(b, b) for _, b in pairs["1_client:grpc"]])
    return eight, one


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if flags.FLAGS.noop_server_port:
        _serve_noop(flags.FLAGS.noop_server_port)
        return
    if flags.FLAGS.cached_model_server:
        _serve_cached_model(flags.FLAGS.cached_model_server)
        return
    import numpy as np
    import tensorflow as tf

    from keras_fgvc.data.fashion_mnist import load_fashion_mnist
    from keras_fgvc.export import saved_model
    from keras_fgvc.serving.client import PredictionClient
    from keras_fgvc.serving.launch import free_port
    from keras_fgvc.serving.soak import build_example_detector

    requests = flags.FLAGS.quick_requests if flags.FLAGS.quick else flags.FLAGS.requests
    warmup = 3 if flags.FLAGS.quick else 10
    rounds = 1 if flags.FLAGS.quick else flags.FLAGS.rounds
    names = flags.FLAGS.batching or list(BATCHING)[:1 if flags.FLAGS.quick else None]
    unknown = sorted(set(names) - set(BATCHING))
    if unknown:
        raise app.UsageError(f"Unknown --batching {unknown}; known: {sorted(BATCHING)}.")
    try:
        images = load_fashion_mnist()[1][0][:32, ..., None]  # test images
    except FileNotFoundError:
        images = np.random.default_rng(0).integers(0, 256, (32, 28, 28, 1), dtype=np.uint8)
    pngs = {b: np.array([tf.io.encode_png(i).numpy() for i in images[:b]], object)
            for b in (1, 32)}
    model = build_example_detector()
    results = {"configs": [], "requests_per_client": requests, "rounds_8_clients": rounds,
               "goal_added_p50_ms": GOAL_MS,
               "machine": machine_info(tensorflow=tf.__version__)}
    with tempfile.TemporaryDirectory() as base:
        path = saved_model.export_model(model, base, "det", ["sandal", "bag", "ankle_boot"])
        fn = tf.saved_model.load(path).signatures["serving_default"]
        for name in names:
            with open(os.path.join(base, f"{name}.pbtxt"), "w") as f:
                f.write(BATCHING[name] + "\n")
        head, one_client = _head_to_head(base, pngs, fn, names, rounds, requests, warmup)
        port = free_port()
        single = {}  # batch 32 x 1 and 8 clients: one measurement each
        with _server(base, port):
            with PredictionClient(f"127.0.0.1:{port}") as probe:
                probe.wait_until_available("det", timeout_s=300)
            for batch, clients in ((32, 1), (32, 8)):
                n = max(10, requests // (4 if batch == 32 else 1))
                single[(batch, clients)] = (
                    _in_process(fn, pngs[batch], clients, n, warmup),
                    _grpc(port, pngs, batch, clients, n, warmup))
        single[(1, 1)] = one_client["in_process"], one_client["grpc"]
        single[(1, 8)] = head["in_process"], head["grpc"]
        for batch, clients in ((1, 1), (1, 8), (32, 1), (32, 8)):
            local, paired = single[(batch, clients)]  # batch 1: `_paired.median_row`s
            remote = {k: paired[k] for k in _paired.FIELDS}
            local = {k: local[k] for k in _paired.FIELDS}
            added = paired.get("added_p50_ms", round(remote["p50_ms"] - local["p50_ms"], 3))
            row = {"batch": batch, "clients": clients, "in_process": local, "grpc": remote,
                   "added_p50_ms": added,
                   "images_per_s_in_process": round(local["requests_per_s"] * batch, 1),
                   "images_per_s_grpc": round(remote["requests_per_s"] * batch, 1)}
            if clients == 8 and batch == 1:
                row["ratio_to_in_process"] = head["grpc"]["ratio_to_in_process"]
            results["configs"].append(row)
            print(json.dumps(row), flush=True)
        results["batching"] = []
        for name in names:
            port = free_port()
            with _server(base, port, ["--enable_batching",
                                      f"--batching_parameters_file={base}/{name}.pbtxt"]):
                with PredictionClient(f"127.0.0.1:{port}") as probe:
                    probe.wait_until_available("det", timeout_s=300)
                local = _in_process(fn, pngs[1], 1, requests, warmup)
                one = _paired.median_row([(_grpc(port, pngs, 1, 1, requests, warmup), local)])
            for clients, remote in ((1, one), (8, head[f"batching:{name}"])):
                row = {"parameters": name, "batching_parameters": BATCHING[name], "batch": 1,
                       "clients": clients,
                       "grpc": {k: remote[k] for k in _paired.FIELDS},
                       "images_per_s_grpc": remote["requests_per_s"],
                       "images_per_s_in_process": remote["in_process_requests_per_s"],
                       "ratio_to_in_process": remote["ratio_to_in_process"]}
                results["batching"].append(row)
                print(json.dumps(row), flush=True)
    results["grpc_noop_ceiling_8_clients"] = {
        **{k: head["noop"][k] for k in _paired.FIELDS},
        "images_per_s_in_process": head["noop"]["in_process_requests_per_s"],
        "ratio_to_in_process": head["noop"]["ratio_to_in_process"],
        "note": "a no-op Predict (empty response) on the same synchronous grpcio stack, "
                "8 clients x batch 1: the round trips alone"}
    best = max((r for r in results["batching"] if r["clients"] == 8),
               key=lambda r: r["ratio_to_in_process"])
    results["server_stack_ceiling_8_clients"] = [
        {**{k: head[f"stack:{name}"][k] for k in _paired.FIELDS},
         "batching": name, "ratio_to_in_process": head[f"stack:{name}"]["ratio_to_in_process"]}
        for name in ("none", best["parameters"])]
    results["head_to_head_8_clients"] = head
    results["head_to_head_1_client"] = one_client
    results["batching_best_8_clients"] = {
        "parameters": best["parameters"], "ratio_to_in_process": best["ratio_to_in_process"],
        "p99_ms": best["grpc"]["p99_ms"], "goal_ratio": GOAL_BATCHING_RATIO,
        # both paired with in-process: best / in-process over no-op / in-process
        "share_of_noop_ceiling": round(
            best["ratio_to_in_process"] / head["noop"]["ratio_to_in_process"], 3),
        "goal_met": best["ratio_to_in_process"] >= GOAL_BATCHING_RATIO}
    first = next(r for r in results["configs"] if r["batch"] == 1 and r["clients"] == 1)
    results["added_p50_ms_batch1"] = first["added_p50_ms"]
    results["goal_met"] = first["added_p50_ms"] <= GOAL_MS
    os.makedirs(os.path.dirname(flags.FLAGS.output), exist_ok=True)
    with open(flags.FLAGS.output, "w") as f:
        json.dump(results, f, indent=1)
    print(f"added p50 at batch 1: {first['added_p50_ms']:.3f} ms (goal <= {GOAL_MS} ms); "
          f"8 clients x batch 1 with batching ({best['parameters']}): "
          f"{best['ratio_to_in_process']:.2f}x in-process, p99 {best['grpc']['p99_ms']} ms "
          f"(goal >= {GOAL_BATCHING_RATIO}x); a no-op gRPC Predict: "
          f"{results['grpc_noop_ceiling_8_clients']['ratio_to_in_process']:.2f}x in-process "
          f"(medians of {rounds} rounds, each run paired with an in-process run just "
          f"before it); wrote {flags.FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
