"""Background-splitting auxiliary loss (Mullapudi et al. 2021) against NumPy references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.losses import BackgroundSplittingLoss
from tests.test_case import run_serialization_test

T = 5


def ref_hard(teacher_labels, z, lam=0.1):
    # lambda * -log softmax(z)_t, 0 where there is no teacher label.
    out = []
    for b, t in enumerate(teacher_labels):
        if t < 0:
            out.append(0.0)
            continue
        p = np.exp(z[b]) / np.exp(z[b]).sum()
        out.append(-lam * np.log(p[t]))
    return np.array(out)


def ref_soft(q, z, temperature, lam=0.1):
    # lambda * T^2 * KL(q_T || softmax(z / T)), q_T = q^(1/T) renormalised.
    out = []
    for b in range(len(z)):
        if np.any(np.isnan(q[b])) or q[b].sum() <= 0:
            out.append(0.0)
            continue
        qt = q[b] ** (1.0 / temperature)
        qt /= qt.sum()
        p = np.exp(z[b] / temperature) / np.exp(z[b] / temperature).sum()
        kl = sum(qt[i] * np.log(qt[i] / p[i]) for i in range(T) if qt[i] > 0)
        out.append(lam * temperature**2 * kl)
    return np.array(out)


def as_official(per_row, valid):
    # The official code averages over the rows with a teacher label only:
    # aux_weight * CrossEntropyLoss()(aux_logits[valid], aux_labels[valid]). Keras divides the
    # per-example sum by B, so each valid row carries B / #valid of its value.
    valid = np.asarray(valid, bool)
    return np.where(valid, per_row, 0.0) * len(per_row) / max(valid.sum(), 1)


def _data(seed=0, b=6):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, T, size=b)
    labels[1] = -1
    z = rng.normal(size=(b, T)) * 2.0
    teacher_logits = rng.normal(size=(b, T)) * 2.0
    return labels, z, teacher_logits


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hard_matches_reference(dtype):
    labels, z, _ = _data()
    loss = BackgroundSplittingLoss(mode="hard", dtype=dtype)
    valid = labels >= 0
    rows = ref_hard(labels, z)
    expected = as_official(rows, valid)
    tol = 1e-5 if dtype == "float32" else 1e-10
    for y_true in [labels, labels[:, None]]:
        np.testing.assert_allclose(loss.call(y_true, z.astype(dtype)), expected, rtol=tol, atol=tol)
    # The reduced loss is lambda * the mean CE over the rows with a teacher label.
    np.testing.assert_allclose(loss(labels, z.astype(dtype)), rows[valid].mean(), rtol=tol)
    sw = np.linspace(0.0, 2.0, len(labels))
    np.testing.assert_allclose(
        loss(labels, z.astype(dtype), sample_weight=sw),
        (sw * rows)[valid].sum() / valid.sum(),
        rtol=tol,
    )
    # lambda = 1 is the official aux loss: CrossEntropyLoss()(z[valid], labels[valid]).
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    np.testing.assert_allclose(
        BackgroundSplittingLoss(weight=1.0)(labels, z), ce(labels[valid], z[valid]), rtol=1e-5
    )


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_rows_without_teacher_do_not_dilute_the_mean(mode):
    """Official code: the aux CE is a mean over the rows with a teacher label, not over B."""
    labels, z, teacher_logits = _data(7, b=8)
    labels[[0, 3, 5]] = -1
    valid = labels >= 0
    if mode == "hard":
        y_true, rows = labels, ref_hard(labels, z)
    else:
        y_true = _softmax(teacher_logits)
        y_true[~valid] = np.nan
        rows = ref_soft(y_true, z, 2.0)
    loss = BackgroundSplittingLoss(mode, temperature=2.0, dtype="float64")
    np.testing.assert_allclose(loss(y_true, z), rows[valid].mean(), rtol=1e-10)
    # Adding rows with no teacher leaves the loss unchanged.
    more_y = np.concatenate([y_true, np.full_like(y_true[:4], -1 if mode == "hard" else np.nan)])
    more_z = np.concatenate([z, np.random.default_rng(0).normal(size=(4, T))])
    np.testing.assert_allclose(loss(more_y, more_z), rows[valid].mean(), rtol=1e-10)
    # reduction=None (what the trainer uses): the mean of the per-example values.
    none = BackgroundSplittingLoss(mode, temperature=2.0, reduction=None, dtype="float64")
    np.testing.assert_allclose(np.mean(none(y_true, z)), rows[valid].mean(), rtol=1e-10)
    # No teacher at all: 0, not NaN.
    empty = np.full_like(y_true, -1 if mode == "hard" else np.nan)
    assert float(loss(empty, z)) == 0.0


def test_hard_from_teacher_probabilities_takes_argmax():
    labels, z, teacher_logits = _data(1)
    probs = _softmax(teacher_logits)
    probs[1] = 0.0  # no teacher prediction for row 1
    valid = probs.sum(1) > 0
    expected = as_official(ref_hard(np.where(valid, probs.argmax(1), -1), z), valid)
    loss = BackgroundSplittingLoss(dtype="float64")
    np.testing.assert_allclose(loss.call(probs, z), expected, rtol=1e-10)
    logits_loss = BackgroundSplittingLoss(teacher_from_logits=True, dtype="float64")
    teacher_logits[1] = np.nan
    np.testing.assert_allclose(logits_loss.call(teacher_logits, z), expected, rtol=1e-10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_soft_matches_reference(dtype, temperature):
    _, z, teacher_logits = _data(2)
    probs = _softmax(teacher_logits)
    probs[1] = 0.0
    probs[2, 0] = 0.0  # a zero probability is fine (0 log 0 = 0)
    probs[2] /= probs[2].sum()
    rows = ref_soft(probs, z, temperature)
    expected = as_official(rows, probs.sum(1) > 0)
    loss = BackgroundSplittingLoss("soft", temperature=temperature, dtype=dtype)
    tol = 1e-5 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(loss.call(probs, z.astype(dtype)), expected, rtol=tol, atol=tol)
    np.testing.assert_allclose(loss(probs, z.astype(dtype)), expected.mean(), rtol=tol, atol=tol)
    np.testing.assert_allclose(expected.mean(), rows[probs.sum(1) > 0].mean(), rtol=1e-12)


def test_soft_from_teacher_logits():
    _, z, teacher_logits = _data(3)
    teacher_logits[0] = np.nan  # no teacher
    temperature = 3.0
    # softmax(t / T) == softmax(t)^(1/T) renormalised, so the reference takes softmax(t).
    probs = _softmax(np.nan_to_num(teacher_logits))
    probs[0] = np.nan
    expected = as_official(ref_soft(probs, z, temperature), ~np.isnan(probs[:, 0]))
    loss = BackgroundSplittingLoss(
        "soft", temperature=temperature, teacher_from_logits=True, dtype="float64"
    )
    np.testing.assert_allclose(loss.call(teacher_logits, z), expected, rtol=1e-9, atol=1e-12)


def test_soft_with_one_hot_teacher_equals_hard():
    labels, z, _ = _data(4)
    one_hot = np.eye(T)[np.maximum(labels, 0)]
    one_hot[labels < 0] = 0.0
    soft = BackgroundSplittingLoss("soft", dtype="float64")
    hard = BackgroundSplittingLoss("hard", dtype="float64")
    np.testing.assert_allclose(soft.call(one_hot, z), hard.call(labels, z), rtol=1e-10)


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_ignored_rows_have_zero_loss_and_finite_gradients(mode):
    _, z, teacher_logits = _data(5)
    z[0] = [100.0, -100.0, 0.0, 0.0, 0.0]
    if mode == "hard":
        y_true = np.array([1, -1, -1, 2, -1, 0])
    else:
        y_true = _softmax(teacher_logits)
        y_true[[1, 2, 4]] = np.nan
    z = tf.constant(z, tf.float32)
    loss = BackgroundSplittingLoss(mode, teacher_from_logits=False)
    with tf.GradientTape() as tape:
        tape.watch(z)
        per_example = loss.call(tf.constant(y_true, tf.float32), z)
    grad = tape.gradient(per_example, z).numpy()
    assert np.all(np.isfinite(per_example.numpy())) and np.all(np.isfinite(grad))
    np.testing.assert_array_equal(per_example.numpy()[[1, 2, 4]], 0.0)
    np.testing.assert_array_equal(grad[[1, 2, 4]], 0.0)
    assert per_example.numpy()[0] > 1.0  # row 0 is confidently wrong


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        BackgroundSplittingLoss(mode="kl")
    for bad in [0.0, -1.0, float("inf")]:
        with pytest.raises(ValueError, match="temperature"):
            BackgroundSplittingLoss(temperature=bad)
    with pytest.raises(ValueError, match="weight"):
        BackgroundSplittingLoss(weight=-0.1)
    with pytest.raises(ValueError, match="mode='soft'"):
        BackgroundSplittingLoss("soft")(np.zeros(3), np.zeros((3, T)))


def test_jit_compile_matches_eager_and_serialization():
    labels, z, teacher_logits = _data(6)
    z = z.astype("float32")
    for loss, y_true in [
        (BackgroundSplittingLoss("hard"), labels.astype("float32")),
        (
            BackgroundSplittingLoss("soft", temperature=2.0),
            _softmax(teacher_logits).astype("float32"),
        ),
    ]:
        fn = tf.function(lambda y, p, loss=loss: loss(y, p), jit_compile=True)
        np.testing.assert_allclose(
            fn(tf.constant(y_true), tf.constant(z)), loss(y_true, z), rtol=1e-5
        )
        run_serialization_test(loss)
    run_serialization_test(BackgroundSplittingLoss("soft", 4.0, 0.5, teacher_from_logits=True))
