"""``assets.extra/tf_serving_warmup_requests``: PredictionLog records TF Serving replays on load.

TF Serving reads at most 1000 records from this TFRecord file and runs each
request before it marks the version AVAILABLE, so the first real request does
not pay for graph optimisation and kernel initialisation. The loopback server
replays the same file.
"""

import os

import numpy as np
import tensorflow as tf

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000


def _serving_apis():
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(
            "Warmup requests need tensorflow-serving-api: pip install 'keras-fgvc[serving]'."
        ) from err
    return predict_pb2, prediction_log_pb2


def blank_png(image_size, channels, value=128):
    """PNG bytes of a constant image of `image_size` (H, W) with `channels` channels."""
    image = np.full((int(image_size[0]), int(image_size[1]), int(channels)), value, np.uint8)
    return tf.io.encode_png(image).numpy()


def warmup_requests(model_name, image_size, channels, batch_sizes=(1, 8)):
    """PredictionLog protos for both prediction signatures at each batch size.

    Args:
        model_name: the served model name (``model_spec.name``).
        image_size: ``(H, W)``.
        channels: image channels.
        batch_sizes: batch sizes to warm up.

    Returns:
        A list of ``tensorflow.serving.PredictionLog``.
    """
    predict_pb2, prediction_log_pb2 = _serving_apis()
    png = blank_png(image_size, channels)
    logs = []
    for batch in batch_sizes:
        if int(batch) < 1:
            raise ValueError(f"warmup batch sizes must be >= 1, got {batch!r}.")
        inputs = {
            "serving_default": (
                "image_bytes",
                tf.make_tensor_proto([png] * batch, dtype=tf.string, shape=[batch]),
            ),
            "predict_images": (
                "images",
                tf.make_tensor_proto(
                    np.full((batch, *image_size, channels), 128.0, np.float32)
                ),
            ),
        }
        for signature_name, (key, tensor) in inputs.items():
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature_name
            request.inputs[key].CopyFrom(tensor)
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.CopyFrom(request)
            logs.append(log)
    return logs


def write_warmup_requests(saved_model_dir, logs):
    """Write `logs` as ``<saved_model_dir>/assets.extra/tf_serving_warmup_requests``.

    Returns:
        The path written.
    """
    if len(logs) > MAX_WARMUP_RECORDS:
        raise ValueError(
            f"TF Serving reads at most {MAX_WARMUP_RECORDS} warmup records, got {len(logs)}."
        )
    directory = os.path.join(saved_model_dir, WARMUP_DIR)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(saved_model_dir):
    """Parse the warmup file of a version directory into PredictionLog protos ([] if absent)."""
    _, prediction_log_pb2 = _serving_apis()
    path = os.path.join(saved_model_dir, WARMUP_DIR, WARMUP_FILE)
    if not os.path.exists(path):
        return []
    logs = []
    for record in tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS):
        logs.append(prediction_log_pb2.PredictionLog.FromString(record.numpy()))
    return logs
