"""CompactBilinearPooling and BilinearPooling against NumPy references (Table 3.1)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.layers import (
    BilinearPooling,
    CompactBilinearPooling,
    KernelPooling,
    L2Normalize,
    SignedSqrt,
)
from tests.test_case import run_layer_test, run_saved_model_test

RAW = dict(signed_sqrt=False, l2_normalize=False)


def _np_bilinear(x, pooling="mean"):
    """(1/hw) sum_{ij} X_ij X_ij^T, flattened row-major (Table 3.1), in float64."""
    x = np.asarray(x, np.float64)
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    outer = np.einsum("bni,bnj->bnij", x, x).reshape(x.shape[0], x.shape[1], -1)
    return outer.mean(1) if pooling == "mean" else outer.sum(1)


def _np_tensor_sketch(x, plan, pooling="mean"):
    """Eq. 3.9 with p = 2 from the definitions, in float64: per position, the Count
    Sketches C_t(x) = x M_t (M_t the dense hash-and-sign matrices), then
    IFFT(FFT(C_1) o FFT(C_2)) with NumPy's FFT, then pooled over positions."""
    x = np.asarray(x, np.float64)
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    m = plan.dense_matrices().astype(np.float64)
    c1, c2 = x @ m[0], x @ m[1]
    y = np.fft.ifft(np.fft.fft(c1, axis=-1) * np.fft.fft(c2, axis=-1), axis=-1).real
    return y.mean(1) if pooling == "mean" else y.sum(1)


def _np_post(y):
    y = np.sign(y) * np.sqrt(np.abs(y))
    return y / np.linalg.norm(y, axis=-1, keepdims=True)


@pytest.mark.parametrize("pooling", ["mean", "sum"])
def test_compact_bilinear_equals_kernel_pooling_order_two_term(pooling):
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 6)).astype("float32")
    cbp = CompactBilinearPooling(dims=32, pooling=pooling, seed=4, **RAW)(x).numpy()
    kp = KernelPooling(
        order=2, dims=32, coefficients=[0.0, 0.0, 1.0], pooling=pooling, seed=4, **RAW
    )(x).numpy()
    assert cbp.shape == (2, 32)
    # Exact zeros of the second-moment path (empty buckets) are FFT round-off in KernelPooling.
    np.testing.assert_allclose(cbp, kp[:, 1 + 6 :], rtol=1e-5, atol=1e-6 * np.abs(cbp).max())
    # With the default post-processing: signed sqrt + L2 of the same vector.
    full = CompactBilinearPooling(dims=32, pooling=pooling, seed=4)(x).numpy()
    np.testing.assert_allclose(full, _np_post(cbp.astype(np.float64)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["gram", "fft"])
@pytest.mark.parametrize("pooling", ["mean", "sum"])
@pytest.mark.parametrize(
    "shape, dims",
    [((2, 3, 4, 6), 32), ((2, 2, 3, 9), 4), ((3, 5), 7), ((2, 1, 1, 3), 1)],
    ids=["d>c", "d<c (colliding hash)", "rank 2, odd d", "d = 1"],
)
def test_compact_bilinear_equals_numpy_tensor_sketch(method, pooling, shape, dims):
    x = np.random.default_rng(7).normal(size=shape).astype("float32")
    layer = CompactBilinearPooling(dims=dims, pooling=pooling, seed=5, method=method, **RAW)
    y = layer(x).numpy()
    ref = _np_tensor_sketch(x, layer._plan, pooling)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("jit", [False, True])
def test_gram_and_fft_paths_agree_in_value_and_gradient(jit):
    """The second-moment path is the same function as the FFT path (Pham & Pagh's identity).

    Compared before the signed square root, which turns the FFT path's ~1e-9
    round-off in empty buckets (exact zeros on the other path) into ~3e-5."""
    x = tf.constant(np.random.default_rng(8).normal(size=(3, 4, 5, 24)).astype("float32"))
    w = tf.constant(np.random.default_rng(9).normal(size=(200,)).astype("float32"))
    out = {}
    for method in ("gram", "fft"):
        layer = CompactBilinearPooling(dims=200, seed=2, method=method, **RAW)

        def f(x, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
                loss = tf.reduce_sum(y * w)
            return y, tape.gradient(loss, x)

        out[method] = [v.numpy() for v in tf.function(f, jit_compile=jit)(x)]
    for a, b in zip(out["gram"], out["fft"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())


def test_auto_method_picks_the_cheaper_path():
    def picked(c, dims, method="auto"):
        layer = CompactBilinearPooling(dims=dims, method=method)
        layer.build((None, 7, 7, c))
        return layer._method

    # c^2 <= 4 d log2 d: the second-moment matrix; otherwise the FFTs.
    assert picked(128, 12417) == "gram"
    assert picked(512, 8192) == "gram"
    assert picked(2048, 8192) == "fft"
    assert picked(2048, 8192, "gram") == "gram"
    assert picked(128, 12417, "fft") == "fft"
    assert CompactBilinearPooling(method="fft").get_config()["method"] == "fft"


def test_compact_bilinear_approximates_squared_inner_product():
    x = np.random.default_rng(1).random((10, 48)).astype("float32")
    y = CompactBilinearPooling(dims=8192, seed=1, **RAW)(x).numpy().astype(np.float64)
    gram = x.astype(np.float64) @ x.T
    iu = np.triu_indices(10, 1)
    rel = np.abs((y @ y.T)[iu] - gram[iu] ** 2) / gram[iu] ** 2
    assert rel.mean() < 0.05, rel.mean()
    # Compact and full bilinear vectors have (approximately) the same Gram matrix.
    full = _np_bilinear(x)
    np.testing.assert_allclose(full @ full.T, gram**2, rtol=1e-9)


@pytest.mark.parametrize("pooling", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(2, 3, 2, 5), (3, 5)])
def test_bilinear_equals_numpy_mean_of_outer_products(pooling, shape):
    x = np.random.default_rng(2).normal(size=shape).astype("float32")
    raw = BilinearPooling(pooling=pooling, **RAW)(x).numpy()
    np.testing.assert_allclose(raw, _np_bilinear(x, pooling), rtol=1e-5, atol=1e-6)
    full = BilinearPooling(pooling=pooling)(x).numpy()
    np.testing.assert_allclose(full, _np_post(_np_bilinear(x, pooling)), rtol=1e-5, atol=1e-6)


def test_zero_input_is_finite_with_finite_gradients():
    x = tf.zeros((2, 2, 2, 4))
    compact = [CompactBilinearPooling(dims=16, method=m) for m in ("gram", "fft")]
    layers = [BilinearPooling()] + compact
    for layer in layers:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.range(y.shape[-1], dtype=tf.float32))
        grad = tape.gradient(loss, x).numpy()
        np.testing.assert_array_equal(y.numpy(), 0.0)
        assert np.all(np.isfinite(grad))


def test_gradients_reach_inputs():
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(2, 2, 2, 4)).astype("float32"))
    compact = [CompactBilinearPooling(dims=16, method=m, **RAW) for m in ("gram", "fft")]
    for layer in [BilinearPooling(**RAW)] + compact:
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x)))
        assert np.all(np.abs(tape.gradient(loss, x).numpy()) > 0)
    # d/dX sum((X^T X / N)^2) = 4 X (X^T X) / N^2 for the raw bilinear vector.
    xv = x.numpy().reshape(2, 4, 4).astype(np.float64)
    gram = np.einsum("bni,bnj->bij", xv, xv)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.square(BilinearPooling(**RAW)(x)))
    expected = 4 * np.einsum("bni,bij->bnj", xv, gram) / 16
    np.testing.assert_allclose(tape.gradient(loss, x).numpy().reshape(2, 4, 4), expected, rtol=1e-4)


