"""NormalizedLinear (LDAM's normalised linear head) against NumPy: cosine logits in [-1, 1]."""

import numpy as np
import pytest

from keras_fgvc.layers import NormalizedLinear
from tests.test_case import run_layer_test


def _cosine(x, w):
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
    wn = w / np.maximum(np.linalg.norm(w, axis=0, keepdims=True), 1e-30)
    return xn @ wn


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_cosine_similarity(dtype):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(6, 16)) * rng.uniform(0.01, 100, (6, 1))).astype(dtype)
    layer = NormalizedLinear(5)
    y = np.asarray(layer(x))
    np.testing.assert_allclose(y, _cosine(x, np.asarray(layer.kernel)), rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(y) <= 1.0 + 1e-6)


def test_degenerate_cases():
    layer = NormalizedLinear(3)
    layer.build((None, 4))
    layer.kernel.assign(np.array([[1, 0, 0], [0, 2, 0], [0, 0, 0], [0, 0, 0]], "float32"))
    x = np.array([[3.0, 0, 0, 0], [0, 0, 0, 0], [1.0, 1.0, 0, 0]], "float32")
    y = np.asarray(layer(x))
    # x parallel to w_1: cosine 1; a zero row and a zero class column give 0, never NaN.
    np.testing.assert_allclose(y[0], [1.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(y[1], [0.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(y[2], [2 ** -0.5, 2 ** -0.5, 0.0], rtol=1e-6)
    # Scaling a class weight or an input does not change the logits.
    layer.kernel.assign(np.asarray(layer.kernel) * np.array([[5.0, 0.1, 1.0]], "float32"))
    np.testing.assert_allclose(np.asarray(layer(7.0 * x)), y, rtol=1e-5, atol=1e-6)


def test_layer_contract():
    run_layer_test(NormalizedLinear, {"units": 4}, input_shape=(3, 8),
                   expected_output_shape=(3, 4))


def test_bad_arguments():
    for kwargs in [dict(units=0), dict(units=2.5), dict(units=True), dict(units=3, epsilon=0)]:
        with pytest.raises(ValueError, match="units|epsilon"):
            NormalizedLinear(**kwargs)
