"""Dataset granularity measures (Cui et al., "Measuring Dataset Granularity", 2019; Ch. 6).

A granularity measure maps a labelled data set and a distance function to a
number; **larger means finer-grained** (Sec. 6.2.1). RS, RSM, Rank and RankM
(Eq. 6.2-6.5) satisfy scale invariance, isomorphism invariance (permuting class
ids) and granularity consistency (shrinking within-class and growing
between-class distances never raises the value). The silhouette index (Eq. 6.1)
is included for contrast: it grows with *coarser* data and is not granularity
consistent.

The distance is the Euclidean distance between feature rows (``metric=
"euclidean"``) or a precomputed ``[n, n]`` distance matrix (``metric=
"precomputed"``). Everything is computed in row chunks, so memory stays
``O(chunk * n)`` (RS, Rank, silhouette) or ``O(chunk * k)`` (RSM, RankM).
Float32 features are kept in float32 (fast, for large sets); anything else is
float64.

Command line (features from an ``.npz`` with ``features`` and ``labels``, or
extracted with a saved or registered model over a data set)::

    python -m keras_fgvc.analysis.granularity --features feats.npz --plot g.png
    python -m keras_fgvc.analysis.granularity --model_path W/model.keras \\
        --dataset fashion_mnist --split test --limit 2000 --plot g.png
"""

import argparse
import sys

import numpy as np

from keras_fgvc.analysis._cli import emit_json, save_bar_plots
from keras_fgvc.analysis._distances import (
    CHUNK_ELEMENTS,
    chunks,
    class_medoids,
    class_members,
    few_blas_threads,
    medoid,
    rows_to,
    sq_norms,
    validate,
)

MEASURES = ("rs", "rsm", "rank", "rank_m", "silhouette")
__all__ = ["class_medoids", "granularity", "rank", "rank_m", "rs", "rsm", "silhouette"]


# ---------------------------------------------------------------- helpers ---


def _prepare(features, labels, metric):
    """Like `validate`, and refuses a single class."""
    data, classes, y, counts = validate(features, labels, metric)
    if len(classes) < 2:
        raise ValueError(
            f"Granularity is undefined for a single class (all labels are {classes[0]}): "
            "the measures compare within-class and between-class distances, so at least "
            "two classes are needed."
        )
    return data, classes, y, counts


def _class_sums(block, order, starts):
    """Per-class sums of each row of `block` ([c, n] -> [c, k])."""
    return np.add.reduceat(block[:, order], starts, axis=1)


