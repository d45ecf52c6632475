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

Example:

>>> order = mine_triplet_order(embeddings, labels, count=384, seed=0)
>>> order[:3]  # reference, positive, negative
"""

import numpy as np
from keras import ops

from keras_fgvc.losses.mining import num_local_positives, pairwise_squared_distances


def _squared_distances(x):
    """The in-batch miner's distances (one definition), in float64 for the offline mining."""
    return ops.convert_to_numpy(pairwise_squared_distances(np.asarray(x, np.float64)))


def mine_triplet_order(embeddings, labels, count, margin=0.2, positive_fraction=0.6, seed=0):
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
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise ValueError("Triplet mining needs at least two classes.")
    eligible = np.flatnonzero(np.isin(labels, classes[counts >= 2]))
    if not len(eligible):
        raise ValueError("Triplet mining needs a class with at least two examples.")
    # Local positives per reference: the same rule as the in-batch miner, on the
    # n = count - 1 other samples of the reference's class.
    num_positives = dict(zip(classes.tolist(), ops.convert_to_numpy(
        num_local_positives(counts - 1, positive_fraction)).tolist()))
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        r = int(rng.choice(eligible))
        same = np.flatnonzero(labels == labels[r])
        same = same[same != r]
        near = same[np.argsort(distances[r, same], kind="stable")]
        p = int(rng.choice(near[: num_positives[labels[r].item()]]))
        others = np.flatnonzero(labels != labels[r])
        violating = others[distances[r, others] < distances[r, p] + margin]
        if len(violating):
            n = int(rng.choice(violating))
        else:
            n = int(others[np.argmin(distances[r, others])])
        out.extend((r, p, n))
    return np.asarray(out[:count], np.int64)
