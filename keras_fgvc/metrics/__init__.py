"""keras_fgvc.metrics: NumPy evaluation metrics (not `keras.metrics`).

Label contract: for background tasks label 0 is the background and 1..N the
rare (foreground) classes; scores are [n, N + 1] with column 0 = background,
and every metric is over the N foreground classes only (`has_background=True`,
the default). Pass `has_background=False` to evaluate all C classes.

Classes with no positive example in `labels`: their AP, precision, recall and
F1 are undefined; they are NaN in per-class arrays (None in the `evaluate_*`
dicts) and are left out of every mean, with a `RuntimeWarning` naming them.
A class with positives but no correct prediction scores 0 (sklearn's
`zero_division=0`). Bad input (shape mismatch, labels out of range, NaN
scores) raises ValueError.
"""

from keras_fgvc.metrics.average_precision import (
    binary_average_precision,
    mean_average_precision,
    per_class_average_precision,
    precision_recall_curve,
)
from keras_fgvc.metrics.evaluate import evaluate_background_task, evaluate_classification
from keras_fgvc.metrics.f1 import (
    best_f1_thresholds,
    f1_at_thresholds,
    macro_f1,
    macro_f1_at_best_thresholds,
    macro_precision,
    macro_recall,
    per_class_precision_recall_f1,
)
from keras_fgvc.metrics.head_tail import head_tail_breakdown
from keras_fgvc.metrics.topk import top_k_accuracy, top_k_correct, top_k_error

__all__ = [
    "best_f1_thresholds",
    "binary_average_precision",
    "evaluate_background_task",
    "evaluate_classification",
    "f1_at_thresholds",
    "head_tail_breakdown",
    "macro_f1",
    "macro_f1_at_best_thresholds",
    "macro_precision",
    "macro_recall",
    "mean_average_precision",
    "per_class_average_precision",
    "per_class_precision_recall_f1",
    "precision_recall_curve",
    "top_k_accuracy",
    "top_k_correct",
    "top_k_error",
]
