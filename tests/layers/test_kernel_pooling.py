"""KernelPooling and the Count Sketch / Tensor Sketch core, against NumPy references.

References are written from the equations of Ch. 3 of Cui's dissertation:
Count Sketch (Eq. 3.8) as an explicit sum, Tensor Sketch (Eq. 3.9) as a direct
circular convolution, the feature map (Eq. 3.7) per position and pooled in the
spatial domain, the Taylor series kernel (Eq. 3.6) and its RBF coefficients
(Eq. 3.11).
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.layers import KernelPooling
from keras_fgvc.layers import count_sketch as count_sketch_module
from keras_fgvc.layers.count_sketch import (
    SketchPlan,
    count_sketch,
    pooled_tensor_sketch,
    sketch_hashes,
)
from tests.test_case import run_layer_test, run_saved_model_test

RAW = dict(signed_sqrt=False, l2_normalize=False)


def _np_count_sketch(x, h, s, d):
    """Eq. 3.8: c_j = sum_{i: h(i) = j} s(i) x_i (explicit loop over channels)."""
    out = np.zeros(x.shape[:-1] + (d,), np.float64)
    for i in range(x.shape[-1]):
        out[..., h[i]] += s[i] * x[..., i]
    return out


def _np_circular_convolution(a, b):
    """(a * b)[k] = sum_j a[j] b[(k - j) mod d], directly (no FFT)."""
    d = a.shape[-1]
    out = np.zeros_like(a)
    for k in range(d):
        for j in range(d):
            out[..., k] += a[..., j] * b[..., (k - j) % d]
    return out


def _np_kernel_pooling(layer, x):
    """Eq. 3.7 per position with NumPy FFTs in float64, then the mean in the spatial domain."""
    x = np.asarray(x, np.float64)
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    alpha = layer.coefficients.astype(np.float64)
    blocks = {0: np.full(x.shape[:2] + (1,), alpha[0]), 1: alpha[1] * x}
    for orders, plan in layer._groups:
        spectrum = 1.0
        for t in range(max(orders)):
            sk = _np_count_sketch(x, plan.h[t], plan.s[t], plan.sketch_dim)
            spectrum = spectrum * np.fft.rfft(sk, axis=-1)
            if t + 1 in orders:
                blocks[t + 1] = alpha[t + 1] * np.fft.irfft(spectrum, n=plan.sketch_dim, axis=-1)
    phi = np.concatenate([blocks[i] for i in range(layer.order + 1)], axis=-1)
    return phi.mean(axis=1) if layer.pooling == "mean" else phi.sum(axis=1)


def _relative_errors(phi, x, alpha):
    """Eq. 3.12 against the Taylor series kernel of Eq. 3.6, over distinct pairs."""
    x = np.asarray(x, np.float64)
    gram = x @ x.T
    kernel = sum(a**2 * gram**i for i, a in enumerate(np.asarray(alpha, np.float64)))
    estimate = np.asarray(phi, np.float64) @ np.asarray(phi, np.float64).T
    iu = np.triu_indices(len(x), 1)
    return np.abs(estimate - kernel)[iu] / kernel[iu]


# --- hashes and the Count Sketch op ---------------------------------------------------


@pytest.mark.parametrize("c,d", [(6, 16), (20, 8), (9, 2)])
def test_hashes_are_deterministic_balanced_signs(c, d):
    h, s, slots = sketch_hashes(seed=3, stream=0, input_dim=c, sketch_dim=d, count=3)
    h2, s2, _ = sketch_hashes(seed=3, stream=0, input_dim=c, sketch_dim=d, count=3)
    np.testing.assert_array_equal(h, h2)
    np.testing.assert_array_equal(s, s2)
    assert h.shape == s.shape == (3, c) and h.min() >= 0 and h.max() < d
    assert set(np.unique(s)) <= {-1.0, 1.0}
    k = math.ceil(c / d)
    for t in range(3):
        assert len(set(slots[t])) == c  # injective into k * d slots
        assert np.bincount(h[t], minlength=d).max() <= k  # balanced buckets
    other, _, _ = sketch_hashes(seed=4, stream=0, input_dim=c, sketch_dim=d, count=3)
    assert not np.array_equal(h, other) or c == d == 1


def test_independent_sketches_differ():
    h, s, _ = sketch_hashes(seed=0, stream=0, input_dim=64, sketch_dim=128, count=2)
    assert not np.array_equal(h[0], h[1]) and not np.array_equal(s[0], s[1])
    h1, _, _ = sketch_hashes(seed=0, stream=1, input_dim=64, sketch_dim=128, count=1)
    assert not np.array_equal(h[0], h1[0])


def test_hashes_are_pinned():
    """The hash scheme is part of every saved layer's function: these values must not change.

    (A reloaded layer rebuilds h_t, s_t from `seed`; a different scheme would silently change
    the output of every saved model.)
    """
    h, s, _ = sketch_hashes(seed=0, stream=0, input_dim=6, sketch_dim=4, count=2)
    np.testing.assert_array_equal(h, [[0, 3, 0, 2, 1, 2], [2, 1, 0, 3, 0, 2]])
    np.testing.assert_array_equal(s, [[1, -1, 1, 1, 1, 1], [1, 1, -1, 1, -1, 1]])
    h, s, _ = sketch_hashes(seed=123, stream=1, input_dim=5, sketch_dim=8, count=1)
    np.testing.assert_array_equal(h, [[3, 5, 1, 0, 6]])
    np.testing.assert_array_equal(s, [[1, 1, 1, 1, 1]])


@pytest.mark.parametrize("c,d", [(6, 16), (20, 8)])
def test_count_sketch_value_and_gather_gradient(c, d):
    plan = SketchPlan(seed=1, stream=0, input_dim=c, sketch_dim=d, count=3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, c)).astype("float32")
    upstream = rng.normal(size=(2, 3, 3, d)).astype("float32")
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = count_sketch(xt, plan)
        loss = tf.reduce_sum(y * upstream)
    grad = tape.gradient(loss, xt).numpy()
    for t in range(3):
        ref = _np_count_sketch(x, plan.h[t], plan.s[t], d)
        np.testing.assert_allclose(y.numpy()[..., t, :], ref, rtol=1e-6, atol=1e-6)
    # The gradient of a linear map is its transpose applied to the upstream gradient.
    ref_grad = np.einsum("bntd,tcd->bnc", upstream, plan.dense_matrices())
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("d", [8, 9])
def test_fft_product_equals_circular_convolution_of_sketches(d):
    plan = SketchPlan(seed=2, stream=0, input_dim=5, sketch_dim=d, count=3)
    x = np.random.default_rng(1).normal(size=(4, 1, 5))
    out2, out3 = pooled_tensor_sketch(tf.constant(x, tf.float32), plan, [2, 3], "mean")
    sk = [_np_count_sketch(x[:, 0], plan.h[t], plan.s[t], d) for t in range(3)]
    conv2 = _np_circular_convolution(sk[0], sk[1])
    conv3 = _np_circular_convolution(conv2, sk[2])
    np.testing.assert_allclose(out2.numpy(), conv2, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out3.numpy(), conv3, rtol=1e-4, atol=1e-5)


# --- the feature map -------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["mean", "sum"])
@pytest.mark.parametrize("dims", [16, [12, 16, 12]])
def test_layer_matches_numpy_feature_map(pooling, dims):
    x = np.random.default_rng(2).random((2, 3, 2, 6)).astype("float32")
    layer = KernelPooling(order=4, dims=dims, gamma=0.2, pooling=pooling, seed=5, **RAW)
    y = layer(x).numpy()
    ref = _np_kernel_pooling(layer, x)
    assert y.shape == (2, 1 + 6 + (48 if dims == 16 else 40))
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    # The first two blocks are exact: alpha_0 (times HW for "sum") and alpha_1 pool(x).
    n = 6 if pooling == "sum" else 1
    alpha = layer.coefficients
    np.testing.assert_allclose(y[:, 0], alpha[0] * n, rtol=1e-6)
    pooled_x = x.reshape(2, -1, 6).sum(1) / (6 / n)
    np.testing.assert_allclose(y[:, 1:7], alpha[1] * pooled_x, rtol=1e-5)


def test_frequency_domain_mean_equals_mean_of_per_position_outputs():
    x = np.random.default_rng(3).normal(size=(2, 4, 3, 8)).astype("float32")
    for pooling, reduce in [("mean", np.mean), ("sum", np.sum)]:
        pooled = KernelPooling(order=3, dims=32, gamma=0.1, pooling=pooling, **RAW)(x).numpy()
        per_position = KernelPooling(order=3, dims=32, gamma=0.1, **RAW)(x.reshape(-1, 8))
        expected = reduce(per_position.numpy().reshape(2, 12, -1), axis=1)
        np.testing.assert_allclose(pooled, expected, rtol=1e-4, atol=1e-5)


def test_signed_sqrt_and_l2_normalize_post_processing():
    x = np.random.default_rng(4).normal(size=(3, 2, 2, 5)).astype("float32")
    raw = KernelPooling(order=3, dims=16, gamma=0.5, **RAW)(x).numpy().astype(np.float64)
    full = KernelPooling(order=3, dims=16, gamma=0.5)(x).numpy()
    ref = np.sign(raw) * np.sqrt(np.abs(raw))
    ref = ref / np.linalg.norm(ref, axis=-1, keepdims=True)
    np.testing.assert_allclose(full, ref, rtol=1e-5, atol=1e-6)


# --- kernel approximation (Eq. 3.1, 3.10, 3.12) ----------------------------------------


@pytest.mark.parametrize("order,coefficients", [(2, [0.0, 0.0, 1.0]), (4, "rbf")])
def test_kernel_approximation_error_falls_with_d(order, coefficients):
    x = np.random.default_rng(5).random((12, 64)).astype("float32")  # non-negative
    errors = []
    for d in [512, 2048, 8192]:
        layer = KernelPooling(order=order, dims=d, coefficients=coefficients, seed=7, **RAW)
        if coefficients == "rbf":
            layer.adapt(x)
            assert layer.gamma == pytest.approx(1.0 / _np_mean_pair_inner_product(x), rel=1e-9)
        errors.append(_relative_errors(layer(x).numpy(), x, layer.coefficients).mean())
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.05, errors


def test_estimate_is_unbiased_over_seeds():
    """E[phi(x).phi(y)] = sum_i alpha_i^2 (x.y)^i: averaging over hash seeds converges."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 6)).astype("float32")
    alpha = [0.5, 1.0, 0.8, 0.6]
    estimates = []
    for seed in range(80):
        phi = KernelPooling(order=3, dims=4, coefficients=alpha, seed=seed, **RAW)(x).numpy()
        estimates.append(float(phi[0].astype(np.float64) @ phi[1]))
    xy = float(x[0].astype(np.float64) @ x[1])
    kernel = sum(a**2 * xy**i for i, a in enumerate(alpha))
    # Single estimates at d = 4 are poor; their mean is within a few standard errors.
    std_err = np.std(estimates) / np.sqrt(len(estimates))
    assert abs(np.mean(estimates) - kernel) < 4 * std_err + 1e-3, (np.mean(estimates), kernel)
    assert np.std(estimates) > 0.05 * abs(kernel)  # the sketch does vary with the seed


