"""Offline triplet sampling for the quasi-online scheme of Sec. 2.4.1.

Given embeddings of (a subset of) the training set, build an example order
made of triplets ``(x, x_p, x_n)``: x_p is drawn from the nearest
`positive_fraction` of x's class (local positive sampling, Sec. 2.3.3; the
count is `keras_fgvc.losses.mining.num_local_positives`, as in batch) and
x_n from the other classes' samples that violate the margin,
``||f(x) - f(x_n)||^2 < ||f(x) - f(x_p)||^2 + m`` (hard negatives,
Sec. 2.3.2); when none violates, the nearest negative is used. Consecutive
triplets fill the training batches, where the in-batch `TripletLoss` sees
them.

Human hard negatives (dataset bootstrapping, Sec. 2.4.3: "we combined these
human labeled hard negatives with negatives from other categories that violate
triplet constraint during triplet sampling. We sampled same number of
human-labeled hard negatives as the hard negatives from other categories"):
`mine_triplet_order_with_hard_negatives` adds to every triplet one candidate
a labeler rejected for the reference's category, chosen by the same rule
(violating the margin, else the nearest), so every batch holds as many human
hard negatives as negatives mined from other categories.

Example:

>>> order = mine_triplet_order(embeddings, labels, count=384, seed=0)
>>> order[:3]  # reference, positive, negative
"""

import numpy as np
from keras import ops

from keras_fgvc.losses.mining import (
    MARGIN,
    POSITIVE_FRACTION,
    num_local_positives,
    pairwise_squared_distances,
)


def _squared_distances(x):
    """The in-batch miner's distances (one definition), in float64 for the offline mining."""
    return ops.convert_to_numpy(pairwise_squared_distances(np.asarray(x, np.float64)))


def mine_triplet_order(embeddings, labels, count, margin=MARGIN,
                       positive_fraction=POSITIVE_FRACTION, seed=0):
    """`count` indices into `embeddings`, grouped as (reference, positive, negative) triplets.

    Args:
        embeddings: float [n, D] (L2-normalised by the model).
        labels: int [n].
        count: number of indices to return (the last triplet may be cut).
        margin: m of the triplet loss.
        positive_fraction: share of nearest same-class samples eligible as positives.
        seed: NumPy seed (an int or a sequence of ints).

    Returns:
        int64 [count].

    Raises:
        ValueError: no class has two examples, or only one class is present.
    """
    labels = np.asarray(labels)
    distances = _squared_distances(embeddings)
    rng = np.random.default_rng(seed)
    out = []
    for r, p, n in _triplets(distances, labels, np.ones(len(labels), bool), margin,
                             positive_fraction, rng):
        out.extend((r, p, n))
        if len(out) >= count:
            return np.asarray(out[:count], np.int64)
    return np.zeros(0, np.int64)


def _hard(distances, r, p, candidates, margin, rng):
    """A candidate violating the margin for (r, p) at random, else the nearest one."""
    violating = candidates[distances[r, candidates] < distances[r, p] + margin]
    if len(violating):
        return int(rng.choice(violating))
    return int(candidates[np.argmin(distances[r, candidates])])


def _triplets(distances, labels, usable, margin, positive_fraction, rng):
    """Endless (reference, positive, negative) index triplets over the `usable` rows."""
    classes, counts = np.unique(labels[usable], return_counts=True)
    if len(classes) < 2:
        raise ValueError("Triplet mining needs at least two classes.")
    eligible = np.flatnonzero(usable & np.isin(labels, classes[counts >= 2]))
    if not len(eligible):
        raise ValueError("Triplet mining needs a class with at least two examples.")
    # Local positives per reference: the same rule as the in-batch miner, on the
    # n = count - 1 other samples of the reference's class.
    num_positives = dict(zip(classes.tolist(), ops.convert_to_numpy(
        num_local_positives(counts - 1, positive_fraction)).tolist()))
    while True:
        r = int(rng.choice(eligible))
        same = np.flatnonzero(usable & (labels == labels[r]))
        same = same[same != r]
        near = same[np.argsort(distances[r, same], kind="stable")]
        p = int(rng.choice(near[: num_positives[labels[r].item()]]))
        others = np.flatnonzero(usable & (labels != labels[r]))
        yield r, p, _hard(distances, r, p, others, margin, rng)


def mine_triplet_order_with_hard_negatives(embeddings, labels, hard_negative_for, count,
                                           margin=MARGIN, positive_fraction=POSITIVE_FRACTION,
                                           seed=0):
    """`count` indices grouped as (reference, positive, negative, human hard negative).

    The triplet (reference, positive, negative) is mined as `mine_triplet_order`
    does over the rows that are no hard negative; the fourth index is a row
    marked as a hard negative for the reference's class (``hard_negative_for
    == labels[reference]``) that violates the margin for (reference,
    positive), else the nearest such row. When the reference's class has no
    hard negative among the rows, one of another class is drawn at random (a
    negative for that class's anchors in the batch), so the count of human
    hard negatives always equals the count of mined negatives.

    Args:
        embeddings: float [n, D].
        labels: int [n] (-1 for hard negatives with no class of their own).
        hard_negative_for: int [n], the class each row is a hard negative for, -1 = none.
        count, margin, positive_fraction, seed: as `mine_triplet_order`.

    Returns:
        int64 [count].

    Raises:
        ValueError: no row is a hard negative, or the triplet rules cannot be met.
    """
    labels = np.asarray(labels)
    marks = np.asarray(hard_negative_for)
    human = marks >= 0
    if not human.any():
        raise ValueError("No row is a human hard negative; use mine_triplet_order.")
    distances = _squared_distances(embeddings)
    rng = np.random.default_rng(seed)
    by_class = {int(c): np.flatnonzero(marks == c) for c in np.unique(marks[human])}
    everyone = np.flatnonzero(human)
    out = []
    for r, p, n in _triplets(distances, labels, ~human & (labels >= 0), margin,
                             positive_fraction, rng):
        own = by_class.get(int(labels[r]))
        h = (_hard(distances, r, p, own, margin, rng) if own is not None
             else int(rng.choice(everyone)))
        out.extend((r, p, n, h))
        if len(out) >= count:
            return np.asarray(out[:count], np.int64)
    return np.zeros(0, np.int64)
