"""Average precision / mAP against scikit-learn and a hand-written Sum (R_n - R_{n-1}) P_n."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from keras_fgvc.metrics import (
    binary_average_precision,
    mean_average_precision,
    per_class_average_precision,
    precision_recall_curve,
)


def _ap_reference(targets, scores):
    """AP from the definition: loop over distinct thresholds, highest first."""
    positives = targets.sum()
    ap, previous_recall = 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        detected = scores >= t
        tp = np.sum(detected & targets)
        recall, precision = tp / positives, tp / detected.sum()
        ap += (recall - previous_recall) * precision
        previous_recall = recall
    return ap


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_binary_matches_sklearn_and_definition(seed, dtype):
    rng = np.random.default_rng(seed)
    targets = rng.random(60) < 0.3
    targets[0] = True
    scores = rng.random(60).astype(dtype)
    if seed % 2:  # heavy ties
        scores = np.round(scores * 4).astype(dtype) / 4
    got = binary_average_precision(targets, scores)
    np.testing.assert_allclose(got, average_precision_score(targets, scores), rtol=1e-12)
    np.testing.assert_allclose(got, _ap_reference(targets, scores), rtol=1e-12)


def test_degenerate_cases():
    assert binary_average_precision([1, 0, 1], [0.9, 0.1, 0.8]) == 1.0  # perfect ranking
    assert binary_average_precision([1, 1], [0.3, 0.3]) == 1.0  # all positives
    # All scores tied: AP = the positive rate (one threshold, recall 1).
    np.testing.assert_allclose(binary_average_precision([1, 0, 0, 0], [0.5] * 4), 0.25)
    # Worst ranking: positive last.
    np.testing.assert_allclose(binary_average_precision([0, 0, 1], [0.9, 0.8, 0.1]), 1 / 3)
    assert np.isnan(binary_average_precision([0, 0], [0.1, 0.2]))


@pytest.mark.parametrize("seed", range(3))
def test_per_class_and_map_over_foreground(seed):
    rng = np.random.default_rng(seed)
    n, num_classes = 200, 6
    labels = rng.integers(0, num_classes, n)
    scores = rng.dirichlet(np.ones(num_classes), n).astype("float32")
    scores[np.arange(n), labels] += 0.3 * rng.random(n).astype("float32")
    ap = per_class_average_precision(scores, labels)
    assert ap.shape == (num_classes - 1,)
    expected = [average_precision_score(labels == c, scores[:, c]) for c in range(1, num_classes)]
    np.testing.assert_allclose(ap, expected, rtol=1e-10)
    np.testing.assert_allclose(mean_average_precision(scores, labels), np.mean(expected))
    # Without a background every class counts.
    all_ap = per_class_average_precision(scores, labels, has_background=False)
    np.testing.assert_allclose(all_ap[1:], ap)
    np.testing.assert_allclose(all_ap[0], average_precision_score(labels == 0, scores[:, 0]))


def test_class_without_positives_is_left_out_with_warning():
    rng = np.random.default_rng(0)
    labels = np.array([0, 1, 1, 0, 3, 3, 0, 1])  # class 2 has no positive
    scores = rng.random((8, 4))
    ap = per_class_average_precision(scores, labels)
    assert np.isnan(ap[1]) and not np.any(np.isnan(ap[[0, 2]]))
    with pytest.warns(RuntimeWarning, match=r"classes \[2\]"):
        m = mean_average_precision(scores, labels)
    np.testing.assert_allclose(m, np.mean(ap[[0, 2]]))
    with pytest.warns(RuntimeWarning):
        assert np.isnan(mean_average_precision(scores, np.zeros(8, int)))


def test_precision_recall_curve_matches_sklearn():
    from sklearn.metrics import precision_recall_curve as sklearn_curve

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        scores = rng.integers(0, 20, 200).astype(dtype) / 20  # many ties
        targets = rng.random(200) < 0.2
        precision, recall = precision_recall_curve(targets, scores)
        ref_p, ref_r, _ = sklearn_curve(targets, scores)
        # sklearn lists thresholds ascending and ends with (recall 0, precision 1).
        np.testing.assert_allclose(precision, ref_p[::-1])
        np.testing.assert_allclose(recall, ref_r[::-1])
    precision, recall = precision_recall_curve(np.array([True, False]), np.array([0.5, 0.5]))
    np.testing.assert_allclose(precision, [1.0, 0.5])
    np.testing.assert_allclose(recall, [0.0, 1.0])