# --- coefficients and adapt ------------------------------------------------------------


def _np_mean_pair_inner_product(x):
    x = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
    vals = [x[i] @ x[j] for i in range(len(x)) for j in range(len(x)) if i != j]
    return float(np.mean(vals))


def test_rbf_coefficients_gamma_fallback_and_adapt():
    layer = KernelPooling(order=4, dims=8)
    assert layer.coefficients is None  # gamma unknown before build
    layer.build((None, 2, 2, 10))
    gamma = 1.0 / 10  # documented fallback 1 / C
    expected = [math.sqrt((2 * gamma) ** i / math.factorial(i)) for i in range(5)]
    np.testing.assert_allclose(layer.coefficients, expected, rtol=1e-6)
    sample = np.random.default_rng(7).random((3, 2, 2, 10)).astype("float32")
    layer.adapt(sample)  # after build: resets gamma and the coefficients
    assert layer.gamma == pytest.approx(1.0 / _np_mean_pair_inner_product(sample), rel=1e-9)
    expected = [math.sqrt((2 * layer.gamma) ** i / math.factorial(i)) for i in range(5)]
    np.testing.assert_allclose(layer.coefficients, expected, rtol=1e-6)
    assert layer.get_config()["gamma"] == layer.gamma
    # Before build, with gamma given.
    fresh = KernelPooling(order=2, gamma=0.25)
    np.testing.assert_allclose(fresh.coefficients, [1.0, math.sqrt(0.5), math.sqrt(0.125)])


