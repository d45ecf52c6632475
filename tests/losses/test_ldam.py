"""LDAM loss (Cao et al. 2019) and deferred re-weighting (DRW)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.losses import (
    DeferredReweighting,
    LDAMLoss,
    class_balanced_weights,
    drw_class_weights,
    ldam_margins,
)
from tests.test_case import run_serialization_test

COUNTS = [400, 100, 25, 4]
C = len(COUNTS)


def ref_margins(counts, max_margin):
    # Delta_j = const / n_j^(1/4), scaled so the largest is max_margin.
    m = np.array([1.0 / max(n, 1) ** 0.25 for n in counts])
    return m * max_margin / m.max()


def ref_ldam(labels, z, counts, max_margin=0.5, s=30.0, w=None):
    w = np.ones(len(counts)) if w is None else np.asarray(w)
    delta = ref_margins(counts, max_margin)
    out = []
    for b, y in enumerate(labels):
        shifted = z[b].copy()
        shifted[y] -= delta[y]  # margin on the true-class logit only
        shifted *= s
        p = np.exp(shifted - shifted.max())
        p /= p.sum()
        out.append(-w[y] * np.log(p[y]))
    return np.array(out)


def _data(seed=0, b=6):
    rng = np.random.default_rng(seed)
    return rng.integers(0, C, size=b), rng.uniform(-1, 1, size=(b, C))  # cosine logits


def test_margins():
    m = ldam_margins(COUNTS, 0.5)
    np.testing.assert_allclose(m, ref_margins(COUNTS, 0.5))
    assert m.max() == pytest.approx(0.5) and m[-1] == pytest.approx(0.5)
    np.testing.assert_allclose(m[0] / m[1], (100 / 400) ** 0.25)
    np.testing.assert_allclose(ldam_margins([10, 0], 0.3), [0.3 / 10**0.25, 0.3])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_reference(dtype):
    labels, z = _data()
    weights = [0.5, 1.0, 1.5, 2.0]
    loss = LDAMLoss(COUNTS, class_weights=weights, dtype=dtype)
    expected = ref_ldam(labels, z, COUNTS, w=weights)
    tol = 1e-5 if dtype == "float32" else 1e-10
    for y_true in [labels, labels[:, None], np.eye(C)[labels]]:
        np.testing.assert_allclose(loss(y_true, z.astype(dtype)), expected.mean(), rtol=tol)
    sw = np.array([1.0, 0.0, 2.0, 1.0, 0.5, 1.0])
    np.testing.assert_allclose(
        loss(labels, z.astype(dtype), sample_weight=sw), (sw * expected).mean(), rtol=tol
    )
    unweighted = LDAMLoss(COUNTS, max_margin=0.3, scale=10.0, dtype=dtype)
    np.testing.assert_allclose(
        unweighted(labels, z.astype(dtype)),
        ref_ldam(labels, z, COUNTS, 0.3, 10.0).mean(),
        rtol=tol,
    )


def test_tiny_margin_unit_scale_is_softmax_cross_entropy():
    labels, z = _data(1)
    loss = LDAMLoss(COUNTS, max_margin=1e-12, scale=1.0, dtype="float64")
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")
    np.testing.assert_allclose(loss(labels, z), ce(labels, z), rtol=1e-9)


def test_extreme_logits_finite():
    z = tf.constant([[100.0, -100.0, 0.0, 0.0], [-100.0, 100.0, 0.0, 0.0]])
    with tf.GradientTape() as tape:
        tape.watch(z)
        value = LDAMLoss(COUNTS)([0, 0], z)
    grad = tape.gradient(value, z).numpy()
    assert np.isfinite(float(value)) and np.all(np.isfinite(grad))
    # Second row: -log softmax(30 (z - Delta e_0))_0 = 30 * (200 + Delta_0) (+ tiny).
    np.testing.assert_allclose(float(value), 0.5 * 30 * (200 + ldam_margins(COUNTS)[0]), rtol=1e-5)


def test_drw_schedule():
    np.testing.assert_array_equal(drw_class_weights(COUNTS, 0, 160), np.ones(C))
    np.testing.assert_array_equal(drw_class_weights(COUNTS, 159, 160), np.ones(C))
    np.testing.assert_allclose(
        drw_class_weights(COUNTS, 160, 160), class_balanced_weights(COUNTS, 0.9999)
    )
    np.testing.assert_allclose(
        drw_class_weights(COUNTS, 5, 2, beta=0.99), class_balanced_weights(COUNTS, 0.99)
    )


def test_compiled_function_sees_new_weights_without_retracing():
    labels, z = _data(2)
    loss = LDAMLoss(COUNTS)
    z = tf.constant(z, tf.float32)
    fn = tf.function(lambda y, p: loss(y, p), jit_compile=True)
    before = float(fn(labels, z))
    np.testing.assert_allclose(before, ref_ldam(labels, z.numpy(), COUNTS).mean(), rtol=1e-5)
    new = class_balanced_weights(COUNTS, 0.9999)
    loss.set_class_weights(new)
    after = float(fn(labels, z))
    np.testing.assert_allclose(after, ref_ldam(labels, z.numpy(), COUNTS, w=new).mean(), rtol=1e-5)
    assert fn.experimental_get_tracing_count() == 1


def test_deferred_reweighting_callback_in_fit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = rng.integers(0, C, size=16)
    loss = LDAMLoss(COUNTS)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(C)])
    model.compile(optimizer="sgd", loss=loss)
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(loss.class_weights_variable.numpy().copy())
    )
    model.fit(x, y, epochs=3, verbose=0, callbacks=[DeferredReweighting(loss, 2), record])
    np.testing.assert_array_equal(seen[0], np.ones(C))
    np.testing.assert_array_equal(seen[1], np.ones(C))
    np.testing.assert_allclose(seen[2], class_balanced_weights(COUNTS, 0.9999), rtol=1e-6)
    # The compiled test step reads the variable too: doubling weights doubles the loss.
    base = model.evaluate(x, y, verbose=0)
    loss.set_class_weights(2.0 * seen[2])
    np.testing.assert_allclose(model.evaluate(x, y, verbose=0), 2.0 * base, rtol=1e-5)
    # loss=None uses the model's compiled loss.
    model.fit(x, y, epochs=1, verbose=0, callbacks=[DeferredReweighting(start_epoch=5)])
    np.testing.assert_array_equal(loss.class_weights_variable.numpy(), np.ones(C))


def test_bad_arguments():
    with pytest.raises(ValueError, match="class_counts"):
        LDAMLoss([5, -1])
    with pytest.raises(ValueError, match="max_margin"):
        LDAMLoss(COUNTS, max_margin=0.0)
    with pytest.raises(ValueError, match="scale"):
        LDAMLoss(COUNTS, scale=-1.0)
    with pytest.raises(ValueError, match="class_weights"):
        LDAMLoss(COUNTS, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="class_counts has 4 classes but y_pred has 5"):
        LDAMLoss(COUNTS)([0, 1], np.zeros((2, 5), "float32"))
    with pytest.raises(ValueError, match="start_epoch"):
        DeferredReweighting(start_epoch=-1)
    with pytest.raises(ValueError, match="beta"):
        DeferredReweighting(start_epoch=1, beta=1.0)
    with pytest.raises(ValueError, match="set_class_weights"):
        DeferredReweighting(keras.losses.MeanSquaredError(), 1).on_epoch_begin(0)


def test_serialization():
    loss = LDAMLoss(COUNTS, max_margin=0.4, scale=16.0, class_weights=[1, 2, 3, 4])
    revived = run_serialization_test(loss)
    np.testing.assert_array_equal(revived.class_weights_variable.numpy(), [1, 2, 3, 4])
    run_serialization_test(LDAMLoss(COUNTS))
