"""Triplet + anchor soft-vote classification loss (Eq. 2.3-2.5)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.losses import AnchorTripletLoss, TripletLoss, anchor_triplet_loss
from tests.losses.test_triplet import balanced_reference, brute_force
from tests.test_case import run_serialization_test

N, K, D = 3, 2, 4


def ref_log_probs(f, anchors, gamma=5.0):
    # Eq. 2.3: p_i = sum_j exp(-gamma ||f - u_ij||^2) / sum_l sum_j exp(-gamma ||f - u_lj||^2).
    scores = np.zeros((len(f), N))
    for b in range(len(f)):
        for i in range(N):
            scores[b, i] = sum(
                np.exp(-gamma * np.sum((f[b] - anchors[i, j]) ** 2)) for j in range(K)
            )
    return np.log(scores / scores.sum(1, keepdims=True))


def _batch(seed=0, b=10, unlabeled=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N, size=b)
    emb = rng.normal(size=(b, D))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    anchors = rng.normal(size=(N, K, D)) * 0.5
    hn = -np.ones(b, dtype=int)
    if unlabeled:
        labels[:unlabeled] = -1
        hn[:unlabeled] = rng.integers(0, N, size=unlabeled)
    return labels, hn, emb, ref_log_probs(emb, anchors)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("omega", [0.1, 0.0, 1.0])
def test_matches_reference(dtype, omega):
    labels, _, emb, log_p = _batch(0)
    triplet, _, _ = brute_force(labels, emb, 0.2, 0.6)
    classification = -log_p[np.arange(len(labels)), labels]
    # Eq. 2.5: omega * L_triplet + (1 - omega) * L_classification (Eq. 2.4).
    expected = omega * triplet + (1 - omega) * classification.mean()
    y_pred = np.concatenate([emb, log_p], axis=-1).astype(dtype)
    loss = AnchorTripletLoss(embedding_dim=D, omega=omega, dtype=dtype)
    tol = 1e-5 if dtype == "float32" else 1e-9
    np.testing.assert_allclose(loss(labels, y_pred), expected, rtol=tol)
    sw = np.linspace(0.5, 1.5, len(labels))
    np.testing.assert_allclose(
        loss(labels, y_pred, sample_weight=sw),
        np.mean(sw * keras.ops.convert_to_numpy(loss.call(labels, y_pred))),
        rtol=tol,
    )


def test_equals_two_output_composition():
    labels, _, emb, log_p = _batch(1)
    omega = 0.1
    multi = omega * TripletLoss(dtype="float64")(labels, emb) + (
        1 - omega
    ) * keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")(labels, log_p)
    combined = AnchorTripletLoss(D, omega=omega, dtype="float64")
    y_pred = np.concatenate([emb, log_p], axis=-1)
    np.testing.assert_allclose(combined(labels, y_pred), multi, rtol=1e-10)
    np.testing.assert_allclose(
        np.mean(anchor_triplet_loss(labels, emb, log_p, omega=omega)), multi, rtol=1e-10
    )


def test_hard_negatives_and_unlabelled_rows():
    labels, hn, emb, log_p = _batch(2, b=12, unlabeled=3)
    triplet, _ = balanced_reference(labels, emb, 0.2, 0.6, hn)
    # Eq. 2.4: -log p_C(x) averaged over the labelled images x (9 of the 12 rows); the
    # hard negatives neither add to it nor dilute it.
    labelled = labels >= 0
    classification = -log_p[np.flatnonzero(labelled), labels[labelled]]
    expected = 0.1 * triplet + 0.9 * classification.mean()
    assert labelled.sum() == 9
    y_true = np.stack([labels, hn], axis=1)
    y_pred = np.concatenate([emb, log_p], axis=-1)
    loss = AnchorTripletLoss(D, dtype="float64")
    np.testing.assert_allclose(loss(y_true, y_pred), expected, rtol=1e-9)


def test_bad_arguments():
    for bad in [0, -3, 2.0, True, "4"]:
        with pytest.raises(ValueError, match="embedding_dim"):
            AnchorTripletLoss(bad)
    with pytest.raises(ValueError, match="omega"):
        AnchorTripletLoss(4, omega=1.5)
    with pytest.raises(ValueError, match="last dimension 4"):
        AnchorTripletLoss(4)(np.zeros(3), np.zeros((3, 4)))


def test_jit_compile_and_serialization():
    labels, hn, emb, log_p = _batch(3, unlabeled=2)
    y_true = np.stack([labels, hn], axis=1).astype("float32")
    y_pred = np.concatenate([emb, log_p], axis=-1).astype("float32")
    loss = AnchorTripletLoss(D, omega=0.2, margin=0.3, positive_fraction=0.5)
    fn = tf.function(lambda y, p: loss(y, p), jit_compile=True)
    np.testing.assert_allclose(
        fn(tf.constant(y_true), tf.constant(y_pred)), loss(y_true, y_pred), rtol=1e-5
    )
    run_serialization_test(loss)


def test_fit_with_anchor_soft_vote():
    from keras_fgvc.layers import AnchorSoftVote

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.integers(0, N, size=32)
    inputs = keras.Input((6,))
    emb = keras.layers.UnitNormalization()(keras.layers.Dense(D)(inputs))
    log_p = AnchorSoftVote(num_classes=N, anchors_per_class=K)(emb)
    model = keras.Model(inputs, keras.layers.Concatenate()([emb, log_p]))
    model.compile(optimizer="sgd", loss=AnchorTripletLoss(D), jit_compile=False)
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
