"""Precision / recall / F1 (argmax and best thresholds) against scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from keras_fgvc.metrics import (
    best_f1_thresholds,
    f1_at_thresholds,
    macro_f1,
    macro_f1_at_best_thresholds,
    macro_precision,
    macro_recall,
    per_class_precision_recall_f1,
)


def _random_task(seed, n=300, num_classes=7, background_rate=0.6):
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random(n) < background_rate, 0, rng.integers(1, num_classes, n))
    logits = rng.normal(size=(n, num_classes))
    logits[np.arange(n), labels] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs.astype("float32"), labels


@pytest.mark.parametrize("seed", range(4))
def test_argmax_metrics_match_sklearn(seed):
    probs, labels = _random_task(seed)
    predicted = probs.argmax(1)  # argmax over N + 1, background included
    fg = list(range(1, probs.shape[1]))
    kw = dict(labels=fg, zero_division=0)
    p, r, f = per_class_precision_recall_f1(probs, labels)
    np.testing.assert_allclose(p, precision_score(labels, predicted, average=None, **kw))
    np.testing.assert_allclose(r, recall_score(labels, predicted, average=None, **kw))
    np.testing.assert_allclose(f, f1_score(labels, predicted, average=None, **kw))
    np.testing.assert_allclose(
        macro_f1(probs, labels), f1_score(labels, predicted, average="macro", **kw)
    )
    np.testing.assert_allclose(
        macro_precision(probs, labels), precision_score(labels, predicted, average="macro", **kw)
    )
    np.testing.assert_allclose(
        macro_recall(probs, labels), recall_score(labels, predicted, average="macro", **kw)
    )


def test_argmax_f1_background_wins_gives_zero_and_missing_class_is_excluded():
    labels = np.array([1, 1, 2, 0, 0])
    probs = np.array(
        [
            [0.6, 0.3, 0.1, 0.0],
            [0.2, 0.7, 0.1, 0.0],
            [0.5, 0.1, 0.4, 0.0],
            [0.9, 0, 0.1, 0],
            [0.1, 0, 0, 0.9],
        ]
    )
    p, r, f = per_class_precision_recall_f1(probs, labels)
    # class 1: tp=1, fn=1, fp=0; class 2: background wins -> tp=0; class 3: no positives.
    np.testing.assert_allclose(p[:2], [1.0, 0.0])
    np.testing.assert_allclose(r[:2], [0.5, 0.0])
    np.testing.assert_allclose(f[:2], [2 / 3, 0.0])
    assert np.isnan(p[2]) and np.isnan(r[2]) and np.isnan(f[2])
    with pytest.warns(RuntimeWarning, match=r"classes \[3\]"):
        np.testing.assert_allclose(macro_f1(probs, labels), 1 / 3)


def _best_f1_reference(targets, scores):
    """Max over every distinct score t of F1 = 2tp / (2tp + fp + fn) of `scores >= t`."""
    best = 0.0
    for t in np.unique(scores):
        detected = scores >= t
        tp, fp = np.sum(detected & targets), np.sum(detected & ~targets)
        fn = np.sum(~detected & targets)
        best = max(best, 2 * tp / (2 * tp + fp + fn))
    return best


@pytest.mark.parametrize("seed", range(3))
def test_best_thresholds(seed):
    probs, labels = _random_task(seed, n=150, num_classes=5)
    if seed == 2:
        probs = (np.round(probs * 10) / 10).astype("float32")  # ties
    thresholds, best = best_f1_thresholds(probs, labels, return_f1=True)
    assert thresholds.shape == (4,) and thresholds.dtype == np.float32
    for i, c in enumerate(range(1, 5)):
        expected = _best_f1_reference(labels == c, probs[:, c])
        np.testing.assert_allclose(best[i], expected, rtol=1e-12)
        # The returned threshold reproduces that F1 with score >= threshold.
        np.testing.assert_allclose(
            f1_score(labels == c, probs[:, c] >= thresholds[i]), expected, rtol=1e-12
        )
    np.testing.assert_allclose(f1_at_thresholds(probs, labels, thresholds)[2], best, rtol=1e-12)
    np.testing.assert_allclose(macro_f1_at_best_thresholds(probs, labels), best.mean())
    np.testing.assert_array_equal(best_f1_thresholds(probs, labels), thresholds)


def test_best_threshold_degenerate():
    labels = np.array([0, 1, 0, 0])
    probs = np.array(
        [[0.9, 0.1, 0.0], [0.3, 0.7, 0.0], [0.2, 0.7, 0.1], [0.5, 0.2, 0.3]], "float32"
    )
    thresholds, best = best_f1_thresholds(probs, labels, return_f1=True)
    # Class 1: the tie at 0.7 enters together (tp=1, fp=1) -> F1 = 2/3 at threshold 0.7.
    np.testing.assert_allclose(best[0], 2 / 3)
    assert thresholds[0] == np.float32(0.7)
    # Class 2 has no positive: threshold just above its max (detects nothing), F1 NaN.
    assert np.isnan(best[1])
    assert thresholds[1] > np.float32(0.3) and thresholds[1] == np.nextafter(
        np.float32(0.3), np.float32(1)
    )
    assert not np.any(probs[:, 2] >= thresholds[1])


def test_f1_at_thresholds_bad_input():
    probs, labels = _random_task(0, n=20, num_classes=4)
    with pytest.raises(ValueError, match="thresholds"):
        f1_at_thresholds(probs, labels, [0.5, 0.5])
    with pytest.raises(ValueError, match="thresholds"):
        f1_at_thresholds(probs, labels, [0.5, np.nan, 0.5])
