r"""Loopback TF Serving-compatible model server (gRPC PredictionService + ModelService, REST).

Takes tensorflow_model_server's flags, so a command line carries over:

    python serving/server.py --port=8500 --rest_api_port=8501 \
        --model_name=detector --model_base_path="$PWD/models/detector"
    python serving/server.py --model_config_file=models/models.config --enable_batching \
        --batching_parameters_file=batching_parameters.txt
"""

import logging

from absl import app, flags

from keras_fgvc.serving import server

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
                     "Largest request batch (RESOURCE_EXHAUSTED above; 0 = no limit) and the "
                     "largest merged batch with --enable_batching (32 when 0).")
flags.DEFINE_integer("batch_timeout_micros", 1000,
                     "Not a tensorflow_model_server flag (prefer --batching_parameters_file). "
                     "Batching: longest wait for a fuller batch.")
flags.DEFINE_integer("grpc_max_threads", 16, "gRPC thread pool size.")
flags.DEFINE_integer("max_message_bytes", 64 * 1024 * 1024,
                     "Largest gRPC message / REST body (RESOURCE_EXHAUSTED above).")
flags.DEFINE_string("grpc_channel_arguments", "",
                    "Comma-separated gRPC server arguments, e.g. "
                    "grpc.max_receive_message_length=1000000.")
flags.DEFINE_bool("enable_model_warmup", True, "Replay assets.extra/tf_serving_warmup_requests.")


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
        enable_model_warmup=f.enable_model_warmup)
    return server.run_server(options)


if __name__ == "__main__":
    app.run(main)
