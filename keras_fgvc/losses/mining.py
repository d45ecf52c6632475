"""In-batch triplet mining: local positives and margin-violating negatives.

Cui, Zhou, Lin, Belongie, "Fine-grained Categorization and Dataset
Bootstrapping using Deep Metric Learning with Humans in the Loop", CVPR 2016
(Cui's dissertation, Sec. 2.3.2-2.3.3, Fig. 2.6, Sec. 2.4.3).

Everything here is dense ``[B, B]`` / ``[B, B, B]`` boolean algebra over the
batch (no data-dependent shapes), so it runs under XLA (``jit_compile=True``).
Batches for triplet training are small (50 triplets per batch in the paper),
so the cubic masks are cheap; memory is O(B^3) (B = 256 needs ~100 MB per
mask), so keep triplet batches to a few hundred samples. Under a distribution
strategy, mining happens inside each replica's batch.

Batch label format (``labels``, ``hard_negative_for``), both int ``[B]``:

* ``labels[k]`` is the class of sample k, or -1 if it has no class label.
  Only labelled samples are anchors and positives.
* ``hard_negative_for[k]`` is the class c for which sample k is a human-marked
  false positive (Sec. 2.4.3), or -1. Such a sample is an extra negative for
  every anchor of class c. A human-labelled hard negative usually has no class
  of its own (label -1); it is then a negative for class c only.
"""

import fractions

from keras import ops

# The triplet defaults of Sec. 2.4.2, one home for the losses and the offline miner.
MARGIN = 0.2  # m of Eq. 2.1
POSITIVE_FRACTION = 0.6  # share of a class's nearest same-class items that are local positives


def pairwise_squared_distances(embeddings):
    """``[B, B]`` squared Euclidean distances, clamped at 0."""
    sq = ops.sum(ops.square(embeddings), axis=-1)
    dot = ops.matmul(embeddings, ops.transpose(embeddings))
    return ops.maximum(sq[:, None] + sq[None, :] - 2.0 * dot, 0.0)


def _off_diagonal(labels):
    b = ops.shape(labels)[0]
    idx = ops.arange(b)
    return ops.not_equal(idx[:, None], idx[None, :])


def same_class_mask(labels):
    """``[B, B]``: j != i, both labelled, same class."""
    labelled = ops.greater_equal(labels, 0)
    same = ops.equal(labels[:, None], labels[None, :])
    return same & labelled[:, None] & _off_diagonal(labels)


def num_local_positives(num_same, positive_fraction):
    """How many nearest same-class samples an anchor keeps as local positives (Sec. 2.3.3).

    The one rule of both miners (the in-batch `local_positive_mask` and the
    offline `keras_fgvc.training.mining.mine_triplet_order`):
    ``k = min(n, max(1, round_half_up(positive_fraction * n)))``, and 0 when
    ``n = 0``. The dissertation only says "60% of nearest neighbors within
    same category" (Sec. 2.4.2) and does not say how ``0.6 n`` is made an
    integer. Round half up keeps the share closest to the stated fraction;
    ceil would always enlarge the region (n = 2 at 0.6 keeps both positives,
    the whole class, which is the "contracted sphere" Fig. 2.5 warns about),
    and at least one positive is kept whenever the anchor has any.

    The product is evaluated exactly: `positive_fraction` is read as the
    nearest fraction a / b with b <= 1000 (0.6 = 3 / 5) and
    ``k = floor((2 a n + b) / (2 b))`` in int32 (exact for n < 10^6), so no
    float rounding moves a count across a boundary (in float64,
    ``ceil(0.07 * 100) = 8``; in float32, ``0.13 * 450 + 0.5 < 59``).

    Args:
        num_same: int tensor or array (any shape) of same-class sample counts n.
        positive_fraction: Python float in (0, 1].

    Returns:
        int32 tensor of the same shape.

    Example:
        >>> ops.convert_to_numpy(num_local_positives([0, 1, 2, 4, 5], 0.6)).tolist()
        [0, 1, 1, 2, 3]
    """
    share = fractions.Fraction(float(positive_fraction)).limit_denominator(1000)
    a, b = share.numerator, share.denominator
    n = ops.cast(ops.convert_to_tensor(num_same), "int32")
    k = ops.floor_divide(2 * a * n + b, 2 * b)
    return ops.minimum(ops.maximum(k, 1), n)


