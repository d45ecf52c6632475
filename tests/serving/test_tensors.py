"""Fast TensorProto conversion agrees with tf.make_tensor_proto / tf.make_ndarray both ways."""

import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.serving import tensors

CASES = [
    np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    np.array([[True, False], [False, True]]),
    np.array([1, -2, 3], np.int64),
    np.array([0, 255], np.uint8),
    np.array(2.5, np.float64),
    np.zeros((0, 28, 28, 1), np.float32),
    np.array([b"\x89PNG\x00\x00", b""], object),
    np.array([[b"a", b"bc"], [b"d", b"\x00"]], object),
    np.array([], object),
    np.arange(4, dtype=np.int16),  # no fast path: falls back to TensorFlow
]


def test_round_trips_and_interoperates_with_tensorflow():
    # One test over all cases: each pytest test pays ~1 s of shared per-test setup.
    for array in CASES:
        ours = tensors.to_tensor_proto(array)
        for got in (tensors.to_ndarray(ours), tf.make_ndarray(ours),
                    tensors.to_ndarray(tf.make_tensor_proto(array))):
            assert got.shape == array.shape, array
            assert got.dtype == array.dtype, array
            np.testing.assert_array_equal(got, array)


def test_malformed_tensor_content_is_an_error():
    proto = tensors.to_tensor_proto(np.zeros((2, 3), np.float32))
    proto.tensor_content = proto.tensor_content[:-4]
    with pytest.raises(ValueError, match="tensor_content has 20 bytes"):
        tensors.to_ndarray(proto)