def test_adapt_errors():
    with pytest.raises(ValueError, match="explicit coefficients"):
        KernelPooling(order=1, coefficients=[1.0, 2.0]).adapt(np.ones((2, 3)))
    with pytest.raises(ValueError, match="mean inner product"):
        KernelPooling(order=2).adapt(np.array([[1.0, 0.0], [-1.0, 0.0]]))
    with pytest.raises(ValueError, match="rank"):
        KernelPooling(order=2).adapt(np.ones((2, 3, 4)))


def test_explicit_coefficients_are_respected():
    x = np.random.default_rng(8).normal(size=(2, 5)).astype("float32")
    alpha = [0.3, -2.0, 0.0, 1.5]
    layer = KernelPooling(order=3, dims=8, coefficients=alpha, trainable_coefficients=False, **RAW)
    y = layer(x).numpy()
    np.testing.assert_allclose(layer.coefficients, alpha, rtol=1e-7)
    assert not layer.trainable_weights and len(layer.non_trainable_weights) == 1
    np.testing.assert_allclose(y[:, 0], 0.3)
    np.testing.assert_allclose(y[:, 1:6], -2.0 * x, rtol=1e-6)
    np.testing.assert_array_equal(y[:, 6:14], 0.0)  # alpha_2 = 0 zeroes the order-2 block
    unit = KernelPooling(order=3, dims=8, coefficients=[1.0] * 4, **RAW)(x).numpy()
    np.testing.assert_allclose(y[:, 14:], 1.5 * unit[:, 14:], rtol=1e-5, atol=1e-6)


