"""FixedBackgroundLogit and foreground_probabilities (BG splitting appendix B, Eq. 2-3)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.layers import FixedBackgroundLogit, foreground_probabilities
from tests.test_case import run_layer_test, run_saved_model_test


def _eq3_reference(foreground_logits, b0):
    """Eq. 3 written out: p_n = e^{z_n} / (e^{b0} + sum_i e^{z_i}), n = 1..N (float64)."""
    z = np.asarray(foreground_logits, np.float64)
    shift = np.maximum(z.max(axis=-1, keepdims=True), b0)
    numer = np.exp(z - shift)
    denom = np.exp(b0 - shift) + numer.sum(axis=-1, keepdims=True)
    return numer / denom


@pytest.mark.parametrize("b0", [0.0, -2.5, 3.0])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_eq3(b0, dtype):
    rng = np.random.default_rng(1)
    z = (3 * rng.normal(size=(6, 4))).astype(dtype)
    layer = FixedBackgroundLogit(background_logit=b0, dtype=dtype)
    logits = keras.ops.convert_to_numpy(layer(z))
    assert logits.shape == (6, 5)
    assert logits.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(logits[:, 0], np.full(6, b0, dtype))
    np.testing.assert_array_equal(logits[:, 1:], z)
    probs = keras.ops.convert_to_numpy(foreground_probabilities(logits))
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs, _eq3_reference(z, b0), rtol=1e-5, atol=1e-7)
    assert np.all(probs.sum(axis=-1) < 1.0)


def test_zero_background_logit_is_active():
    """b0 = 0.0 must not disable the layer (the authors' code does)."""
    z = np.array([[2.0, -1.0, 0.5], [-3.0, -4.0, -5.0]], "float32")
    logits = keras.ops.convert_to_numpy(FixedBackgroundLogit(0.0)(z))
    np.testing.assert_array_equal(logits[:, 0], [0.0, 0.0])
    probs = keras.ops.convert_to_numpy(foreground_probabilities(logits))
    plain = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)  # N-way softmax
    assert np.all(np.abs(probs - plain) > 1e-3)
    # Expected: 1 / (1 + sum exp(z)) is the background mass.
    np.testing.assert_allclose(1.0 - probs.sum(-1), 1.0 / (1.0 + np.exp(z).sum(-1)), rtol=1e-6)
    # All foreground logits below b0 -> background is the argmax.
    assert np.argmax(logits[1]) == 0 and np.argmax(logits[0]) == 1


def test_extreme_logits_are_stable():
    z = np.array([[1000.0, -1000.0], [-1000.0, -1000.0], [88.0, 89.0]], "float32")
    probs = keras.ops.convert_to_numpy(foreground_probabilities(FixedBackgroundLogit(0.0)(z)))
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs, _eq3_reference(z, 0.0), rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(probs[0], [1.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(probs[1], [0.0, 0.0], atol=1e-30)


def test_gradients():
    """No gradient reaches b0 (no weights; constant); gradients reach the foreground logits."""
    layer = FixedBackgroundLogit(background_logit=1.5)
    z = tf.Variable(np.random.default_rng(0).normal(size=(5, 3)).astype("float32"))
    y = np.array([0, 1, 2, 3, 0])
    with tf.GradientTape() as tape:
        logits = layer(z)
        loss = tf.reduce_sum(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        )
    assert layer.trainable_weights == [] and layer.weights == []
    grad = tape.gradient(loss, z).numpy()
    # d(-log softmax_y)/dz_n = p_n - [y == n], n = 1..N, from Eq. 3.
    p = _eq3_reference(z.numpy(), 1.5)
    expected = p - np.eye(4)[y][:, 1:]
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)
    # The background column itself is behind stop_gradient.
    with tf.GradientTape() as tape:
        tape.watch(z)
        out = layer(z)
        background_sum = tf.reduce_sum(out[:, 0])
    grad_b0 = tape.gradient(background_sum, z, unconnected_gradients="zero")
    np.testing.assert_array_equal(grad_b0.numpy(), 0.0)


def test_background_logit_unchanged_by_training():
    inputs = keras.Input((4,))
    fg = keras.layers.Dense(3)(inputs)
    logits = FixedBackgroundLogit(-1.0)(fg)
    model = keras.Model(inputs, logits)
    model.compile(
        optimizer=keras.optimizers.SGD(1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    model.fit(x, np.zeros(16, "int32"), epochs=3, verbose=0)
    out = model.predict(x, verbose=0)
    np.testing.assert_array_equal(out[:, 0], -1.0)


def test_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    z = np.array([[2.0, -1.0, 0.5]], "float32")
    logits = FixedBackgroundLogit(0.0)(z)
    assert keras.backend.standardize_dtype(logits.dtype) == "bfloat16"
    probs = foreground_probabilities(logits)
    assert keras.backend.standardize_dtype(probs.dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(probs), _eq3_reference(z, 0.0), rtol=2e-2)


def test_jit_matches_eager():
    layer = FixedBackgroundLogit(0.25)
    z = np.random.default_rng(2).normal(size=(4, 6)).astype("float32")
    fn = tf.function(lambda t: foreground_probabilities(layer(t)), jit_compile=True)
    np.testing.assert_allclose(fn(tf.constant(z)).numpy(), _eq3_reference(z, 0.25), rtol=1e-5)


def test_layer_suite():
    out = run_layer_test(
        FixedBackgroundLogit,
        {"background_logit": 0.0},
        input_shape=(4, 5),
        expected_output_shape=(4, 6),
    )
    np.testing.assert_array_equal(out[:, 0], 0.0)


@pytest.mark.slow
def test_saved_model():
    inputs = keras.Input((5,))
    out = FixedBackgroundLogit(0.5)(keras.layers.Dense(3)(inputs))
    model = keras.Model(inputs, out)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    run_saved_model_test(model, x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0", None, True])
def test_bad_background_logit(bad):
    with pytest.raises(ValueError, match="background_logit"):
        FixedBackgroundLogit(background_logit=bad)


def test_bad_shapes():
    with pytest.raises(ValueError, match="foreground"):
        FixedBackgroundLogit().build((2, 0))
    with pytest.raises(ValueError, match="foreground"):
        foreground_probabilities(np.zeros((2, 1), "float32"))


def test_foreground_probabilities_in_a_saved_functional_model(tmp_path):
    inputs = keras.Input((3,))
    logits = FixedBackgroundLogit(0.0)(keras.layers.Dense(4)(inputs))
    model = keras.Model(inputs, {"logits": logits, "fg": foreground_probabilities(logits)})
    path = str(tmp_path / "m.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    x = np.random.default_rng(3).normal(size=(5, 3)).astype("float32")
    got, expected = reloaded(x), model(x)
    np.testing.assert_allclose(got["fg"], expected["fg"], rtol=1e-6)
    np.testing.assert_allclose(
        got["fg"],
        _eq3_reference(keras.ops.convert_to_numpy(expected["logits"])[:, 1:], 0.0),
        rtol=1e-5,
    )
