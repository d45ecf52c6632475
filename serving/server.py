r"""Loopback TF Serving-compatible model server (gRPC PredictionService + ModelService, REST).

Takes tensorflow_model_server's flags, so a command line carries over:

    python serving/server.py --port=8500 --rest_api_port=8501 \
        --model_name=detector --model_base_path="$PWD/models/detector"
    python serving/server.py --model_config_file=models/models.config --enable_batching \
        --batching_parameters_file=batching_parameters.txt
"""

import logging

from keras_fgvc.startup import quiet_tensorflow_import

quiet_tensorflow_import()  # before absl and TF print their CPU-only start-up noise

from absl import app, flags  # noqa: E402

from keras_fgvc.serving import limits, server  # noqa: E402

flags.DEFINE_integer("port", 8500, "gRPC port (0 picks a free port).")
flags.DEFINE_integer("rest_api_port", 0, "REST port; 0 turns REST off.")
flags.DEFINE_string("host", "127.0.0.1", "Address to bind (0.0.0.0 for all interfaces).")
flags.DEFINE_string("model_name", "default", "Model name (with --model_base_path).")
flags.DEFINE_string("model_base_path", "", "MODEL_BASE/<name>: directory of integer versions.")
flags.DEFINE_string("model_config_file", "", "ModelServerConfig text proto (models.config).")
flags.DEFINE_float("file_system_poll_wait_seconds", 1.0, "Seconds between version polls.")
flags.DEFINE_float("model_config_file_poll_wait_seconds", 0.0,
                   "Seconds between re-reads of --model_config_file (0 = read once).")
flags.DEFINE_bool("enable_batching", False, "Batch concurrent requests server-side.")
flags.DEFINE_string("batching_parameters_file", "",
                    "With --enable_batching: TF Serving BatchingParameters text proto "
                    "(max_batch_size, batch_timeout_micros, num_batch_threads, "
                    "max_enqueued_batches, allowed_batch_sizes, pad_variable_length_inputs "
                    "[ignored]). Fields it sets override --max_batch_size / "
                    "--batch_timeout_micros, and its max_batch_size also caps request size. "
                    "Unknown fields or an unreadable file stop the server at start-up.")
flags.DEFINE_integer("max_batch_size", 0,
                     "Not a tensorflow_model_server flag (prefer --batching_parameters_file). "
                     "Largest request batch, RESOURCE_EXHAUSTED above (0 = the default, "
                     f"{limits.DEFAULT_MAX_BATCH_SIZE}), and the largest merged batch with "
                     "--enable_batching (32 when 0).")
flags.DEFINE_integer("batch_timeout_micros", 1000,
                     "Not a tensorflow_model_server flag (prefer --batching_parameters_file). "
                     "Batching: longest wait for a fuller batch.")
flags.DEFINE_integer("grpc_max_threads", 16, "gRPC thread pool size.")
flags.DEFINE_integer("max_message_bytes", 16 * 1024 * 1024,
                     "Largest gRPC message (RESOURCE_EXHAUSTED above) and REST body (413).")
flags.DEFINE_string("grpc_channel_arguments", "",
                    "Comma-separated gRPC server arguments, e.g. "
                    "grpc.max_receive_message_length=1000000.")
flags.DEFINE_bool("enable_model_warmup", True, "Replay assets.extra/tf_serving_warmup_requests.")
flags.DEFINE_integer("max_num_load_retries", 5,
                     "Retries of a version that failed to load (then: when its directory changes).")
flags.DEFINE_integer("load_retry_interval_micros", 1_000_000,
                     "Wait before the first retry of a failed load; doubles each retry (<= 60 s).")
flags.DEFINE_integer("tensorflow_session_parallelism", 0,
                     "Threads of both TensorFlow pools (0: TensorFlow's default), unless one "
                     "of the next two is given.")
flags.DEFINE_integer("tensorflow_intra_op_parallelism", 0,
                     "Threads that parallelise one op (0: TensorFlow's default).")
flags.DEFINE_integer("tensorflow_inter_op_parallelism", 0,
                     "Ops run at once (0: TensorFlow's default).")
# Limits and hardening (README): not tensorflow_model_server flags.
flags.DEFINE_integer("max_image_pixels", limits.DEFAULT_MAX_IMAGE_PIXELS,
                     "Most width x height of one encoded image, read from its header before "
                     "decoding (RESOURCE_EXHAUSTED above; 0 = no limit).")
flags.DEFINE_integer("max_request_pixels", limits.DEFAULT_MAX_REQUEST_PIXELS,
                     "Most width x height summed over the images of one request (0 = no limit).")
flags.DEFINE_integer("max_concurrent_requests", limits.DEFAULT_MAX_CONCURRENT_REQUESTS,
                     "Most requests running or queued at once, gRPC and REST together; one more "
                     "is answered RESOURCE_EXHAUSTED / 429 (0 = no limit).")
flags.DEFINE_integer("rest_max_connections", 32,
                     "Most open REST connections; one more is answered 503 and closed.")
flags.DEFINE_float("rest_timeout_seconds", 10.0,
                   "A whole REST request must arrive within this time (408 otherwise); also the "
                   "keep-alive idle time.")
flags.DEFINE_integer("rest_max_header_bytes", 16 * 1024, "Largest REST request head (431).")
flags.DEFINE_integer("rest_max_json_depth", 32, "Deepest JSON nesting of a REST body (400).")


def main(argv):
    del argv
    logging.getLogger("keras_fgvc.serving").setLevel(logging.INFO)
    f = flags.FLAGS
    options = server.ServerOptions(
        port=f.port, rest_api_port=f.rest_api_port, host=f.host, model_name=f.model_name,
        model_base_path=f.model_base_path, model_config_file=f.model_config_file,
        model_config_file_poll_wait_seconds=f.model_config_file_poll_wait_seconds,
        file_system_poll_wait_seconds=f.file_system_poll_wait_seconds,
        enable_batching=f.enable_batching, max_batch_size=f.max_batch_size,
        batch_timeout_micros=f.batch_timeout_micros,
        batching_parameters_file=f.batching_parameters_file, grpc_max_threads=f.grpc_max_threads,
        max_message_bytes=f.max_message_bytes, grpc_channel_arguments=f.grpc_channel_arguments,
        enable_model_warmup=f.enable_model_warmup, max_num_load_retries=f.max_num_load_retries,
        load_retry_interval_micros=f.load_retry_interval_micros,
        max_image_pixels=f.max_image_pixels, max_request_pixels=f.max_request_pixels,
        max_concurrent_requests=f.max_concurrent_requests,
        rest_max_connections=f.rest_max_connections, rest_timeout_seconds=f.rest_timeout_seconds,
        rest_max_header_bytes=f.rest_max_header_bytes, rest_max_json_depth=f.rest_max_json_depth,
        tensorflow_session_parallelism=f.tensorflow_session_parallelism,
        tensorflow_intra_op_parallelism=f.tensorflow_intra_op_parallelism,
        tensorflow_inter_op_parallelism=f.tensorflow_inter_op_parallelism)
    return server.run_server(options)


if __name__ == "__main__":
    app.run(main)