def _ratio(num, den):
    """num / den, with 0/0 = 1 (indistinguishable) and x/0 = inf."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = num / den
    r[(den == 0) & (num == 0)] = 1.0
    return r


def _tie_tolerance(dtype, dims, scale):
    """How far apart two squared Euclidean distances (or medoid scores) computed as
    ||x||^2 + ||y||^2 - 2 x.y may be and still be the same distance: a few rounding
    errors of the dot products at `scale` (||x||^2 + the largest ||y||^2), so that
    exactly tied distances stay tied (and count against x_i) in float32 and float64."""
    return 4.0 * np.sqrt(dims + 2.0) * np.finfo(dtype).eps * scale


def _require_no_singletons(classes, counts, measure):
    single = classes[counts < 2]
    if len(single):
        raise ValueError(
            f"{measure} needs at least 2 samples per class (the mean within-class distance "
            f"of a lone sample is undefined); classes with 1 sample: {single[:10].tolist()}. "
            "Drop them, or use rsm / rank_m."
        )


def _silhouette_terms(features, labels, metric, chunk_size):
    """Per-sample a(x_i), b(x_i) of Eq. 6.1 and the class sizes."""
    data, classes, y, counts = _prepare(features, labels, metric)
    n = len(y)
    order = np.argsort(y, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    if metric == "euclidean":
        data = data - data.mean(axis=0)  # centred: less cancellation in the matmul form
    sq = sq_norms(data) if metric == "euclidean" else None
    a = np.empty(n)
    b = np.empty(n)
    for rows in chunks(n, n, chunk_size):
        sums = _class_sums(rows_to(data, metric, rows, sq=sq, sq_cols=sq), order, starts)
        yr = y[rows]
        idx = np.arange(len(yr))
        with np.errstate(divide="ignore", invalid="ignore"):
            a[rows] = sums[idx, yr] / (counts[yr] - 1)
        means = sums / counts[None, :]
        means[idx, yr] = np.inf
        b[rows] = means.min(axis=1)
    return a, b, classes, counts, y


# --------------------------------------------------------------- measures ---


def silhouette(features, labels, metric="euclidean", chunk_size=None):
    """Silhouette index (Eq. 6.1), for contrast: larger means *coarser*.

    Matches ``sklearn.metrics.silhouette_score`` (a lone sample scores 0).

    Args:
        features: float [n, d] features, or [n, n] distances with
            ``metric="precomputed"``.
        labels: int [n] class ids (any integers; at least two classes).
        metric: ``"euclidean"`` or ``"precomputed"``.
        chunk_size: rows per distance block (None: automatic).

    Returns:
        float in [-1, 1].

    Example:
        >>> silhouette([[0.0], [0.1], [5.0], [5.1]], [0, 0, 1, 1]) > 0.9
        True
    """
    a, b, _, counts, y = _silhouette_terms(features, labels, metric, chunk_size)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (b - a) / np.maximum(a, b)
    s[(counts[y] < 2) | ~np.isfinite(s)] = 0.0
    return float(s.mean())


def rs(features, labels, metric="euclidean", chunk_size=None):
    """Revised Silhouette index RS (Eq. 6.2): mean of a(x_i) / b(x_i).

    a(x_i) is the mean distance to the other samples of x_i's class, b(x_i)
    the mean distance to the samples of the nearest other class. O(n^2) time.

    Args:
        features: float [n, d] features, or [n, n] distances with
            ``metric="precomputed"``.
        labels: int [n] class ids; at least two classes, each with >= 2 samples.
        metric: ``"euclidean"`` or ``"precomputed"``.
        chunk_size: rows per distance block (None: automatic).

    Returns:
        float >= 0; larger is finer-grained.

    Example:
        >>> round(rs([[0.0], [1.0], [10.0], [11.0]], [0, 0, 1, 1]), 4)
        0.1003
    """
    a, b, classes, counts, _ = _silhouette_terms(features, labels, metric, chunk_size)
    _require_no_singletons(classes, counts, "RS")
    return float(_ratio(a, b).mean())


def _to_medoids(features, labels, metric, chunk_size, squared_scores=False):
    """Yields (rows, block [c, k], y[rows], tol [c]) of sample-to-medoid distances, tol
    the rounding within which two of a row's Euclidean squared scores are the same
    (`_tie_tolerance`; 0 for precomputed distances).

    With `squared_scores` (Euclidean only) the block holds ||m||^2 - 2 x.m,
    which orders medoids exactly like the distance. It is one matmul of the
    augmented chunk [x - mean, 1] [c, d + 1] with [-2 M^T; ||m||^2] [d + 1, k],
    so no extra pass over the block is needed.
    """
    data, classes, y, counts = _prepare(features, labels, metric)
    with few_blas_threads(np.median(counts)):
        med = np.array([medoid(data, members, metric, chunk_size)
                        for members in class_members(y, counts)], dtype=np.int64)
    k = len(classes)
    step = chunk_size or max(1, CHUNK_ELEMENTS // k)
    if metric == "euclidean":
        n, d = data.shape
        center = data.mean(axis=0)  # distances are computed on centred features
        m = data[med] - center
        m_aug = np.concatenate([-2.0 * m.T, sq_norms(m)[None, :]]).astype(data.dtype)
        buffer = np.empty((min(step, n), d + 1), dtype=data.dtype)
        buffer[:, d] = 1.0
    for rows in chunks(len(y), k, step):
        if metric == "precomputed":
            block = np.asarray(data[rows][:, med], dtype=np.float64)
            tol = np.zeros(len(block))
        else:
            x = buffer[: rows.stop - rows.start]
            np.subtract(data[rows], center, out=x[:, :d])
            block = x @ m_aug
            row_sq = sq_norms(x[:, :d])
            tol = _tie_tolerance(data.dtype, d, row_sq + m_aug[d].max())
            if not squared_scores:
                block += row_sq[:, None]
                np.sqrt(np.maximum(block, 0.0, out=block), out=block)
        yield rows, block, y[rows], tol


def rsm(features, labels, metric="euclidean", chunk_size=None):
    """Revised Silhouette with Medoids RSM (Eq. 6.3). O(nk) distances.

    Mean over samples of d(x_i, own medoid) / d(x_i, nearest other medoid).

    Args:
        features: float [n, d] (or [n, n] distances with ``metric="precomputed"``).
        labels: int [n] class ids; at least two classes.
        metric: ``"euclidean"`` or ``"precomputed"``.
        chunk_size: rows per block (None: automatic).

    Returns:
        float >= 0; larger is finer-grained.

    Example:
        >>> round(rsm([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]], [0, 0, 0, 1, 1, 1]), 4)
        0.0673
    """
    total = 0.0
    n = 0
    for _, block, yr, _ in _to_medoids(features, labels, metric, chunk_size):
        idx = np.arange(len(yr))
        own = block[idx, yr].copy()
        block[idx, yr] = np.inf
        total += _ratio(own, block.min(axis=1)).sum()
        n += len(yr)
    return float(total / n)


def rank(features, labels, metric="euclidean", chunk_size=None):
    """Ranking index Rank (Eq. 6.4): one minus a normalised mean average precision.

    For each x_i the other n-1 samples are ranked by distance; R_ij is the
    rank of the j-th nearest same-class sample (ties: other classes first), AP_i =
    mean_j j / R_ij, and Rank = mean_i n / (n - 1) * (1 - AP_i). The sum in
    Eq. 6.4 is read as the average precision the text names (divided by
    |R_i|), which keeps the value in [0, 1]. O(n^2 log n) time.

    Args:
        features: float [n, d] (or [n, n] distances with ``metric="precomputed"``).
        labels: int [n] class ids; at least two classes, each with >= 2 samples.
        metric: ``"euclidean"`` or ``"precomputed"``.
        chunk_size: rows per distance block (None: automatic).

    Returns:
        float in [0, 1]; larger is finer-grained.

    Example:
        >>> rank([[0.0], [1.0], [10.0], [11.0]], [0, 0, 1, 1])
        0.0
    """
    data, classes, y, counts = _prepare(features, labels, metric)
    _require_no_singletons(classes, counts, "Rank")
    n = len(y)
    if metric == "euclidean":
        data = data - data.mean(axis=0)
    sq = sq_norms(data) if metric == "euclidean" else None
    total = 0.0
    for c, same_cols in enumerate(class_members(y, counts)):
        # Rows of one class share the split of columns into same / other classes, so
        # each part is sorted on its own and R_ij = j + #(others at distance <= d_ij).
        # Euclidean: compared as squared distances, within rounding (`_tie_tolerance`).
        other_cols = np.flatnonzero(y != c)
        j = np.arange(1, len(same_cols), dtype=np.float64)
        for rows in chunks(len(same_cols), 2 * n, chunk_size):
            sub = same_cols[rows]
            block = rows_to(data, metric, sub, sq=sq, sq_cols=sq)
            tol = np.zeros(len(sub))
            if metric == "euclidean":
                block *= block
                tol = _tie_tolerance(data.dtype, data.shape[1], sq[sub] + sq.max())
            block[np.arange(len(sub)), sub] = -1.0  # x_i itself sorts first; dropped
            same = np.sort(block[:, same_cols], axis=1)[:, 1:]
            other = np.sort(block[:, other_cols], axis=1)
            for r in range(len(sub)):
                ranks = j + np.searchsorted(other[r], same[r] + tol[r], side="right")
                total += 1.0 - np.mean(j / ranks)
    return float(total / (n - 1))


def rank_m(features, labels, metric="euclidean", chunk_size=None):
    """Ranking with Medoids RankM (Eq. 6.5), the measure the chapter selects.

    R_ic is the rank of x_i's own class medoid among all k medoids by distance
    to x_i (1 = nearest; a tie counts against x_i, so indistinguishable classes
    are maximally fine), and RankM = mean_i
    k / (k - 1) * (1 - 1 / R_ic). Costs one n x k distance computation (one
    matmul, done in row chunks) plus O(nk) comparisons: no sort is needed.

    Args:
        features: float [n, d] (or [n, n] distances with ``metric="precomputed"``).
            Float32 input is computed in float32.
        labels: int [n] class ids; at least two classes.
        metric: ``"euclidean"`` or ``"precomputed"``.
        chunk_size: rows per block (None: automatic, <= 2^24 block entries).

    Returns:
        float in [0, 1]; larger is finer-grained.

    Example:
        >>> rank_m([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]], [0, 0, 0, 1, 1, 1])
        0.0
    """
    total = 0.0
    n = 0
    k = None
    for _, block, yr, tol in _to_medoids(features, labels, metric, chunk_size,
                                         squared_scores=True):
        k = block.shape[1]
        own = block[np.arange(len(yr)), yr] + tol  # tied within rounding count against x_i
        r = np.count_nonzero(block <= own[:, None], axis=1)  # >= 1: own medoid counts
        total += (1.0 - 1.0 / r).sum()
        n += len(yr)
    return float(k / (k - 1) * total / n)


_FUNCTIONS = {"rs": rs, "rsm": rsm, "rank": rank, "rank_m": rank_m, "silhouette": silhouette}


def granularity(features, labels, measures=("rs", "rsm", "rank", "rank_m"), **kwargs):
    """Several measures at once: ``{name: value}`` for names in `MEASURES`."""
    unknown = [m for m in measures if m not in _FUNCTIONS]
    if unknown:
        raise ValueError(f"Unknown granularity measures {unknown}; choose from {MEASURES}.")
    return {m: _FUNCTIONS[m](features, labels, **kwargs) for m in measures}


# -------------------------------------------------------------------- CLI ---


def main(argv=None):
    """``python -m keras_fgvc.analysis.granularity --features F.npz [--measures ...]``."""
    from keras_fgvc.analysis import features as features_lib

    parser = argparse.ArgumentParser(
        prog="python -m keras_fgvc.analysis.granularity", description=__doc__.split("\n")[0]
    )
    features_lib.add_feature_arguments(parser)
    parser.add_argument(
        "--measures", nargs="+", default=["rs", "rsm", "rank", "rank_m", "silhouette"],
        choices=MEASURES, help="measures to compute (RS, Rank, silhouette are O(n^2)).",
    )
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--plot", help="write a bar chart of the measures to this .png")
    args = parser.parse_args(argv)
    if args.plot and not args.plot.lower().endswith(".png"):
        parser.error(f"--plot must name a .png file, got {args.plot!r}.")
    x, y = features_lib.features_from_arguments(args)
    result = {"n": int(len(y)), "num_classes": int(len(np.unique(y)))}
    for name in args.measures:
        print(f"computing {name} on {len(y)} samples ...", file=sys.stderr, flush=True)
        result[name] = _FUNCTIONS[name](x, y)
    emit_json(result, args.output)
    if args.plot:
        title = f"granularity (n={result['n']}, {result['num_classes']} classes)"
        save_bar_plots(args.plot, [(title, args.measures, [result[m] for m in args.measures])],
                       "value")
    return result


if __name__ == "__main__":
    main()
