"""The in-batch and the offline miner keep the same local positives (Sec. 2.3.3, 2.4.1-2.4.2).

`TripletLoss` mines inside each batch (`keras_fgvc.losses.mining`); the
quasi-online scheme mines an epoch order offline
(`keras_fgvc.training.mining`). Both take the nearest `positive_fraction` of an
anchor's n same-class samples, with one count rule, `num_local_positives`.
"""

import math

import numpy as np
import pytest
from keras import ops

from keras_fgvc.losses.mining import (
    local_positive_mask,
    num_local_positives,
    pairwise_squared_distances,
)
from keras_fgvc.training.mining import mine_triplet_order

# One class of each size n + 1, so anchors have n = 1..10 same-class samples.
OTHERS_PER_CLASS = list(range(1, 11))
FRACTIONS = [0.6, 0.5, 0.3, 0.7, 0.25]


def _round_half_up(fraction, n):
    """Exact reference: min(n, max(1, floor(f n + 1/2))), 0 for n = 0 (f read as a decimal)."""
    if n == 0:
        return 0
    units = round(fraction * 10_000)  # f = units / 10^4 (the fractions here have <= 4 decimals)
    return min(n, max(1, (2 * units * n + 10_000) // 20_000))


@pytest.mark.parametrize(
    "n, fraction, expected",
    [
        (0, 0.6, 0), (1, 0.6, 1), (2, 0.6, 1), (3, 0.6, 2), (4, 0.6, 2), (5, 0.6, 3),
        (7, 0.6, 4), (10, 0.6, 6), (19, 0.6, 11),
        (5, 0.3, 2), (5, 0.7, 4), (3, 0.5, 2), (1, 0.5, 1), (7, 1.0, 7), (4, 0.01, 1),
        # Products that float arithmetic puts on the wrong side of a boundary:
        # ceil(0.07 * 100) = 8 in float64, floor(0.13 * 450 + 0.5) = 58 in float32.
        (100, 0.07, 7), (450, 0.13, 59), (150, 0.21, 32),
    ],
)
def test_count_rule(n, fraction, expected):
    assert _round_half_up(fraction, n) == expected
    got = ops.convert_to_numpy(num_local_positives(n, fraction))
    assert got.dtype == np.int32 and int(got) == expected
    # Vectorised the same way (the offline miner calls it on all classes at once).
    many = ops.convert_to_numpy(num_local_positives(np.array([n, n]), fraction))
    assert many.tolist() == [expected, expected]


def _clustered_batch(seed=0):
    """Classes with 2..11 samples, far apart, random positions inside each class."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(OTHERS_PER_CLASS)), np.array(OTHERS_PER_CLASS) + 1)
    centres = 20.0 * np.eye(len(OTHERS_PER_CLASS), 12)
    emb = centres[labels] + rng.normal(size=(len(labels), 12))
    d = np.asarray(pairwise_squared_distances(emb))
    # Distances within a class are well separated: no tie or float32 round-off can reorder them.
    for c in range(len(OTHERS_PER_CLASS)):
        members = np.flatnonzero(labels == c)
        for r in members:
            gaps = np.diff(np.sort(d[r, members[members != r]]))
            assert gaps.size == 0 or gaps.min() > 1e-3
    return labels, emb


@pytest.mark.parametrize("fraction", FRACTIONS)
def test_in_batch_and_offline_miners_keep_the_same_positives(fraction):
    labels, emb = _clustered_batch()
    # The sizes include cases where rounding and ceil disagree (0.6 n: n = 2, 4, 7, 9;
    # 0.3 n: n = 1, 4, 7, 8, 10; ...), which the old offline miner (ceil) got wrong.
    if fraction in (0.6, 0.3, 0.7, 0.25):
        assert any(math.ceil(fraction * n - 1e-9) != _round_half_up(fraction, n)
                   for n in OTHERS_PER_CLASS)

    mask = np.asarray(local_positive_mask(labels, pairwise_squared_distances(emb), fraction))

    # Offline: enough triplets that every reference draws each of its positives many times.
    order = mine_triplet_order(emb, labels, count=3 * 100 * len(labels), margin=0.2,
                               positive_fraction=fraction, seed=0)
    chosen = {r: set() for r in range(len(labels))}
    for r, p, _ in order.reshape(-1, 3):
        chosen[int(r)].add(int(p))

    for r in range(len(labels)):
        n = int(np.sum(labels == labels[r])) - 1
        in_batch = set(np.flatnonzero(mask[r]).tolist())
        assert len(in_batch) == _round_half_up(fraction, n), (r, n)
        assert chosen[r] == in_batch, (r, n, sorted(chosen[r]), sorted(in_batch))
