"""Input checks shared by the metrics: clear ValueErrors for bad scores and labels."""

import warnings

import numpy as np


def check_scores_and_labels(scores, labels, has_background=False):
    """Validate `scores` [n, C] and integer `labels` [n] in [0, C).

    Args:
        scores: array-like [n, C] of finite real scores (probabilities, logits).
        labels: array-like [n] of integer class indices.
        has_background: whether column 0 is the background class (then C >= 2).

    Returns:
        (scores, labels): `scores` as a float array (float32 and float64 kept,
        other dtypes become float64) and `labels` as int64.

    Raises:
        ValueError: naming what is wrong (shape, NaN, range, dtype).
    """
    scores = np.asarray(scores)
    if scores.dtype.kind in "OUSM":
        raise ValueError(f"`scores` must be numeric. Received dtype={scores.dtype}")
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)  # ints, bools, float16, bfloat16
    if scores.ndim != 2:
        raise ValueError(f"`scores` must be 2-D [n, num_classes]. Received shape={scores.shape}")
    n, num_classes = scores.shape
    if n == 0:
        raise ValueError("`scores` is empty (0 examples).")
    if num_classes < (2 if has_background else 1):
        raise ValueError(
            "`scores` needs the background column and at least one foreground class "
            f"(num_classes >= 2). Received shape={scores.shape}"
            if has_background
            else f"`scores` has no class column. Received shape={scores.shape}"
        )
    if not np.all(np.isfinite(scores)):
        bad = np.argwhere(~np.isfinite(scores))[0]
        raise ValueError(
            f"`scores` contains NaN or infinite values (first at [{bad[0]}, {bad[1]}]: "
            f"{scores[bad[0], bad[1]]})."
        )
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != (n,):
        raise ValueError(
            f"`labels` must have shape [{n}] to match `scores` {scores.shape}. "
            f"Received shape={labels.shape}"
        )
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise ValueError(f"`labels` must be integer class indices. Received dtype={labels.dtype}")
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError("`labels` must be integer class indices; got non-integer values.")
    labels = labels.astype(np.int64)
    out_of_range = labels[(labels < 0) | (labels >= num_classes)]
    if out_of_range.size:
        raise ValueError(
            f"`labels` must be in [0, {num_classes}) for scores with {num_classes} classes. "
            f"Received label {out_of_range[0]}."
        )
    return scores, labels


def evaluated_classes(num_classes, has_background):
    """Class indices the metrics are over: 1..N with a background, else 0..C-1."""
    return np.arange(1 if has_background else 0, num_classes)


def nanmean_with_warning(values, classes, what, warn=True):
    """Mean over the defined (non-NaN) entries; warns about the undefined ones.

    Returns NaN (with a warning) when no entry is defined.
    """
    values = np.asarray(values, np.float64)
    undefined = np.isnan(values)
    if warn and np.any(undefined):
        skipped = np.asarray(classes)[undefined]
        warnings.warn(
            f"{what}: {len(skipped)} class(es) have no positive example in `labels` and are "
            f"left out of the mean (classes {skipped[:10].tolist()}"
            f"{'...' if len(skipped) > 10 else ''}).",
            RuntimeWarning,
            stacklevel=3,
        )
    if np.all(undefined):
        return float("nan")
    return float(np.mean(values[~undefined]))