def test_order_one_is_constant_and_mean():
    x = np.random.default_rng(9).normal(size=(2, 3, 3, 4)).astype("float32")
    y = KernelPooling(order=1, coefficients=[2.0, 3.0], **RAW)(x).numpy()
    np.testing.assert_allclose(y, np.concatenate([np.full((2, 1), 2.0), 3.0 * x.mean((1, 2))], 1))


# --- gradients -------------------------------------------------------------------------


def _tf_dense_reference(layer, x):
    """The same function through dense sketch matrices and TF's own gradients."""
    alpha = layer._alpha
    x = tf.reshape(x, (x.shape[0], -1, x.shape[-1]))
    n = x.shape[1] if layer.pooling == "sum" else 1
    reduce = tf.reduce_mean if layer.pooling == "mean" else tf.reduce_sum
    blocks = [alpha[0] * n * tf.ones_like(x[:, 0, :1]), alpha[1] * reduce(x, 1)]
    (orders, plan) = layer._groups[0]
    mats = plan.dense_matrices()
    spectrum = None
    for t in range(layer.order):
        f = tf.signal.rfft(tf.einsum("bnc,cd->bnd", x, mats[t]))
        spectrum = f if spectrum is None else spectrum * f
        if t >= 1:
            reduce = tf.reduce_mean if layer.pooling == "mean" else tf.reduce_sum
            pooled = tf.signal.irfft(reduce(spectrum, 1), [plan.sketch_dim])
            blocks.append(alpha[t + 1] * pooled)
    return tf.concat(blocks, -1)