def local_positive_mask(labels, distances, positive_fraction=POSITIVE_FRACTION):
    """``[B, B]``: j is among the nearest `positive_fraction` of i's same-class samples.

    Local positive sampling (Sec. 2.3.3): positives are taken from the local
    neighbourhood of the anchor inside its class (60% of nearest neighbours in
    the paper). Ties in distance are broken by the lower index.
    """
    same = same_class_mask(labels)
    k = num_local_positives(ops.sum(ops.cast(same, "int32"), axis=1), positive_fraction)
    b = ops.shape(labels)[0]
    idx = ops.arange(b)
    d_ij = distances[:, :, None]  # [i, j, 1]
    d_il = distances[:, None, :]  # [i, 1, l]
    lower_index = ops.less(idx[None, None, :], idx[None, :, None])  # [1, j, l]: l < j
    closer = ops.less(d_il, d_ij) | (ops.equal(d_il, d_ij) & lower_index)
    # rank[i, j] = number of same-class l that are closer to i than j is.
    rank = ops.sum(ops.cast(closer & same[:, None, :], "int32"), axis=2)
    return same & ops.less(rank, k[:, None])


def hard_negative_mask(labels, hard_negative_for):
    """``[B, B]``: k is a human-marked hard negative for anchor i's class (Sec. 2.4.3)."""
    labelled = ops.greater_equal(labels, 0)
    marked = ops.equal(hard_negative_for[None, :], labels[:, None])
    return marked & labelled[:, None] & _off_diagonal(labels)


def negative_mask(labels, hard_negative_for=None):
    """``[B, B]``: k is a negative for anchor i.

    k is a negative when both are labelled with different classes, or when k
    is a human-marked hard negative for i's class (Sec. 2.4.3).
    """
    labelled = ops.greater_equal(labels, 0)
    different = ops.not_equal(labels[:, None], labels[None, :]) & labelled[None, :]
    different = different & labelled[:, None] & _off_diagonal(labels)
    if hard_negative_for is not None:
        different = different | hard_negative_mask(labels, hard_negative_for)
    return different


def triplet_hinge(distances, margin):
    """``[B, B, B]`` hinge ``d(i, j) - d(i, k) + m`` of Eq. 2.1 (before the max)."""
    return distances[:, :, None] - distances[:, None, :] + margin


def candidate_triplet_mask(labels, distances, positive_fraction=POSITIVE_FRACTION,
                           hard_negative_for=None):
    """``[B, B, B]`` mask of all triplets (i, j, k): j a local positive, k a negative of i.

    No margin test: this is the "naive" sampling of Table 2.1 (every in-batch
    triplet counts, violating or not).
    """
    pos = local_positive_mask(labels, distances, positive_fraction)
    neg = negative_mask(labels, hard_negative_for)
    return pos[:, :, None] & neg[:, None, :]


def violating_triplet_mask(
    labels, distances, margin=MARGIN, positive_fraction=POSITIVE_FRACTION, hard_negative_for=None
):
    """``[B, B, B]`` mask of the triplets (i, j, k) that are trained on.

    j is a local positive of anchor i, k a negative of i (different class or
    human-marked), and the triplet violates the margin:
    ``d(i, j) - d(i, k) + m > 0`` (Sec. 2.3.2: all violating negatives, not
    only the hardest one).
    """
    candidates = candidate_triplet_mask(labels, distances, positive_fraction, hard_negative_for)
    return candidates & ops.greater(triplet_hinge(distances, margin), 0.0)
