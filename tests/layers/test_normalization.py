"""SignedSqrt and L2Normalize against NumPy, including zeros (Sec. 3.3.1)."""

import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.layers import L2Normalize, SignedSqrt
from tests.test_case import run_layer_test


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_signed_sqrt_matches_numpy(dtype):
    x = np.array([[4.0, -9.0, 0.0, 2.5e-5, -1e-3], [1e6, -1e-6, 0.25, 0.0, -0.0]], dtype)
    y = SignedSqrt()(x).numpy()
    np.testing.assert_allclose(y, np.sign(x) * np.sqrt(np.abs(x)), rtol=1e-6)
    assert y[0, 2] == 0.0 and y[1, 3] == 0.0


@pytest.mark.parametrize("axis", [-1, 1, [1, 2]])
def test_l2_normalize_matches_numpy(axis):
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype("float32")
    x[1] = 0.0  # a zero slice stays zero
    y = L2Normalize(axis=axis)(x).numpy()
    ax = tuple(axis) if isinstance(axis, list) else axis
    norm = np.sqrt((x.astype(np.float64) ** 2).sum(axis=ax, keepdims=True))
    np.testing.assert_allclose(y, np.where(norm > 0, x / np.maximum(norm, 1e-30), 0.0), rtol=1e-6)
    assert np.all(np.isfinite(y))


def test_gradients_are_finite_at_zero():
    x = tf.constant([[0.0, 0.0, 0.0], [0.0, 4.0, -1e-20]])
    for layer in (SignedSqrt(), L2Normalize()):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) * tf.constant([1.0, 2.0, 3.0]))
        grad = tape.gradient(loss, x).numpy()
        assert np.all(np.isfinite(grad)), (layer, grad)
    # Signed sqrt: gradient 0 at 0 and 1 / (2 sqrt(|x|)) elsewhere.
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(SignedSqrt()(x))
    grad = tape.gradient(loss, x).numpy()
    np.testing.assert_allclose(grad[0], 0.0)
    np.testing.assert_allclose(grad[1, 1], 0.25, rtol=1e-6)
    # L2 normalisation of a nonzero row: (I - y y^T) / ||x|| applied to the upstream gradient.
    row = np.array([[3.0, 4.0]], np.float32)
    xt = tf.constant(row)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(L2Normalize()(xt) * tf.constant([[1.0, 0.0]]))
    y = row[0] / 5.0
    expected = (np.eye(2) - np.outer(y, y)) @ np.array([1.0, 0.0]) / 5.0
    np.testing.assert_allclose(tape.gradient(loss, xt).numpy()[0], expected, rtol=1e-6)


def test_bad_arguments():
    for kwargs in [dict(axis=1.5), dict(axis=[]), dict(axis="x"), dict(epsilon=0.0)]:
        with pytest.raises(ValueError, match="axis|epsilon"):
            L2Normalize(**kwargs)


def test_layer_contracts():
    run_layer_test(SignedSqrt, {}, (3, 5))
    run_layer_test(L2Normalize, dict(axis=[1, 2], epsilon=1e-10), (2, 3, 4))


# The SavedModel export + fresh-process reload of SignedSqrt and L2Normalize is covered by
# tests/layers/test_bilinear_pooling.py::test_saved_model_reload_in_fresh_process.
