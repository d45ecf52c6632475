"""Triplet loss (Eq. 2.1) and its in-batch mining against a brute-force loop."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.losses import TripletLoss, local_positive_mask, triplet_loss
from keras_fgvc.losses.mining import pairwise_squared_distances
from tests.test_case import run_serialization_test


def brute_force(labels, emb, margin=0.2, fraction=0.6, hard_negative_for=None, naive=False,
                kind=None):
    """Loop over every (anchor, positive, negative) triplet, as Sec. 2.3.2-2.3.3 and 2.4.3.

    Returns (mean hinge over kept triplets, per-anchor hinge sums, count). Hard mining
    keeps the violating triplets; naive keeps all of them (max(0, hinge) each). `kind`:
    only the triplets whose negative is human-marked for the anchor's class ("human"),
    or only the others ("other"); None: all.
    """
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    b = len(labels)
    dist = np.array([[np.sum((e[i] - e[j]) ** 2) for j in range(b)] for i in range(b)])
    hn = hard_negative_for if hard_negative_for is not None else [-1] * b
    per_anchor = np.zeros(b)
    count = 0
    for i in range(b):
        if labels[i] < 0:
            continue
        same = [j for j in range(b) if j != i and labels[j] == labels[i]]
        if not same:
            continue
        # Nearest `fraction` of the same-class samples, round half up, at least 1.
        k = int(math.floor(np.float32(fraction) * np.float32(len(same)) + np.float32(0.5)))
        k = min(max(k, 1), len(same))
        positives = sorted(same, key=lambda j: (dist[i, j], j))[:k]
        negatives = [
            n
            for n in range(b)
            if n != i and ((labels[n] >= 0 and labels[n] != labels[i]) or hn[n] == labels[i])
        ]
        if kind is not None:
            negatives = [n for n in negatives if (hn[n] == labels[i]) == (kind == "human")]
        for j in positives:
            for n in negatives:
                h = dist[i, j] - dist[i, n] + margin
                if naive:  # every triplet counts, non-violating ones add 0
                    per_anchor[i] += max(h, 0.0)
                    count += 1
                elif h > 0:  # only triplets that violate the margin
                    per_anchor[i] += h
                    count += 1
    mean = per_anchor.sum() / count if count else 0.0
    return mean, per_anchor, count


def balanced_reference(labels, emb, margin=0.2, fraction=0.6, hard_negative_for=None,
                       naive=False):
    """Sec. 2.4.3 ("same number of human-labeled hard negatives as the hard negatives from
    other categories"): (mean, per-example loss) with each kind's mean weighing half, or all
    when the batch keeps one kind only."""
    parts = [brute_force(labels, emb, margin, fraction, hard_negative_for, naive, kind)
             for kind in ("human", "other")]
    kept = [(mean, per_anchor / count) for mean, per_anchor, count in parts if count]
    if not kept:
        return 0.0, np.zeros(len(labels))
    mean = sum(m for m, _ in kept) / len(kept)
    return mean, len(labels) * sum(p for _, p in kept) / len(kept)


def _batch(seed, b=12, classes=3, dim=3, unlabeled=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=b)
    emb = rng.normal(size=(b, dim))
    hn = -np.ones(b, dtype=int)
    if unlabeled:
        labels[:unlabeled] = -1
        hn[:unlabeled] = rng.integers(0, classes, size=unlabeled)
    return labels, emb, hn


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    margin = [0.2, 0.5, 1.0][seed % 3]
    fraction = [0.6, 0.3, 1.0, 0.5][seed % 4]
    labels, emb, _ = _batch(seed, b=int(rng.integers(6, 14)), classes=int(rng.integers(2, 5)))
    mean, per_anchor, count = brute_force(labels, emb, margin, fraction)
    assert count > 0
    loss = TripletLoss(margin=margin, positive_fraction=fraction, dtype="float64")
    per_example = loss.call(labels, emb).numpy()
    np.testing.assert_allclose(per_example, len(labels) * per_anchor / count, rtol=1e-9)
    np.testing.assert_allclose(loss(labels, emb), mean, rtol=1e-9)
    loss32 = TripletLoss(margin=margin, positive_fraction=fraction)
    np.testing.assert_allclose(loss32(labels, emb.astype("float32")), mean, rtol=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_human_labelled_hard_negatives_match_brute_force(seed):
    labels, emb, hn = _batch(10 + seed, b=12, classes=3, unlabeled=4)
    mean, per_example = balanced_reference(labels, emb, 0.3, 0.6, hn)
    plain, _, count = brute_force(labels, emb, 0.3, 0.6, hn)
    without, _, count_without = brute_force(labels, emb, 0.3, 0.6)
    assert count > count_without  # the marked samples add triplets
    assert abs(mean - plain) > 1e-3  # the balance is not the plain mean over all kept
    y_true = np.stack([labels, hn], axis=1)
    loss = TripletLoss(margin=0.3, dtype="float64")
    np.testing.assert_allclose(loss(y_true, emb), mean, rtol=1e-9)
    np.testing.assert_allclose(loss.call(y_true, emb).numpy(), per_example, rtol=1e-9)
    # Without the marks the unlabelled rows take no part at all.
    np.testing.assert_allclose(loss(labels, emb), without, rtol=1e-9)


def test_human_and_category_negatives_weigh_half_each_whatever_their_counts():
    # One anchor pair of class 0; two class-1 negatives and one human-marked (label -1,
    # marked for class 0). Margin 4.5 > every distance: all 2 x (2 + 1) triplets violate.
    labels = np.array([0, 0, 1, 1, -1])
    hn = np.array([-1, -1, -1, -1, 0])
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-0.1, 1.0], [1.0, 0.05]])
    y_true = np.stack([labels, hn], axis=1)
    loss = TripletLoss(margin=4.5, positive_fraction=1.0, dtype="float64")
    human, _, n_human = brute_force(labels, emb, 4.5, 1.0, hn, kind="human")
    other, _, n_other = brute_force(labels, emb, 4.5, 1.0, hn, kind="other")
    # class-0 anchors: 2 x 1 human + 2 x 2 category; class-1 anchors: 2 x 2 category.
    assert (n_human, n_other) == (2, 8)
    np.testing.assert_allclose(loss(y_true, emb), 0.5 * human + 0.5 * other, rtol=1e-12)
    # Degenerate: the human row far away -> its triplets satisfy a small margin, the loss is
    # the mean over the category triplets alone (not half of it).
    far = emb.copy()
    far[4] = [-1.0, -0.05]
    far[3] = [0.95, 0.02]  # a class-1 row among class 0: category triplets violate
    small = TripletLoss(margin=0.2, positive_fraction=1.0, dtype="float64")
    only_other, _, count = brute_force(labels, far, 0.2, 1.0, hn, kind="other")
    assert brute_force(labels, far, 0.2, 1.0, hn, kind="human")[2] == 0 and count > 0
    np.testing.assert_allclose(small(y_true, far), only_other, rtol=1e-12)
    # No marked row at all: exactly the loss without hard negatives.
    none = np.stack([labels[:4], -np.ones(4, int)], axis=1)
    np.testing.assert_allclose(small(none, emb[:4]), small(labels[:4], emb[:4]), rtol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_naive_mining_averages_over_all_triplets(seed):
    """Table 2.1 Triplet-Naive: mean of max(0, Eq. 2.1) over every in-batch triplet."""
    margin, fraction = [(0.2, 1.0), (0.5, 0.6), (1.0, 1.0), (0.3, 0.5)][seed]
    labels, emb, hn = _batch(60 + seed, b=10, classes=3, unlabeled=2 * (seed % 2))
    y_true = np.stack([labels, hn], axis=1)
    _, _, count = brute_force(labels, emb, margin, fraction, hn, naive=True)
    _, _, hard_count = brute_force(labels, emb, margin, fraction, hn)
    assert count > hard_count > 0  # some triplets do not violate the margin
    mean, per_example = balanced_reference(labels, emb, margin, fraction, hn, naive=True)
    hard_mean, _ = balanced_reference(labels, emb, margin, fraction, hn)
    assert mean < hard_mean  # ... and dilute the average
    loss = TripletLoss(margin=margin, positive_fraction=fraction, mining="naive",
                       dtype="float64")
    np.testing.assert_allclose(loss.call(y_true, emb).numpy(), per_example, rtol=1e-9)
    np.testing.assert_allclose(loss(y_true, emb), mean, rtol=1e-9)
    np.testing.assert_allclose(
        triplet_loss(labels, emb.astype("float32"), margin, fraction, hn, mining="naive").numpy(),
        per_example, rtol=1e-4, atol=1e-6)
    hard = TripletLoss(margin=margin, positive_fraction=fraction, dtype="float64")
    np.testing.assert_allclose(hard(y_true, emb), hard_mean, rtol=1e-9)


def test_naive_mining_counts_satisfied_triplets_as_zero():
    # Two well separated classes: every triplet satisfies the margin -> hinge 0, no NaN.
    labels = np.array([0, 0, 1, 1])
    emb = np.array([[1.0, 0.01], [1.0, -0.01], [-1.0, 0.01], [-1.0, -0.01]])
    loss = TripletLoss(margin=0.2, positive_fraction=1.0, mining="naive", dtype="float64")
    assert float(loss(labels, emb)) == 0.0
    # Margin 4.5 > max distance 4: every one of the 4 * 1 * 2 triplets violates; naive == hard.
    mean, _, count = brute_force(labels, emb, 4.5, 1.0, naive=True)
    assert count == 8
    for mining in ("naive", "hard"):
        value = TripletLoss(margin=4.5, positive_fraction=1.0, mining=mining, dtype="float64")
        np.testing.assert_allclose(value(labels, emb), mean, rtol=1e-9)


def test_sample_weight_weights_anchors():
    labels, emb, _ = _batch(20)
    _, per_anchor, count = brute_force(labels, emb)
    sw = np.random.default_rng(0).uniform(size=len(labels))
    loss = TripletLoss(dtype="float64")
    expected = np.sum(sw * per_anchor) / count
    np.testing.assert_allclose(loss(labels[:, None], emb, sample_weight=sw), expected, rtol=1e-9)


def test_local_positive_counts_and_nearest():
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2])
    emb = np.arange(9, dtype="float64")[:, None] * np.array([[1.0, 0.0]])
    dist = pairwise_squared_distances(keras.ops.convert_to_tensor(emb))
    for fraction, expected_k in [(0.6, 3), (1.0, 5), (0.1, 1), (0.5, 3)]:
        mask = local_positive_mask(labels, dist, fraction).numpy()
        assert mask[:6].sum(axis=1).tolist() == [expected_k] * 6  # n = 5 same-class mates
        assert mask[6].sum() == 1 and mask[7].sum() == 1  # n = 1: keep it
        assert mask[8].sum() == 0  # no same-class sample
    mask = local_positive_mask(labels, dist, 0.6).numpy()
    assert np.flatnonzero(mask[0]).tolist() == [1, 2, 3]  # the three nearest on the line
    assert np.flatnonzero(mask[3]).tolist() == [1, 2, 4]  # ties (1 vs 5) go to the lower index


@pytest.mark.parametrize(
    "labels,emb",
    [
        (np.zeros(6, int), np.random.default_rng(0).normal(size=(6, 4))),  # no negatives
        (np.arange(6), np.random.default_rng(1).normal(size=(6, 4))),  # no positives
        (-np.ones(6, int), np.random.default_rng(2).normal(size=(6, 4))),  # no labels
        (  # margin already satisfied everywhere
            np.array([0, 0, 0, 1, 1, 1]),
            np.array([[1, 0.01], [1, 0], [1, -0.01], [-1, 0.01], [-1, 0], [-1, -0.01]]),
        ),
        (np.zeros(4, int), np.zeros((4, 3))),  # all-zero embeddings
    ],
)
def test_no_valid_triplet_gives_zero_with_finite_gradients(labels, emb):
    emb = tf.constant(emb, tf.float32)
    loss = TripletLoss()
    with tf.GradientTape() as tape:
        tape.watch(emb)
        value = loss(labels, emb)
    grad = tape.gradient(value, emb)
    assert float(value) == 0.0
    assert np.all(np.isfinite(grad.numpy())) and np.all(grad.numpy() == 0.0)


def test_gradients_match_finite_differences():
    labels, emb, _ = _batch(30, b=8, classes=2)
    loss = TripletLoss(margin=0.5, dtype="float64")
    x = tf.constant(emb)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss(labels, x)
    grad = tape.gradient(value, x).numpy()
    eps = 1e-6
    num = np.zeros_like(emb)
    for idx in np.ndindex(*emb.shape):
        plus, minus = emb.copy(), emb.copy()
        plus[idx] += eps
        minus[idx] -= eps
        num[idx] = (float(loss(labels, plus)) - float(loss(labels, minus))) / (2 * eps)
    np.testing.assert_allclose(grad, num, rtol=1e-4, atol=1e-7)


def test_bad_arguments():
    for bad in [0.0, 1.5, -0.2, "a"]:
        with pytest.raises(ValueError, match="positive_fraction"):
            TripletLoss(positive_fraction=bad)
    for bad in [-0.1, float("inf"), None]:
        with pytest.raises(ValueError, match="margin"):
            TripletLoss(margin=bad)
    with pytest.raises(ValueError, match="'random'"):
        TripletLoss(mining="random")
    with pytest.raises(ValueError, match=r"got shape \(4, 3\)"):
        TripletLoss()(np.zeros((4, 3)), np.ones((4, 2)))


def test_jit_compile_matches_eager():
    labels, emb, hn = _batch(40, unlabeled=3)
    y_true = np.stack([labels, hn], axis=1).astype("float32")
    emb = emb.astype("float32")
    loss = TripletLoss()
    fn = tf.function(lambda y, p: loss(y, p), jit_compile=True)
    np.testing.assert_allclose(
        fn(tf.constant(y_true), tf.constant(emb)), loss(y_true, emb), rtol=1e-5
    )


def test_fit_with_jit_compile():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.integers(0, 3, size=32)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    model.compile(optimizer="sgd", loss=TripletLoss(), jit_compile=True)
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][0] > 0.0


def test_pure_function_and_serialization():
    labels, emb, _ = _batch(50)
    mean, _, _ = brute_force(labels, emb, 0.2, 0.6)
    np.testing.assert_allclose(np.mean(triplet_loss(labels, emb)), mean, rtol=1e-9)
    run_serialization_test(TripletLoss(margin=0.3, positive_fraction=0.5, name="trip"))
    naive = TripletLoss(mining="naive")
    assert naive.get_config()["mining"] == "naive"
    assert TripletLoss.from_config(naive.get_config()).mining == "naive"
    run_serialization_test(naive)
