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


def test_values_must_fill_the_declared_shape_nothing_is_padded():
    # 22 bytes on the wire declaring [20000, 28, 28, 1] floats: TensorFlow would pad to 63 MB.
    empty = tf.make_tensor_proto(np.zeros((0,), np.float32))
    empty.ClearField("tensor_shape")
    for d in (20000, 28, 28, 1):
        empty.tensor_shape.dim.add().size = d
    empty.ClearField("tensor_content")
    assert len(empty.SerializeToString()) < 40
    one_string = tensors.to_tensor_proto(np.array([b"\x89PNG"], object))
    one_string.tensor_shape.dim[0].size = 20000  # one value, 20000 declared
    one_float = tf.make_tensor_proto(np.float32(1.0))
    one_float.tensor_shape.dim.add().size = 1 << 20  # float_val: [1.0], shape [2**20]
    negative = tensors.to_tensor_proto(np.zeros(2, np.float32))
    negative.tensor_shape.dim[0].size = -2
    for proto, message in [(empty, "declares 15680000 values but 0 were sent"),
                           (one_string, "declares 20000 values but 1 were sent"),
                           (one_float, f"declares {1 << 20} values but 1 were sent"),
                           (negative, "negative dimension")]:
        with pytest.raises(ValueError, match=message):
            tensors.to_ndarray(proto)
    # Exactly filled value lists (what TF's own converter writes for small tensors) still work.
    exact = tf.make_tensor_proto([1.5, 2.5], tf.float32)
    exact.ClearField("tensor_content")
    exact.float_val.extend([1.5, 2.5])
    np.testing.assert_array_equal(tensors.to_ndarray(exact), [1.5, 2.5])
