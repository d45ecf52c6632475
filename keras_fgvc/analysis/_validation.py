"""Input checks shared by the analysis functions: clear errors for bad input."""

import numpy as np


def check_features(features, name="features", allow_float32=True):
    """A finite 2-D float array [n, d] with n >= 1 and d >= 1.

    Float32 input stays float32 (large feature sets, fast matmul) when
    `allow_float32`; everything else becomes float64.
    """
    features = np.asarray(features)
    if features.dtype == object or not (
        np.issubdtype(features.dtype, np.floating) or np.issubdtype(features.dtype, np.integer)
    ):
        raise ValueError(f"{name} must be numeric, got dtype {features.dtype}.")
    if features.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, d], got shape {features.shape}.")
    if features.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {features.shape}): nothing to analyse.")
    if features.shape[1] == 0:
        raise ValueError(f"{name} has no feature dimensions (shape {features.shape}).")
    if not (allow_float32 and features.dtype == np.float32):
        features = features.astype(np.float64, copy=False)
    step = max(1, (1 << 24) // features.shape[1])
    for start in range(0, features.shape[0], step):  # in chunks: no n x d temporary
        bad = ~np.isfinite(features[start : start + step])
        if bad.any():
            bad_rows = np.flatnonzero(~np.isfinite(features).all(axis=1))
            raise ValueError(
                f"{name} has NaN/inf values in {len(bad_rows)} rows "
                f"(first bad row: {bad_rows[0]}); remove or impute them first."
            )
    return features


def check_labels(labels, n, name="labels"):
    """A 1-D integer label array of length `n`."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {labels.shape}.")
    if len(labels) != n:
        raise ValueError(f"{name} has {len(labels)} entries but features has {n} rows.")
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError(f"{name} must hold integer class ids, got non-integer floats.")
        labels = labels.astype(np.int64)
    elif not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class ids, got dtype {labels.dtype}.")
    return labels.astype(np.int64)


def check_features_labels(features, labels, allow_float32=True):
    """Validated (features, labels, classes, y) with y = index into `classes`."""
    features = check_features(features, allow_float32=allow_float32)
    labels = check_labels(labels, features.shape[0])
    classes, y = np.unique(labels, return_inverse=True)
    return features, labels, classes, y.reshape(-1)


def check_weights(weights, n, name="weights"):
    """Non-negative finite weights of length `n` with a positive sum, normalised to 1."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or len(weights) != n:
        raise ValueError(f"{name} must be 1-D with {n} entries, got shape {weights.shape}.")
    if not np.all(np.isfinite(weights)):
        raise ValueError(f"{name} has NaN/inf values.")
    if np.any(weights < 0):
        raise ValueError(f"{name} must be non-negative, got min {weights.min()}.")
    total = weights.sum()
    if total <= 0:
        raise ValueError(f"{name} sum to {total}; at least one class needs a positive weight.")
    return weights / total
