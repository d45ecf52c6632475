"""Warmup requests: PredictionLog records in TF Serving's TFRecord format."""

import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from keras_fgvc.export import warmup


def test_write_then_parse_raw_records(tmp_path):
    logs = warmup.warmup_requests("det", (28, 28), 1, batch_sizes=(1, 3))
    path = warmup.write_warmup_requests(str(tmp_path), logs)
    assert path == os.path.join(str(tmp_path), "assets.extra", "tf_serving_warmup_requests")
    # Parse exactly as TF Serving does: TFRecord of serialized PredictionLog.
    records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    parsed = [prediction_log_pb2.PredictionLog.FromString(r) for r in records]
    assert len(parsed) == 4
    seen = set()
    for log in parsed:
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.name == "det"
        sig = request.model_spec.signature_name
        if sig == "serving_default":
            images = tf.make_ndarray(request.inputs["image_bytes"])
            decoded = tf.io.decode_png(images[0]).numpy()
            assert decoded.shape == (28, 28, 1)
            np.testing.assert_array_equal(decoded, 128)
            seen.add((sig, len(images)))
        else:
            assert sig == "predict_images"
            images = tf.make_ndarray(request.inputs["images"])
            assert images.shape[1:] == (28, 28, 1) and images.dtype == np.float32
            seen.add((sig, len(images)))
    assert seen == {("serving_default", 1), ("serving_default", 3),
                    ("predict_images", 1), ("predict_images", 3)}
    assert [log.SerializeToString() for log in warmup.read_warmup_requests(str(tmp_path))] == [
        log.SerializeToString() for log in parsed
    ]


def test_missing_file_and_bad_arguments(tmp_path):
    assert warmup.read_warmup_requests(str(tmp_path)) == []
    with pytest.raises(ValueError, match="batch sizes must be >= 1"):
        warmup.warmup_requests("det", (28, 28), 1, batch_sizes=(0,))
    log = warmup.warmup_requests("det", (4, 4), 3, batch_sizes=(1,))[0]
    with pytest.raises(ValueError, match="at most 1000"):
        warmup.write_warmup_requests(str(tmp_path), [log] * 1001)