def test_numpy_integer_arguments_give_a_json_safe_config():
    layer = CompactBilinearPooling(dims=np.int64(16), seed=np.int32(3))
    config = layer.get_config()
    assert type(config["dims"]) is int and type(config["seed"]) is int
    x = np.random.default_rng(5).random((2, 2, 2, 4)).astype("float32")
    np.testing.assert_array_equal(layer(x), CompactBilinearPooling(dims=16, seed=3)(x))


def test_bad_arguments_and_input_rank():
    bad = [dict(dims=0), dict(dims=8.0), dict(dims=True), dict(pooling="max"), dict(seed="a"),
           dict(method="dense")]
    for kwargs in bad:
        with pytest.raises(ValueError, match="dims|pooling|seed|method"):
            CompactBilinearPooling(**kwargs)
    with pytest.raises(ValueError, match="pooling"):
        BilinearPooling(pooling="max")
    for layer in (CompactBilinearPooling(dims=8), BilinearPooling()):
        with pytest.raises(ValueError, match="rank"):
            layer(np.ones((2, 3, 4), "float32"))


@pytest.mark.parametrize("method", ["gram", "fft"])
def test_layer_contracts(method):
    run_layer_test(
        CompactBilinearPooling,
        dict(dims=16, seed=2, method=method),
        (2, 3, 4, 8),
        expected_output_shape=(2, 16),
    )
    run_layer_test(
        BilinearPooling, dict(pooling="sum"), (2, 3, 4, 6), expected_output_shape=(2, 36)
    )


@pytest.mark.slow
def test_saved_model_reload_in_fresh_process():
    inputs = keras.Input((3, 4, 6))
    # Also exports the post-processing layers on their own (for test_normalization.py).
    outputs = {
        "compact": CompactBilinearPooling(dims=16, seed=3, method="gram")(inputs),
        "compact_fft": CompactBilinearPooling(dims=16, seed=3, method="fft")(inputs),
        "full": BilinearPooling()(inputs),
        "normalized": L2Normalize(axis=[1, 2])(SignedSqrt()(inputs)),
    }
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(4).random((3, 3, 4, 6)).astype("float32")
    run_saved_model_test(model, x)
