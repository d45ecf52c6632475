"""stats.py against short NumPy references written from each formula."""

import math

import numpy as np
import pytest

from keras_fgvc.bootstrap import stats

Z95 = 1.959963984540054


def wilson_reference(k, n, z=Z95):
    """Wilson (1927): (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)."""
    p = np.float64(k) / n
    center = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return float(center - half), float(center + half)


def kappa_reference(a, b):
    """Cohen (1960): (p_o - p_e) / (1 - p_e) from the confusion matrix."""
    labels = sorted(set(a) | set(b))
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), np.float64)
    for x, y in zip(a, b):
        matrix[index[x], index[y]] += 1
    matrix /= matrix.sum()
    p_o = np.trace(matrix)
    p_e = float(matrix.sum(1) @ matrix.sum(0))
    return (p_o - p_e) / (1 - p_e)


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 7), (3, 7), (7, 7), (8, 10), (1, 1000),
                                 (500, 1000), (999, 1000)])
def test_wilson_interval_matches_reference(k, n):
    low, high = stats.wilson_interval(k, n)
    ref_low, ref_high = wilson_reference(k, n)
    assert low == pytest.approx(max(ref_low, 0.0), abs=1e-12)
    assert high == pytest.approx(min(ref_high, 1.0), abs=1e-12)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_wilson_interval_known_values_and_degenerate_cases():
    # 8 of 10: the textbook interval (0.4902, 0.9433).
    low, high = stats.wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)  # no data: the whole range
    assert stats.wilson_interval(0, 5)[0] == 0.0 and stats.wilson_interval(5, 5)[1] == 1.0
    # A wider confidence gives a wider interval.
    l90, h90 = stats.wilson_interval(3, 9, confidence=0.9)
    l99, h99 = stats.wilson_interval(3, 9, confidence=0.99)
    assert l99 < l90 and h99 > h90
    assert stats.proportion(3, 4) == {"value": 0.75, "low": stats.wilson_interval(3, 4)[0],
                                      "high": stats.wilson_interval(3, 4)[1], "k": 3, "n": 4}
    assert stats.proportion(0, 0)["value"] is None


@pytest.mark.parametrize("k,n,message", [(5, 4, "successes"), (-1, 4, "non-negative"),
                                         (1.5, 4, "integer"), (True, 4, "integer")])
def test_wilson_interval_bad_input(k, n, message):
    with pytest.raises(ValueError, match=message):
        stats.wilson_interval(k, n)
    with pytest.raises(ValueError, match="confidence"):
        stats.wilson_interval(1, 2, confidence=1.0)


def test_cohen_kappa_matches_reference_and_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 60))
        a = list(rng.choice(stats.DECISIONS, size=n))
        b = [x if rng.random() < 0.7 else str(rng.choice(stats.DECISIONS)) for x in a]
        if len(set(a) | set(b)) == 1:
            continue
        assert stats.cohen_kappa(a, b) == pytest.approx(kappa_reference(a, b), abs=1e-12)
    sklearn = pytest.importorskip("sklearn.metrics")
    a = ["accept", "accept", "reject", "unsure", "reject", "accept", "reject"]
    b = ["accept", "reject", "reject", "unsure", "accept", "accept", "reject"]
    assert stats.cohen_kappa(a, b) == pytest.approx(sklearn.cohen_kappa_score(a, b))


def test_cohen_kappa_degenerate_cases():
    assert stats.cohen_kappa(["accept", "reject"] * 3, ["accept", "reject"] * 3) == 1.0
    # Systematic disagreement on two balanced categories: p_o = 0, p_e = 0.5.
    assert stats.cohen_kappa(["accept", "reject"], ["reject", "accept"]) == -1.0
    # One category used by both raters: p_e = 1, kappa is undefined.
    assert math.isnan(stats.cohen_kappa(["accept"] * 4, ["accept"] * 4))
    assert math.isnan(stats.cohen_kappa([], []))
    # One rater always says one thing: p_e = p(other says it), kappa = 0 when p_o = p_e.
    assert stats.cohen_kappa(["accept"] * 4, ["accept", "reject", "accept", "reject"]) == 0.0
    with pytest.raises(ValueError, match="different numbers"):
        stats.cohen_kappa(["accept"], [])


