"""Chunked Euclidean distances and class medoids shared by the granularity measures.

Distances use the matmul form ||x||^2 + ||y||^2 - 2 x.y on mean-centred
features (less cancellation), in row chunks of at most 2^24 entries; the
distance of a sample to itself is exactly 0.
"""

import contextlib

import numpy as np

from keras_fgvc.analysis import _validation

CHUNK_ELEMENTS = 1 << 24  # entries of one distance block (128 MiB in float64)


def validate(features, labels, metric):
    """Validated (data, classes, y, counts) for either metric."""
    if metric == "euclidean":
        data, _, classes, y = _validation.check_features_labels(features, labels)
    elif metric == "precomputed":
        data = _validation.check_features(features, name="distance matrix")
        if data.shape[0] != data.shape[1]:
            raise ValueError(f"A precomputed distance matrix must be square, got {data.shape}.")
        if np.any(data < 0):
            raise ValueError("A precomputed distance matrix must be non-negative.")
        labels = _validation.check_labels(labels, data.shape[0])
        classes, y = np.unique(labels, return_inverse=True)
        y = y.reshape(-1)
    else:
        raise ValueError(f"metric must be 'euclidean' or 'precomputed', got {metric!r}.")
    return data, classes, y, np.bincount(y, minlength=len(classes))


def chunks(n, width, chunk_size=None):
    step = chunk_size or max(1, CHUNK_ELEMENTS // max(width, 1))
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def few_blas_threads(class_size):
    """Single-threaded BLAS for many small per-class matmuls (multi-threading tiny
    matmuls costs more than it saves, badly so on a busy machine); needs threadpoolctl."""
    if class_size >= 512:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional (a scikit-learn dependency)
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def sq_norms(x):
    return np.einsum("ij,ij->i", x, x)


def rows_to(data, metric, rows, cols=None, sq=None, sq_cols=None):
    """Distances from data[rows] to data[cols] (all columns when cols is None)."""
    if metric == "precomputed":
        block = data[rows] if cols is None else data[rows][:, cols]
        return np.array(block, dtype=np.float64)  # a copy: callers write into it
    x = data[rows]
    other = data if cols is None else data[cols]
    sq_x = sq_norms(x) if sq is None else sq[rows]
    sq_o = sq_norms(other) if sq_cols is None else sq_cols
    d2 = sq_x[:, None] + sq_o[None, :] - 2.0 * (x @ other.T)
    d = np.sqrt(np.maximum(d2, 0.0, out=d2), out=d2)
    if cols is None:  # d(x_i, x_i) = 0 exactly, not sqrt(rounding error)
        d[np.arange(d.shape[0]), np.arange(data.shape[0])[rows]] = 0.0
    return d


def class_medoids(features, labels, metric="euclidean", chunk_size=None):
    """Medoid of each class: the member with the smallest summed distance to its class.

    Args:
        features: float [n, d] (or [n, n] distances with ``metric="precomputed"``).
        labels: int [n] class ids.
        metric: ``"euclidean"`` or ``"precomputed"``.
        chunk_size: rows per distance block (None: automatic).

    Returns:
        (classes, medoid_indices): sorted class ids [k] and, for each, the row
        index of its medoid (ties, up to rounding: the lowest index).
    """
    data, classes, y, counts = validate(features, labels, metric)
    with few_blas_threads(np.median(counts)):
        medoids = [medoid(data, members, metric, chunk_size)
                   for members in class_members(y, counts)]
    return classes, np.array(medoids, dtype=np.int64)


def class_members(y, counts):
    """Row indices of each class, in class order."""
    order = np.argsort(y, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [order[bounds[c] : bounds[c + 1]] for c in range(len(counts))]


def medoid(data, members, metric, chunk_size):
    """Row index of the medoid of the rows `members`."""
    if metric == "euclidean":
        own = data[members]
        own = own - own.mean(axis=0)  # centred: less cancellation in the matmul form
        sq = sq_norms(own)
    totals = np.empty(len(members))
    for rows in chunks(len(members), len(members), chunk_size):
        sub = members[rows]
        if metric == "euclidean":
            d2 = sq[rows][:, None] + sq[None, :] - 2.0 * (own[rows] @ own.T)
            block = np.sqrt(np.maximum(d2, 0.0))
            block[np.arange(block.shape[0]), np.arange(len(members))[rows]] = 0.0
        else:
            block = data[np.ix_(sub, members)]
        totals[rows] = block.sum(axis=1)
    # Near-ties (within rounding of the matmul form) go to the lowest index, so
    # the medoid does not depend on the scale of the features.
    tol = 64 * np.finfo(data.dtype).eps * max(totals.min(), np.finfo(data.dtype).tiny)
    return members[np.flatnonzero(totals <= totals.min() + tol)[0]]
