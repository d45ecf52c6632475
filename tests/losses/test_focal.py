"""Sigmoid focal loss (Lin et al. 2017; Cui Eq. 5.12) against a NumPy reference."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.losses import SigmoidFocalLoss, sigmoid_cross_entropy, sigmoid_focal_crossentropy
from tests.test_case import run_serialization_test


def ref_focal(targets, z, gamma, alpha=None):
    # Eq. 5.12 with soft targets written as the two binary terms.
    p = 1.0 / (1.0 + np.exp(-z))
    pos = -targets * (1.0 - p) ** gamma * np.log(p)
    neg = -(1.0 - targets) * p**gamma * np.log(1.0 - p)
    if alpha is not None:
        pos, neg = alpha * pos, (1.0 - alpha) * neg
    return (pos + neg).sum(-1)


def _data(seed=0, batch=6, classes=4):
    rng = np.random.default_rng(seed)
    return rng.integers(0, classes, size=batch), rng.normal(size=(batch, classes)) * 3.0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("gamma,alpha", [(2.0, None), (0.5, 0.25), (0.0, None), (1.0, 0.75)])
def test_matches_reference(dtype, gamma, alpha):
    labels, z = _data()
    targets = np.eye(4)[labels]
    loss = SigmoidFocalLoss(gamma=gamma, alpha=alpha, dtype=dtype)
    expected = ref_focal(targets, z, gamma, alpha)
    tol = 1e-5 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(loss.call(labels, z.astype(dtype)), expected, rtol=tol, atol=tol)
    np.testing.assert_allclose(loss(targets, z.astype(dtype)), expected.mean(), rtol=tol)
    sw = np.linspace(0.0, 2.0, 6)
    np.testing.assert_allclose(
        loss(labels, z.astype(dtype), sample_weight=sw), (sw * expected).mean(), rtol=tol
    )


def test_multi_hot_and_soft_targets():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(5, 3))
    targets = rng.uniform(size=(5, 3))  # soft targets
    loss = SigmoidFocalLoss(gamma=1.5, dtype="float64")
    np.testing.assert_allclose(loss.call(targets, z), ref_focal(targets, z, 1.5), rtol=1e-10)


def test_gamma_zero_is_sigmoid_cross_entropy_and_matches_keras():
    labels, z = _data(seed=2)
    targets = np.eye(4)[labels].astype("float32")
    z = z.astype("float32")
    focal = SigmoidFocalLoss(gamma=0.0)
    np.testing.assert_allclose(
        focal.call(labels, z), np.sum(sigmoid_cross_entropy(targets, z), -1), rtol=1e-6
    )
    # keras' focal loss averages over classes; ours sums (Eq. 5.12).
    keras_focal = keras.losses.BinaryFocalCrossentropy(gamma=2.0, from_logits=True)
    np.testing.assert_allclose(
        SigmoidFocalLoss(gamma=2.0)(targets, z), 4 * keras_focal(targets, z), rtol=1e-5
    )


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_single_logit_binary_targets(gamma):
    # One sigmoid output: [B] targets are 0/1 binary targets (as [B, 1] and keras), not
    # class indices (index 1 of a 1-wide one-hot would be an all-zero, i.e. negative, row).
    z = np.array([[2.0], [-1.0], [0.5]])
    y = np.array([1, 0, 1])
    expected = ref_focal(y[:, None].astype(float), z, gamma)
    loss = SigmoidFocalLoss(gamma=gamma, dtype="float64")
    np.testing.assert_allclose(loss.call(y, z), expected, rtol=1e-10)
    np.testing.assert_allclose(loss.call(y[:, None], z), expected, rtol=1e-10)
    if gamma == 0.0:
        bce = keras.losses.BinaryCrossentropy(from_logits=True, dtype="float64")
        np.testing.assert_allclose(loss(y, z), bce(y[:, None], z), rtol=1e-10)
    # Rank-1 logits would be summed over the batch as if it were the class axis.
    with pytest.raises(ValueError, match=r"\[B, C\]; got shape \(3,\)"):
        loss(y, z[:, 0])


def test_label_smoothing():
    labels, z = _data(seed=3)
    ls = 0.2
    targets = np.eye(4)[labels] * (1 - ls) + 0.5 * ls
    loss = SigmoidFocalLoss(gamma=2.0, label_smoothing=ls, dtype="float64")
    np.testing.assert_allclose(loss.call(labels, z), ref_focal(targets, z, 2.0), rtol=1e-10)


@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_extreme_logits_finite_values_and_gradients(gamma):
    z = tf.constant([[100.0, -100.0], [-100.0, 100.0]])
    targets = tf.constant([[1.0, 0.0], [1.0, 0.0]])
    with tf.GradientTape() as tape:
        tape.watch(z)
        loss = sigmoid_focal_crossentropy(targets, z, gamma)
    grad = tape.gradient(loss, z).numpy()
    assert np.all(np.isfinite(loss.numpy())) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(loss.numpy()[0], [0.0, 0.0], atol=1e-30)
    np.testing.assert_allclose(loss.numpy()[1], [100.0, 100.0], rtol=1e-6)
    # d/dz of the wrong-and-confident element is -(1 - p)^gamma ~ -1.
    np.testing.assert_allclose(grad[1], [-1.0, 1.0], rtol=1e-5)


def test_bad_arguments():
    for bad in [-0.5, float("nan"), "x", float("inf")]:
        with pytest.raises(ValueError, match="gamma"):
            SigmoidFocalLoss(gamma=bad)
    with pytest.raises(ValueError, match="alpha"):
        SigmoidFocalLoss(alpha=1.5)
    with pytest.raises(ValueError, match="from_logits"):
        SigmoidFocalLoss(from_logits=False)


def test_serialization_and_jit():
    loss = SigmoidFocalLoss(gamma=1.0, alpha=0.25, label_smoothing=0.1)
    run_serialization_test(loss)
    labels, z = _data(seed=4)
    z = z.astype("float32")
    fn = tf.function(lambda y, p: loss(y, p), jit_compile=True)
    np.testing.assert_allclose(fn(tf.constant(labels), tf.constant(z)), loss(labels, z), rtol=1e-5)