@pytest.mark.parametrize("votes,expected", [
    ([], None), (["accept"], "accept"), (["reject", "reject", "accept"], "reject"),
    (["accept", "reject"], "unsure"), (["unsure", "unsure", "accept"], "unsure"),
    (["accept", "accept", "reject", "reject", "unsure"], "unsure"),
    (["accept", "accept", "reject", "unsure"], "accept")])
def test_majority_vote(votes, expected):
    assert stats.majority_vote(votes) == expected


def test_majority_vote_rejects_unknown_decisions():
    with pytest.raises(ValueError, match="unknown decision 'yes'"):
        stats.majority_vote(["accept", "yes"])


def test_gold_accuracy_by_hand():
    rows = [("ann", "accept", "accept"), ("ann", "reject", "accept"), ("ann", "reject", "reject"),
            ("ann", "unsure", "reject"), ("bob", "accept", "reject"), ("cy", "unsure", "accept")]
    out = stats.gold_accuracy(rows)
    assert out["ann"]["k"] == 2 and out["ann"]["n"] == 3 and out["ann"]["unsure"] == 1
    assert out["ann"]["value"] == pytest.approx(2 / 3)
    assert (out["ann"]["low"], out["ann"]["high"]) == stats.wilson_interval(2, 3)
    assert out["bob"]["value"] == 0.0 and out["bob"]["n"] == 1
    assert out["cy"]["value"] is None and out["cy"]["n"] == 0 and out["cy"]["unsure"] == 1
    assert stats.gold_accuracy([]) == {}
    with pytest.raises(ValueError, match="correct decision"):
        stats.gold_accuracy([("ann", "accept", "unsure")])


def ratio_reference(a, b, z=Z95):
    """Ratio of two Horvitz-Thompson totals, R = sum a / sum b, and its linearisation
    interval R -+ z sqrt(n / (n - 1) sum (a - R b)^2) / sum b (Cochran ch. 6), in [0, 1]."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ratio = a.sum() / b.sum()
    half = z * np.sqrt(len(a) / (len(a) - 1) * ((a - ratio * b) ** 2).sum()) / b.sum()
    return float(ratio), max(0.0, float(ratio - half)), min(1.0, float(ratio + half))


@pytest.mark.parametrize("seed", range(4))
def test_ratio_estimate_matches_reference(seed):
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.05, 1.0, 300)
    y = rng.random(300) < 0.6
    hit = y & (rng.random(300) < 0.7)
    a, b = hit / q, y / q
    got = stats.ratio_estimate(a.tolist(), b.tolist())
    value, low, high = ratio_reference(a, b)
    assert got["n"] == 300
    np.testing.assert_allclose([got["value"], got["low"], got["high"]], [value, low, high],
                               rtol=1e-12)
    assert got["low"] < got["value"] < got["high"]


def test_ratio_estimate_degenerate_cases():
    assert stats.ratio_estimate([], []) == {"value": None, "low": 0.0, "high": 1.0, "n": 0}
    assert stats.ratio_estimate([0, 0], [0, 0])["value"] is None  # nothing in the categories
    assert stats.ratio_estimate([2.0], [2.0]) == {"value": 1.0, "low": 0.0, "high": 1.0,
                                                 "n": 1}
    # a = R b leaves the linearisation no width: Wilson at Kish's n = (sum b)^2 / sum b^2.
    every = stats.ratio_estimate([1.0, 3.0, 0.0], [1.0, 3.0, 0.0])  # every positive found
    n_eff = 16 / 10
    assert every["value"] == 1.0 and every["high"] == 1.0
    assert every["low"] == pytest.approx(wilson_reference(n_eff, n_eff)[0])
    none = stats.ratio_estimate([0.0, 0.0, 0.0], [1.0, 2.0, 0.0])
    assert none["value"] == 0.0 and none["low"] == 0.0
    assert none["high"] == pytest.approx(wilson_reference(0.0, 9 / 5)[1])
    for a, b, message in (([1.0], [1.0, 2.0], "length"), ([-1.0], [1.0], "non-negative"),
                          ([float("nan")], [1.0], "finite")):
        with pytest.raises(ValueError, match=message):
            stats.ratio_estimate(a, b)
