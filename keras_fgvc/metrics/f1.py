"""Precision, recall and F1 over the foreground classes: from argmax and at best thresholds."""

import numpy as np

from keras_fgvc.metrics._validation import (
    check_scores_and_labels,
    evaluated_classes,
    nanmean_with_warning,
)
from keras_fgvc.metrics.average_precision import _tie_groups


def _divide(numerator, denominator):
    """numerator / denominator with 0 where the denominator is 0 (sklearn zero_division=0)."""
    numerator = np.asarray(numerator, np.float64)
    denominator = np.asarray(denominator, np.float64)
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _precision_recall_f1(tp, fp, fn):
    precision = _divide(tp, tp + fp)
    recall = _divide(tp, tp + fn)
    f1 = _divide(2 * tp, 2 * tp + fp + fn)
    undefined = (tp + fn) == 0  # no positive example: left undefined (NaN)
    for values in (precision, recall, f1):
        values[undefined] = np.nan
    return precision, recall, f1


def per_class_precision_recall_f1(scores, labels, has_background=True):
    """Per-class precision, recall and F1 of argmax predictions.

    The predicted class is the argmax over all C columns, background
    included (as the background-splitting authors' evaluation); each evaluated
    class is then scored one-vs-rest. A class with positives but no correct
    prediction gets 0 (sklearn `zero_division=0`); a class with no positive
    in `labels` gets NaN (left out of the macro means, with a warning).

    Args:
        scores: [n, C] scores or probabilities.
        labels: int [n] in [0, C).
        has_background: class 0 is background and not evaluated.

    Returns:
        (precision, recall, f1): float64 arrays over the evaluated classes.
    """
    scores, labels = check_scores_and_labels(scores, labels, has_background)
    classes = evaluated_classes(scores.shape[1], has_background)
    predicted = np.argmax(scores, axis=1)
    num_classes = scores.shape[1]
    correct = np.bincount(labels[predicted == labels], minlength=num_classes)[classes]
    tp = correct
    fp = np.bincount(predicted, minlength=num_classes)[classes] - correct
    fn = np.bincount(labels, minlength=num_classes)[classes] - correct
    return _precision_recall_f1(tp, fp, fn)


def _macro(index, name, scores, labels, has_background):
    values = per_class_precision_recall_f1(scores, labels, has_background)[index]
    classes = evaluated_classes(np.shape(scores)[1], has_background)
    return nanmean_with_warning(values, classes, name)


def macro_precision(scores, labels, has_background=True):
    """Macro precision of argmax predictions over the evaluated classes."""
    return _macro(0, "macro_precision", scores, labels, has_background)


def macro_recall(scores, labels, has_background=True):
    """Macro recall of argmax predictions over the evaluated classes."""
    return _macro(1, "macro_recall", scores, labels, has_background)


def macro_f1(scores, labels, has_background=True):
    """Macro F1 of argmax predictions over the foreground classes (BG splitting's F1).

    Equals `sklearn.metrics.f1_score(labels, argmax, labels=<classes with a
    positive>, average="macro", zero_division=0)`.
    """
    return _macro(2, "macro_f1", scores, labels, has_background)


def best_f1_thresholds(scores, labels, has_background=True, return_f1=False):
    """Per-class score thresholds that maximise one-vs-rest F1 (for export).

    For class c, an example is detected when `scores[:, c] >= threshold[c]`.
    Every distinct score is a candidate; the threshold is the score value
    itself (so the F1 is reproduced exactly with `>=`), the highest one on a
    tie of F1. A class with no positive in `labels` gets a threshold just
    above its highest score (it detects nothing on this data) and F1 NaN.

    Args:
        scores: [n, C] scores or probabilities.
        labels: int [n] in [0, C).
        has_background: class 0 is background and gets no threshold.
        return_f1: also return the best F1 per class.

    Returns:
        thresholds [N] in the scores' float dtype (float32 or float64), or
        (thresholds, best_f1) when `return_f1`.
    """
    scores, labels = check_scores_and_labels(scores, labels, has_background)
    classes = evaluated_classes(scores.shape[1], has_background)
    thresholds = np.zeros(len(classes), scores.dtype)
    best = np.full(len(classes), np.nan)
    for i, c in enumerate(classes):
        targets = labels == c
        column = scores[:, c]
        num_positives = int(targets.sum())
        if num_positives == 0:
            thresholds[i] = np.nextafter(column.max(), np.array(np.inf, column.dtype))
            continue
        tp, fp, values = _tie_groups(targets, column)
        f1 = 2 * tp / (tp + fp + num_positives)  # 2tp / (2tp + fp + fn)
        j = int(np.argmax(f1))
        thresholds[i], best[i] = values[j], f1[j]
    return (thresholds, best) if return_f1 else thresholds


def f1_at_thresholds(scores, labels, thresholds, has_background=True):
    """Per-class one-vs-rest (precision, recall, F1) of `scores[:, c] >= thresholds[c]`.

    Returns:
        (precision, recall, f1): float64 arrays over the evaluated classes;
        NaN for a class with no positive in `labels`.
    """
    scores, labels = check_scores_and_labels(scores, labels, has_background)
    classes = evaluated_classes(scores.shape[1], has_background)
    thresholds = np.asarray(thresholds)
    if thresholds.shape != (len(classes),) or not np.all(np.isfinite(thresholds)):
        raise ValueError(
            f"`thresholds` must be {len(classes)} finite values (one per evaluated class). "
            f"Received shape={thresholds.shape}"
        )
    detected = scores[:, classes] >= thresholds[None, :].astype(scores.dtype)
    positives = labels[:, None] == classes[None, :]
    tp = np.sum(detected & positives, axis=0)
    fp = np.sum(detected & ~positives, axis=0)
    fn = np.sum(~detected & positives, axis=0)
    return _precision_recall_f1(tp, fp, fn)


def macro_f1_at_best_thresholds(scores, labels, has_background=True):
    """Mean over the evaluated classes of the best one-vs-rest F1 (per-class thresholds)."""
    _, best = best_f1_thresholds(scores, labels, has_background, return_f1=True)
    classes = evaluated_classes(np.shape(scores)[1], has_background)
    return nanmean_with_warning(best, classes, "macro_f1_at_best_thresholds")
