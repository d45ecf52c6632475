"""The loopback model server: TF Serving's gRPC (and REST) API over ``MODEL_BASE/<name>/<v>/``.

It takes ``tensorflow_model_server``'s flags (see `serving/server.py`), loads
the latest version of each model (replaying its warmup requests), polls for
new versions and swaps them in, and stops gracefully on SIGTERM / SIGINT.

Example:
    python serving/server.py --port=8500 --rest_api_port=8501 \\
        --model_name=detector --model_base_path="$PWD/models/detector"
"""

import concurrent.futures
import dataclasses
import logging
import os
import signal
import threading

import grpc
import tensorflow as tf

from keras_fgvc.export import model_config, warmup
from keras_fgvc.serving import (
    batching,
    batching_parameters,
    grpc_service,
    http_server,
    limits,
    rest,
)
from keras_fgvc.serving.model_manager import ModelManager, ModelSpec
from keras_fgvc.serving.servable import Servable

LOG = logging.getLogger("keras_fgvc.serving")


@dataclasses.dataclass
class ServerOptions:
    """Server settings; field names follow ``tensorflow_model_server`` flags."""

    port: int = 8500
    rest_api_port: int = 0
    host: str = "127.0.0.1"
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: float = 0.0
    file_system_poll_wait_seconds: float = 1.0
    enable_batching: bool = False
    max_batch_size: int = 0
    batch_timeout_micros: int = 1000
    batching_parameters_file: str = ""
    grpc_max_threads: int = 16
    max_message_bytes: int = 16 * 1024 * 1024
    grpc_channel_arguments: str = ""
    enable_model_warmup: bool = True
    # Limits and hardening (README): each bounds the work one request can cause.
    max_image_pixels: int = limits.DEFAULT_MAX_IMAGE_PIXELS
    max_request_pixels: int = limits.DEFAULT_MAX_REQUEST_PIXELS
    max_concurrent_requests: int = limits.DEFAULT_MAX_CONCURRENT_REQUESTS
    rest_max_connections: int = http_server.HttpLimits.max_connections
    rest_timeout_seconds: float = http_server.HttpLimits.timeout_s
    rest_max_header_bytes: int = http_server.HttpLimits.max_header_bytes
    rest_max_json_depth: int = rest.DEFAULT_MAX_JSON_DEPTH
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 1_000_000
    # TensorFlow's thread pools (0 = TensorFlow's default, about one thread per core).
    tensorflow_session_parallelism: int = 0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0

    def request_limits(self, batching_params=None):
        """The `limits.RequestLimits` of each request.

        Rows: --max_batch_size, or `limits.DEFAULT_MAX_BATCH_SIZE` when 0; with
        a --batching_parameters_file, its max_batch_size (as TF Serving).
        """
        rows = self.max_batch_size or limits.DEFAULT_MAX_BATCH_SIZE
        if batching_params is not None and self.batching_parameters_file:
            rows = batching_params.max_batch_size
        return limits.RequestLimits(rows, self.max_image_pixels, self.max_request_pixels)

    def model_specs(self):
        """`ModelSpec`s from --model_config_file, or from --model_name/--model_base_path."""
        if self.model_config_file:
            config = model_config.read_model_config(self.model_config_file)
            entries = model_config.model_entries(config)
            specs = [ModelSpec.from_model_config(c) for _, _, c in entries]
            if not specs:
                raise ValueError(f"{self.model_config_file!r} lists no model.")
            return specs
        if not self.model_base_path:
            raise ValueError("Give --model_base_path (with --model_name) or --model_config_file.")
        return [ModelSpec(self.model_name, self.model_base_path)]

    def batching_parameters(self):
        """The `BatchingParameters` for --enable_batching, or None when batching is off.

        --max_batch_size (32 when 0) and --batch_timeout_micros give the
        defaults; each field set in --batching_parameters_file overrides its
        flag. A missing or bad file is a ValueError even without
        --enable_batching (then it is otherwise ignored, as in TF Serving).
        """
        defaults = batching_parameters.BatchingParameters(
            max_batch_size=self.max_batch_size or 32,
            batch_timeout_micros=self.batch_timeout_micros)
        params = defaults
        if self.batching_parameters_file:
            params = batching_parameters.read_batching_parameters(
                self.batching_parameters_file, defaults)
            if not self.enable_batching:
                LOG.warning("--batching_parameters_file is ignored without --enable_batching.")
            elif self.max_batch_size and params.max_batch_size != self.max_batch_size:
                LOG.warning("--batching_parameters_file sets max_batch_size %d; it overrides "
                            "--max_batch_size=%d.", params.max_batch_size, self.max_batch_size)
        return params if self.enable_batching else None

    def tensorflow_threads(self):
        """``(intra_op, inter_op)`` thread counts, 0 = TensorFlow's default.

        As tensorflow_model_server: --tensorflow_session_parallelism sets both
        pools unless --tensorflow_intra_op_parallelism or
        --tensorflow_inter_op_parallelism is > 0 (then both are taken as given, a
        negative one too, which TensorFlow reads as its own rule); all three > 0 at
        once is an error.
        """
        session = self.tensorflow_session_parallelism
        intra, inter = self.tensorflow_intra_op_parallelism, self.tensorflow_inter_op_parallelism
        if session > 0 and intra > 0 and inter > 0:
            raise ValueError(
                "Either configure --tensorflow_session_parallelism or "
                "(--tensorflow_intra_op_parallelism, --tensorflow_inter_op_parallelism) "
                "separately. You cannot configure all.")
        if intra > 0 or inter > 0:
            return intra, inter
        return session, session

    def grpc_options(self):
        options = {
            "grpc.max_receive_message_length": self.max_message_bytes,
            "grpc.max_send_message_length": self.max_message_bytes,
        }
        for item in filter(None, self.grpc_channel_arguments.split(",")):
            key, _, value = item.partition("=")
            if not value:
                raise ValueError(f"--grpc_channel_arguments item {item!r} is not key=value.")
            options[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value
        return list(options.items())


def set_tensorflow_threads(intra_op, inter_op):
    """Size TensorFlow's thread pools (0 leaves one as it is); before TensorFlow runs an op.

    Negative counts are passed to TensorFlow as they are (for the inter-op pool,
    TensorFlow runs ops in the caller's thread).

    A pool TensorFlow has already started with another size is a ValueError:
    serve from a process of its own (``serving/server.py``) to set it.
    """
    pools = (("intra_op", intra_op, tf.config.threading.get_intra_op_parallelism_threads,
              tf.config.threading.set_intra_op_parallelism_threads),
             ("inter_op", inter_op, tf.config.threading.get_inter_op_parallelism_threads,
              tf.config.threading.set_inter_op_parallelism_threads))
    for name, value, get, set_ in pools:
        if value == 0 or get() == value:
            continue
        try:
            set_(value)
        except RuntimeError:
            raise ValueError(
                f"--tensorflow_{name}_parallelism={value} cannot take effect: TensorFlow has "
                f"already started in this process with its {name} pool at {get() or 'default'} "
                "threads. Start the server in a process of its own (serving/server.py).") from None
        LOG.info("TensorFlow %s parallelism: %d threads.", name, value)


def _replay_warmup(servable):
    logs = warmup.read_warmup_requests(servable.path)
    for log in logs:
        if log.WhichOneof("log_type") != "predict_log":
            continue
        request = log.predict_log.request
        inputs = {k: grpc_service.tensor_to_ndarray(k, v) for k, v in request.inputs.items()}
        servable.predict(request.model_spec.signature_name, inputs)
    if logs:
        LOG.info("Finished reading warmup data for model %s version %d: %d records",
                 servable.name, servable.version, len(logs))


class ModelServer:
    """gRPC (+ optional REST) server; `start`, then `wait` or `stop`."""

    def __init__(self, options):
        self.options = options
        set_tensorflow_threads(*options.tensorflow_threads())  # before any model loads
        self.batching = options.batching_parameters()  # bad --batching_parameters_file: fail now
        self.limits = options.request_limits(self.batching)
        self.admission = limits.Admission(options.max_concurrent_requests)
        self.manager = ModelManager(options.model_specs(), self._load,
                                    options.file_system_poll_wait_seconds,
                                    options.max_num_load_retries,
                                    options.load_retry_interval_micros / 1e6)
        self._grpc = None
        self._rest = None
        self.port = None
        self.rest_port = None
        self._stopped = threading.Event()
        self._config_thread = None

    def _load(self, name, version, path):
        servable = Servable(name, version, path, self.limits,
                            batching.queue_factory(self.batching))
        if self.options.enable_model_warmup:
            try:
                _replay_warmup(servable)
            except Exception:
                servable.close()
                raise
        return servable

    def _watch_config(self):
        wait = self.options.model_config_file_poll_wait_seconds
        while not self._stopped.wait(wait):
            try:
                self.manager.update_specs(self.options.model_specs())
            except (OSError, ValueError) as err:  # keep serving the last good config
                LOG.error("Cannot reload %s: %s", self.options.model_config_file, err)

    def start(self):
        """Load the models, then open the gRPC (and REST) ports."""
        self.manager.start()
        if self.options.model_config_file and self.options.model_config_file_poll_wait_seconds > 0:
            self._config_thread = threading.Thread(target=self._watch_config, daemon=True,
                                                   name="config-poll")
            self._config_thread.start()
        self._grpc = grpc.server(
            concurrent.futures.ThreadPoolExecutor(max_workers=self.options.grpc_max_threads),
            options=self.options.grpc_options(),
            # RPCs queued for a thread count too: over the limit, gRPC answers RESOURCE_EXHAUSTED.
            maximum_concurrent_rpcs=self.options.max_concurrent_requests or None,
        )
        grpc_service.add_services(self._grpc, self.manager, self.admission)
        self.port = self._grpc.add_insecure_port(f"{self.options.host}:{self.options.port}")
        if not self.port:
            raise OSError(f"Cannot bind gRPC to {self.options.host}:{self.options.port}.")
        self._grpc.start()
        LOG.info("Running gRPC ModelServer at %s:%d ...", self.options.host, self.port)
        if self.options.rest_api_port:
            http_limits = http_server.HttpLimits(
                max_connections=self.options.rest_max_connections,
                timeout_s=self.options.rest_timeout_seconds,
                max_header_bytes=self.options.rest_max_header_bytes,
                max_body_bytes=self.options.max_message_bytes)
            self._rest = rest.RestServer(self.manager, self.options.host,
                                         self.options.rest_api_port, admission=self.admission,
                                         http_limits=http_limits,
                                         max_json_depth=self.options.rest_max_json_depth)
            self._rest.start()
            self.rest_port = self._rest.port
            LOG.info("Exporting HTTP/REST API at:%s:%d ...", self.options.host, self.rest_port)
        return self

    def stop(self, grace_seconds=5.0):
        """Stop accepting requests, let in-flight ones finish (up to `grace_seconds`), unload."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._rest is not None:
            self._rest.stop()
        if self._grpc is not None:
            self._grpc.stop(grace_seconds).wait()
        self.manager.stop()
        LOG.info("Server stopped.")

    def wait(self):
        """Block until `stop` is called (e.g. from a signal handler)."""
        self._stopped.wait()


def run_server(options):
    """Start a server and serve until SIGTERM or SIGINT; then shut down gracefully."""
    server = ModelServer(options).start()
    shutdown = threading.Event()

    def _on_signal(signum, _frame):
        LOG.info("Received signal %d, shutting down.", signum)
        shutdown.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(f"Running gRPC ModelServer at {options.host}:{server.port} (pid {os.getpid()})",
          flush=True)
    if server.rest_port:
        print(f"Exporting HTTP/REST API at:{options.host}:{server.rest_port}", flush=True)
    while not shutdown.wait(0.5):
        pass
    server.stop()
    return 0
