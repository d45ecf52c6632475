"""Class-balanced losses (Cui et al. 2019, Eq. 5.1-5.13) against NumPy references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.losses import (
    ClassBalancedFocalLoss,
    ClassBalancedSigmoidCrossEntropy,
    ClassBalancedSoftmaxCrossEntropy,
    class_balanced_weights,
    effective_number,
)
from keras_fgvc.models import PriorProbability
from tests.test_case import run_serialization_test

COUNTS = [500, 120, 30, 8, 2]
C = len(COUNTS)
LOSSES = [
    ClassBalancedSoftmaxCrossEntropy,
    ClassBalancedSigmoidCrossEntropy,
    ClassBalancedFocalLoss,
]


# === NumPy references, written from the equations ===


def ref_effective_number(n, beta):
    # Eq. 5.3: E_n = sum_{j=1}^n beta^(j-1).
    return sum(beta ** (j - 1) for j in range(1, n + 1))


def ref_weights(counts, beta):
    # Eq. 5.6 + normalisation to sum C (Sec. 5.3); zero counts clamped to 1.
    raw = np.array([1.0 / ref_effective_number(max(int(n), 1), beta) for n in counts])
    return raw / raw.sum() * len(counts)


def ref_softmax(labels, z, w):
    # Eq. 5.8: -w_y log(exp(z_y) / sum_j exp(z_j)).
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    return np.array([-w[y] * np.log(p[b, y]) for b, y in enumerate(labels)])


def ref_sigmoid(labels, z, w):
    # Eq. 5.9-5.11: z_t = z_i for the true class, -z_i otherwise.
    out = []
    for b, y in enumerate(labels):
        zt = np.where(np.arange(z.shape[1]) == y, z[b], -z[b])
        out.append(-w[y] * np.sum(np.log(1.0 / (1.0 + np.exp(-zt)))))
    return np.array(out)


def ref_focal(labels, z, w, gamma):
    # Eq. 5.12-5.13: -w_y sum_i (1 - p_t)^gamma log p_t.
    out = []
    for b, y in enumerate(labels):
        zt = np.where(np.arange(z.shape[1]) == y, z[b], -z[b])
        pt = 1.0 / (1.0 + np.exp(-zt))
        out.append(-w[y] * np.sum((1.0 - pt) ** gamma * np.log(pt)))
    return np.array(out)


def _data(batch=6, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, size=batch)
    logits = rng.normal(size=(batch, C)) * scale
    return labels, logits


def _reference(loss_cls, labels, z, w, gamma=0.5):
    if loss_cls is ClassBalancedSoftmaxCrossEntropy:
        return ref_softmax(labels, z, w)
    if loss_cls is ClassBalancedSigmoidCrossEntropy:
        return ref_sigmoid(labels, z, w)
    return ref_focal(labels, z, w, gamma)


# === effective number and weights ===


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 0.999])
def test_effective_number_matches_recursion_and_sum(beta):
    for n in [0, 1, 2, 7, 50]:
        # Eq. 5.1 recursion E_n = 1 + beta E_{n-1}, E_0 = 0.
        e = 0.0
        for _ in range(n):
            e = 1.0 + beta * e
        np.testing.assert_allclose(effective_number(n, beta), e, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(effective_number(n, beta), ref_effective_number(n, beta))


def test_effective_number_limits_and_arrays():
    assert effective_number(5, 0.0) == 1.0  # Implication 1: beta = 0 -> 1.
    np.testing.assert_allclose(effective_number(100, 1 - 1e-9), 100.0, rtol=1e-5)  # beta -> 1.
    np.testing.assert_allclose(effective_number([1, 2, 3], 0.5), [1.0, 1.5, 1.75])


@pytest.mark.parametrize("beta", [0.0, 0.9, 0.99, 0.9999])
def test_class_balanced_weights_match_reference(beta):
    w = class_balanced_weights(COUNTS, beta)
    np.testing.assert_allclose(w, ref_weights(COUNTS, beta), rtol=1e-9)
    np.testing.assert_allclose(w.sum(), C, rtol=1e-12)
    assert np.all(np.diff(w) >= -1e-12)  # rarer classes never get less weight


def test_class_balanced_weights_degenerate_cases():
    np.testing.assert_array_equal(class_balanced_weights(COUNTS, 0.0), np.ones(C))
    np.testing.assert_allclose(class_balanced_weights([7, 7, 7], 0.999), np.ones(3))
    # Inverse-frequency limit as beta -> 1.
    w = class_balanced_weights([100, 10], 1 - 1e-10)
    np.testing.assert_allclose(w[1] / w[0], 10.0, rtol=1e-4)


@pytest.mark.parametrize("num_classes", [3, 49, 98, 1000])
def test_beta_zero_and_equal_counts_give_exactly_ones(num_classes):
    # raw / sum(raw) * C is 1 - 2^-53 for C = 49 or 98: "exactly unweighted" needs exact ones.
    counts = np.arange(1, num_classes + 1)
    np.testing.assert_array_equal(class_balanced_weights(counts, 0.0), np.ones(num_classes))
    np.testing.assert_array_equal(
        class_balanced_weights([7] * num_classes, 0.9999), np.ones(num_classes)
    )
    np.testing.assert_array_equal(
        ClassBalancedFocalLoss(counts, beta=0.0).class_weights, np.ones(num_classes)
    )


def test_class_count_mismatch_and_single_class_are_value_errors():
    z = np.zeros((2, 4), "float32")
    for loss_cls in LOSSES:
        with pytest.raises(ValueError, match="class_counts has 3 classes but y_pred has 4"):
            loss_cls([5, 3, 2])([0, 1], z)
        # One class: every negative would get weight y * w_0 = 0 and drop out silently.
        with pytest.raises(ValueError, match="C >= 2"):
            loss_cls([10])


def test_zero_count_class_gets_the_max_weight():
    w = class_balanced_weights([100, 10, 0, 1], 0.99)
    assert np.all(np.isfinite(w))
    assert w[2] == pytest.approx(w[3])  # 0 treated as 1 sample
    assert w[2] == pytest.approx(w.max())
    np.testing.assert_allclose(w.sum(), 4.0)
    np.testing.assert_array_equal(class_balanced_weights([5, 0], 0.0), [1.0, 1.0])
    np.testing.assert_array_equal(class_balanced_weights([0, 0], 0.9), [1.0, 1.0])


def test_bad_beta_is_a_value_error_naming_it():
    for beta in [1.0, -0.1, 1.5, float("nan"), "0.9", None]:
        with pytest.raises(ValueError, match="beta must be in"):
            class_balanced_weights(COUNTS, beta)
        with pytest.raises(ValueError, match=repr(beta).replace("(", r"\(")):
            effective_number(3, beta)
        with pytest.raises(ValueError, match="beta"):
            ClassBalancedFocalLoss(COUNTS, beta=beta)


def test_bad_counts():
    for counts in [[3, -1], [], [[1, 2]], [1, float("inf")]]:
        with pytest.raises(ValueError, match="class_counts"):
            class_balanced_weights(counts, 0.9)


def test_bad_loss_arguments():
    with pytest.raises(ValueError, match="gamma"):
        ClassBalancedFocalLoss(COUNTS, gamma=-1.0)
    with pytest.raises(ValueError, match="from_logits"):
        ClassBalancedSoftmaxCrossEntropy(COUNTS, from_logits=False)
    with pytest.raises(ValueError, match="label_smoothing"):
        ClassBalancedSigmoidCrossEntropy(COUNTS, label_smoothing=1.5)


# === the losses ===


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss_cls", LOSSES)
def test_losses_match_reference(loss_cls, dtype):
    labels, z = _data()
    beta = 0.99
    loss = loss_cls(COUNTS, beta=beta, dtype=dtype)
    expected = _reference(loss_cls, labels, z, ref_weights(COUNTS, beta))
    tol = 1e-5 if dtype == "float32" else 1e-10
    for y_true in [labels, labels[:, None], np.eye(C)[labels]]:  # int, [B, 1], one-hot
        per_example = keras.ops.convert_to_numpy(
            loss.call(
                keras.ops.convert_to_tensor(y_true, dtype), keras.ops.convert_to_tensor(z, dtype)
            )
        )
        assert per_example.dtype == np.dtype(dtype)
        np.testing.assert_allclose(per_example, expected, rtol=tol, atol=tol)
        # Default reduction divides the sum by the batch size.
        np.testing.assert_allclose(loss(y_true, z.astype(dtype)), expected.mean(), rtol=tol)


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_sample_weight_and_reductions(loss_cls):
    labels, z = _data(batch=5, seed=1)
    sw = np.array([0.0, 1.0, 2.0, 0.5, 1.0])
    expected = _reference(loss_cls, labels, z, ref_weights(COUNTS, 0.999))
    loss = loss_cls(COUNTS, beta=0.999, dtype="float64")
    np.testing.assert_allclose(loss(labels, z, sample_weight=sw), (sw * expected).sum() / 5)
    summed = loss_cls(COUNTS, beta=0.999, reduction="sum", dtype="float64")
    np.testing.assert_allclose(summed(labels, z), expected.sum())


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_beta_zero_and_equal_counts_give_unweighted_loss(loss_cls):
    labels, z = _data(batch=8, seed=2)
    ones = np.ones(C)
    unweighted = _reference(loss_cls, labels, z, ones).mean()
    np.testing.assert_allclose(loss_cls(COUNTS, beta=0.0, dtype="float64")(labels, z), unweighted)
    equal = loss_cls([40] * C, beta=0.9999, dtype="float64")
    np.testing.assert_allclose(equal(labels, z), unweighted, rtol=1e-12)


def test_unweighted_softmax_and_sigmoid_equal_keras():
    labels, z = _data(batch=8, seed=3)
    softmax = ClassBalancedSoftmaxCrossEntropy(COUNTS, beta=0.0)
    ref = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, z)
    np.testing.assert_allclose(softmax(labels, z), ref, rtol=1e-5)
    sigmoid = ClassBalancedSigmoidCrossEntropy(COUNTS, beta=0.0)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)(np.eye(C)[labels], z)
    np.testing.assert_allclose(sigmoid(labels, z), C * bce, rtol=1e-5)  # sum, not mean


def test_focal_gamma_zero_equals_sigmoid():
    labels, z = _data(batch=8, seed=4)
    focal = ClassBalancedFocalLoss(COUNTS, beta=0.99, gamma=0.0, dtype="float64")
    sigmoid = ClassBalancedSigmoidCrossEntropy(COUNTS, beta=0.99, dtype="float64")
    np.testing.assert_array_equal(focal.call(labels, z), sigmoid.call(labels, z))


def test_label_smoothing_matches_reference():
    labels, z = _data(batch=4, seed=5)
    ls = 0.1
    w = ref_weights(COUNTS, 0.9)
    soft = np.eye(C)[labels] * (1 - ls) + ls / C
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    expected = w[labels] * -(soft * logp).sum(-1)
    loss = ClassBalancedSoftmaxCrossEntropy(COUNTS, beta=0.9, label_smoothing=ls, dtype="float64")
    np.testing.assert_allclose(loss.call(labels, z), expected, rtol=1e-10)


def _check_extreme_logits(loss_cls, gamma):
    kwargs = {"gamma": gamma} if loss_cls is ClassBalancedFocalLoss else {}
    loss = loss_cls(COUNTS, beta=0.0, **kwargs)
    labels = np.array([0, 1, 2, 3])
    z = np.zeros((4, C), "float32")
    z[0, 0] = 100.0  # confident and right
    z[1, 1] = -100.0  # confident and wrong (true class logit very negative)
    z[2, :] = 100.0  # every class on
    z[3, :] = -100.0
    z = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(z)
        per_example = loss.call(labels, z)
    grad = tape.gradient(per_example, z).numpy()
    per_example = per_example.numpy()
    assert np.all(np.isfinite(per_example)) and np.all(np.isfinite(grad))
    # Exact values from -log p_t with log_sigmoid(+-100) = 0 / -100.
    if loss_cls is ClassBalancedSoftmaxCrossEntropy:
        expected0 = 0.0
        expected1 = 100.0 + np.log(C - 1 + np.exp(-100.0))
    else:
        modulator = 0.5**gamma if loss_cls is ClassBalancedFocalLoss else 1.0
        expected0 = (C - 1) * np.log(2.0) * modulator
        expected1 = 100.0 + (C - 1) * np.log(2.0) * modulator
    np.testing.assert_allclose(per_example[0], expected0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(per_example[1], expected1, rtol=1e-5)


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_finite_values_and_gradients_at_extreme_logits(loss_cls):
    for gamma in [0.0, 0.5, 2.0]:
        _check_extreme_logits(loss_cls, gamma)


def test_focal_gamma_half_gradient_matches_finite_difference():
    labels, z = _data(batch=3, seed=6)
    loss = ClassBalancedFocalLoss(COUNTS, beta=0.9, gamma=0.5, dtype="float64")
    zt = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(zt)
        value = loss(labels, zt)
    grad = tape.gradient(value, zt).numpy()
    eps = 1e-6
    num = np.zeros_like(z)
    for idx in np.ndindex(*z.shape):
        plus, minus = z.copy(), z.copy()
        plus[idx] += eps
        minus[idx] -= eps
        num[idx] = (float(loss(labels, plus)) - float(loss(labels, minus))) / (2 * eps)
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_jit_compile_matches_eager(loss_cls):
    labels, z = _data(batch=6, seed=7)
    loss = loss_cls(COUNTS, beta=0.999)
    z = z.astype("float32")
    fn = tf.function(lambda y, p: loss(y, p), jit_compile=True)
    np.testing.assert_allclose(fn(tf.constant(labels), tf.constant(z)), loss(labels, z), rtol=1e-5)


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_serialization_round_trip(loss_cls):
    loss = loss_cls([10, 3, 0], beta=0.9, label_smoothing=0.05, name="cb")
    revived = run_serialization_test(loss)
    assert revived.get_config() == loss.get_config()
    np.testing.assert_array_equal(revived.class_weights, loss.class_weights)


def test_fit_with_prior_probability_head():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = rng.integers(0, 3, size=32)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, bias_initializer=PriorProbability())]
    )
    np.testing.assert_allclose(
        keras.ops.sigmoid(model.layers[-1].bias).numpy(), np.full(3, 1 / 3), rtol=1e-6
    )
    model.compile(optimizer="sgd", loss=ClassBalancedFocalLoss([20, 10, 2], beta=0.999))
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


@pytest.mark.parametrize("gamma", [None, 0.5, 2.0])
def test_sigmoid_and_focal_label_smoothing_match_reference(gamma):
    """Binary smoothing of every class's 0/1 target, t = y (1 - ls) + ls / 2 (as Keras's
    BinaryCrossentropy), inside Eq. 5.11 / 5.13: -w_y sum_i [t log p + (1 - t) log(1 - p)]
    with the focal factors (1 - p)^gamma on the positive and p^gamma on the negative term."""
    labels, z = _data(batch=6, seed=9)
    ls = 0.2
    w = ref_weights(COUNTS, 0.9)
    t = np.eye(C)[labels] * (1 - ls) + ls / 2
    p = 1 / (1 + np.exp(-z))
    g = 0.0 if gamma is None else gamma
    per_class = -(t * (1 - p) ** g * np.log(p) + (1 - t) * p ** g * np.log(1 - p))
    expected = w[labels] * per_class.sum(-1)
    if gamma is None:
        loss = ClassBalancedSigmoidCrossEntropy(COUNTS, beta=0.9, label_smoothing=ls,
                                                dtype="float64")
    else:
        loss = ClassBalancedFocalLoss(COUNTS, beta=0.9, gamma=gamma, label_smoothing=ls,
                                      dtype="float64")
    np.testing.assert_allclose(loss.call(labels, z), expected, rtol=1e-9)