@pytest.mark.parametrize(
    "shape,dims,pooling",
    [
        ((2, 2, 3, 6), 8, "mean"),  # d > c: injective hash (a signed gather)
        ((3, 1, 5, 12), 7, "sum"),  # d < c (bucket collisions, k = 2), odd d, B != H W
    ],
)
def test_gradients_reach_inputs_and_coefficients(shape, dims, pooling):
    rng = np.random.default_rng(10)
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    upstream = tf.constant(rng.normal(size=(shape[0], 1 + shape[-1] + 3 * dims)).astype("float32"))
    layer = KernelPooling(order=4, dims=dims, gamma=0.3, pooling=pooling, **RAW)
    layer.build(x.shape)
    grads = []
    for fn in (layer, lambda t: _tf_dense_reference(layer, t)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(fn(x) * upstream)
        grads.append(tape.gradient(loss, [x, layer._alpha]))
    (gx, galpha), (rx, ralpha) = grads
    assert np.all(np.abs(gx.numpy()) > 0) and np.all(np.abs(galpha.numpy()) > 0)
    np.testing.assert_allclose(gx.numpy(), rx.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(galpha.numpy(), ralpha.numpy(), rtol=1e-4, atol=1e-5)
    assert layer.trainable_weights[0] is layer._alpha


@pytest.mark.parametrize("channels,dims", [(6, 8), (12, [8, 16])])
def test_xla_layout_matches_eager_values_and_gradients(channels, dims):
    """Under jit_compile the sketch gathers along the last axis instead of by rows."""
    rng = np.random.default_rng(15)
    x = tf.constant(rng.normal(size=(2, 3, 2, channels)).astype("float32"))
    layer = KernelPooling(order=3, dims=dims, gamma=0.2, **RAW)
    layer.build(x.shape)
    upstream = tf.constant(rng.normal(size=layer.compute_output_shape(x.shape)).astype("float32"))

    def value_and_grads(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = layer(t)
        return [y, *tape.gradient(y, [t, layer._alpha], output_gradients=upstream)]

    seen = []

    def traced(t):
        seen.append(count_sketch_module._in_xla_context())
        return value_and_grads(t)

    eager = value_and_grads(x)
    xla = tf.function(traced, jit_compile=True)(x)
    assert seen == [True]  # the XLA layout was traced (else this test compares eager with itself)
    assert not count_sketch_module._in_xla_context()
    for a, b in zip(xla, eager):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(eager[0].numpy(), _np_kernel_pooling(layer, x), rtol=1e-4, atol=1e-5)


def test_coefficients_learn_in_fit():
    x = np.random.default_rng(11).random((8, 2, 2, 4)).astype("float32")
    inputs = keras.Input((2, 2, 4))
    pool = KernelPooling(order=2, dims=8, gamma=0.5)
    model = keras.Model(inputs, keras.layers.Dense(1)(pool(inputs)))
    before = pool.coefficients.copy()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    model.fit(x, np.arange(8, dtype="float32")[:, None], epochs=2, verbose=0)
    assert np.all(np.isfinite(pool.coefficients)) and not np.allclose(pool.coefficients, before)


# --- arguments -------------------------------------------------------------------------


_BAD_ARGUMENTS = [
    (dict(order=0), "order"),
    (dict(order=2.0), "order"),
    (dict(order=3, dims=[8]), "dims"),
    (dict(order=3, dims=[8, 0]), "dims"),
    (dict(dims="big"), "dims"),
    (dict(order=2, coefficients=[1.0, 2.0]), "coefficients"),
    (dict(order=1, coefficients=[1.0, float("nan")]), "coefficients"),
    (dict(coefficients="poly"), "coefficients"),
    (dict(gamma=0.0), "gamma"),
    (dict(gamma=-1.0), "gamma"),
    (dict(pooling="max"), "pooling"),
    (dict(seed=1.5), "seed"),
]


def test_bad_arguments_and_input_rank():
    for kwargs, match in _BAD_ARGUMENTS:
        with pytest.raises(ValueError, match=match):
            KernelPooling(**kwargs)
    for shape in [(2, 3, 4), (2, 2, 2, 2, 3), (4,)]:
        with pytest.raises(ValueError, match="rank"):
            KernelPooling(order=2, dims=8)(np.ones(shape, "float32"))


# --- Keras contract --------------------------------------------------------------------


def test_layer_contract_rank4_with_adapt():
    run_layer_test(
        KernelPooling,
        dict(order=3, dims=[32, 48], seed=3),
        (2, 3, 4, 8),
        expected_output_shape=(2, 1 + 8 + 80),
        before_call=lambda layer, x: layer.adapt(np.abs(x)),
    )


def test_layer_contract_rank2():
    run_layer_test(
        KernelPooling,
        dict(order=2, dims=16, coefficients=[1.0, 0.5, 0.25], pooling="sum"),
        (3, 8),
        expected_output_shape=(3, 1 + 8 + 16),
    )


def test_mixed_bfloat16_close_to_float32():
    x = np.random.default_rng(12).random((2, 3, 3, 8)).astype("float32")
    expected = KernelPooling(order=3, dims=32, gamma=0.1)(x).numpy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    layer = KernelPooling(order=3, dims=32, gamma=0.1)
    y = layer(x)
    assert layer.compute_dtype == "bfloat16" and layer._alpha.dtype == "float32"
    np.testing.assert_allclose(np.asarray(y, np.float32), expected, rtol=2e-2, atol=2e-3)


def test_float64_policy_matches_float32():
    x = np.random.default_rng(14).random((2, 2, 3, 6))
    y32 = KernelPooling(order=3, dims=16, gamma=0.2, **RAW)(x.astype("float32")).numpy()
    layer = KernelPooling(order=3, dims=16, gamma=0.2, dtype="float64", **RAW)
    y64 = layer(x).numpy()
    assert y64.dtype == np.float64 and layer._alpha.dtype == "float32"  # FFT math is float32
    np.testing.assert_allclose(y64, y32, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(y64, _np_kernel_pooling(layer, x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_saved_model_reload_in_fresh_process():
    inputs = keras.Input((3, 4, 8))
    model = keras.Model(inputs, KernelPooling(order=3, dims=[16, 24], gamma=0.3, seed=9)(inputs))
    x = np.random.default_rng(13).random((4, 3, 4, 8)).astype("float32")
    run_saved_model_test(model, x)
