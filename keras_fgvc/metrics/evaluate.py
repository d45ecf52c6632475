"""One-call evaluations that return JSON-safe dicts (for metrics.json and TensorBoard)."""

import math

import numpy as np

from keras_fgvc.metrics._validation import check_scores_and_labels, nanmean_with_warning
from keras_fgvc.metrics.average_precision import per_class_average_precision
from keras_fgvc.metrics.f1 import best_f1_thresholds, per_class_precision_recall_f1
from keras_fgvc.metrics.head_tail import head_tail_breakdown
from keras_fgvc.metrics.topk import top_k_accuracy


def _means(classes, **per_class):
    """JSON-safe means of per-class arrays, one warning for the undefined classes."""
    result = {
        name: _json_float(nanmean_with_warning(values, classes, name, warn=False))
        for name, values in per_class.items()
    }
    nanmean_with_warning(next(iter(per_class.values())), classes, "evaluate")
    return result


def _json_float(value):
    value = float(value)
    return None if math.isnan(value) else value


def _json_list(values):
    return [_json_float(v) for v in np.asarray(values, np.float64)]


def evaluate_background_task(probabilities, labels):
    """All background-task metrics over the N foreground classes (label 0 = background).

    Args:
        probabilities: [n, N + 1] scores, column 0 = background.
        labels: int [n] in [0, N].

    Returns:
        dict with scalars "mAP", "macro_f1", "macro_precision", "macro_recall"
        (argmax over N + 1), "macro_f1_best_thresholds", "num_examples",
        "num_foreground_classes", "num_classes_without_positives"; and
        per-class lists (foreground classes 1..N, in order) "average_precision",
        "f1", "precision", "recall", "best_f1", "thresholds". Undefined values
        (a class with no positive) are None and are left out of the means.
    """
    probabilities, labels = check_scores_and_labels(probabilities, labels, has_background=True)
    classes = np.arange(1, probabilities.shape[1])
    ap = per_class_average_precision(probabilities, labels)
    precision, recall, f1 = per_class_precision_recall_f1(probabilities, labels)
    thresholds, best = best_f1_thresholds(probabilities, labels, return_f1=True)
    return {
        "num_examples": int(len(labels)),
        "num_foreground_classes": int(len(classes)),
        "num_classes_without_positives": int(np.isnan(ap).sum()),
        **_means(
            classes,
            mAP=ap,
            macro_f1=f1,
            macro_precision=precision,
            macro_recall=recall,
            macro_f1_best_thresholds=best,
        ),
        "average_precision": _json_list(ap),
        "f1": _json_list(f1),
        "precision": _json_list(precision),
        "recall": _json_list(recall),
        "best_f1": _json_list(best),
        "thresholds": [float(t) for t in thresholds],
    }


def evaluate_classification(probabilities, labels, train_counts=None, head_threshold=100):
    """Classification metrics over all C classes (no background).

    Args:
        probabilities: [n, C] scores.
        labels: int [n] in [0, C).
        train_counts: optional [C] training images per class; adds the head /
            tail breakdown of Table 4.4.
        head_threshold: head/tail boundary in training images (default 100).

    Returns:
        dict with "num_examples", "num_classes", "top1_accuracy",
        "top5_accuracy", "top1_error", "top5_error" (top-5 is top-min(5, C)),
        "mAP", "macro_f1", "macro_precision", "macro_recall" (classes without
        a test example left out), and "head" / "tail" dicts when
        `train_counts` is given.
    """
    probabilities, labels = check_scores_and_labels(probabilities, labels)
    classes = np.arange(probabilities.shape[1])
    breakdown = None  # computed first, so bad `train_counts` fail before any warning
    if train_counts is not None:
        breakdown = head_tail_breakdown(
            probabilities, labels, train_counts, head_threshold=head_threshold
        )
    top1 = top_k_accuracy(probabilities, labels, 1)
    top5 = top_k_accuracy(probabilities, labels, 5)
    ap = per_class_average_precision(probabilities, labels, has_background=False)
    precision, recall, f1 = per_class_precision_recall_f1(
        probabilities, labels, has_background=False
    )
    result = {
        "num_examples": int(len(labels)),
        "num_classes": int(len(classes)),
        "top1_accuracy": top1,
        "top5_accuracy": top5,
        "top1_error": 1.0 - top1,
        "top5_error": 1.0 - top5,
        **_means(classes, mAP=ap, macro_f1=f1, macro_precision=precision, macro_recall=recall),
    }
    if breakdown is not None:
        result["head"] = breakdown["head"]
        result["tail"] = breakdown["tail"]
        result["head_threshold"] = head_threshold
    return result
