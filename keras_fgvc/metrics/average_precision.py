"""Average precision (AP) per class and mean AP over the foreground classes."""

import numpy as np

from keras_fgvc.metrics._validation import (
    check_scores_and_labels,
    evaluated_classes,
    nanmean_with_warning,
)


def _tie_groups(targets, scores):
    """Cumulative (tp, fp) at each distinct score, highest score first.

    Returns (tp, fp, thresholds): counts of examples with score >= threshold.
    """
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    sorted_targets = targets[order]
    # Last index of each run of equal scores: ties enter together (as sklearn).
    ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(scores) - 1]
    tp = np.cumsum(sorted_targets)[ends]
    fp = (ends + 1) - tp
    return tp, fp, sorted_scores[ends]


def precision_recall_curve(targets, scores):
    """Precision and recall of one binary problem at every distinct score, highest first.

    Starts at (recall 0, precision 1), as `sklearn.metrics.precision_recall_curve` read
    backwards; ties enter together (the thresholds `binary_average_precision` sums over).

    Returns:
        (precision, recall): float arrays of equal length.
    """
    targets, scores = np.asarray(targets).astype(bool), np.asarray(scores)
    if not len(scores):
        return np.array([1.0]), np.array([0.0])
    tp, fp, _ = _tie_groups(targets, scores)
    return np.r_[1.0, tp / (tp + fp)], np.r_[0.0, tp / max(int(targets.sum()), 1)]


def binary_average_precision(targets, scores):
    """AP of one binary problem: sum_n (R_n - R_{n-1}) P_n over distinct thresholds.

    Same definition and tie handling as `sklearn.metrics.average_precision_score`
    (no interpolation; examples with equal scores enter at the same threshold).

    Args:
        targets: bool/0-1 array [n].
        scores: float array [n].

    Returns:
        AP as a float; NaN when `targets` has no positive.
    """
    targets = np.asarray(targets).astype(bool)
    scores = np.asarray(scores, np.float64)
    num_positives = int(targets.sum())
    if num_positives == 0:
        return float("nan")
    tp, fp, _ = _tie_groups(targets, scores)
    precision = tp / (tp + fp)
    recall = tp / num_positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def per_class_average_precision(scores, labels, has_background=True):
    """One-vs-rest AP of each evaluated class.

    Args:
        scores: [n, C] scores or probabilities (column c = class c).
        labels: int [n] in [0, C).
        has_background: column/label 0 is the background and is not
            evaluated (the classes are 1..C-1); False evaluates all C.

    Returns:
        float64 array [C - 1] (or [C]); NaN for a class with no positive in
        `labels` (AP is undefined there).
    """
    scores, labels = check_scores_and_labels(scores, labels, has_background)
    classes = evaluated_classes(scores.shape[1], has_background)
    return np.array([binary_average_precision(labels == c, scores[:, c]) for c in classes])


def mean_average_precision(scores, labels, has_background=True):
    """mAP: mean of `per_class_average_precision` over the evaluated classes.

    Classes without a positive example in `labels` are left out of the mean,
    with a `RuntimeWarning` naming them (NaN if none is left).
    """
    ap = per_class_average_precision(scores, labels, has_background)
    classes = evaluated_classes(np.shape(scores)[1], has_background)
    return nanmean_with_warning(ap, classes, "mean_average_precision")
