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


def agresti_coull_variance(k, n, z=Z95):
    """Agresti-Coull: p~ = (k + z^2/2) / (n + z^2), variance p~ (1 - p~) / (n + z^2)."""
    centre = (k + z**2 / 2) / (n + z**2)
    return centre * (1 - centre) / (n + z**2)


def clip_reference(value, half):
    """Clip the value to [0, 1]; an interval wholly past an end keeps its half-width inside."""
    centre = float(np.clip(value, 0, 1))
    return [centre, max(0.0, min(value, centre) - half), min(1.0, max(value, centre) + half)]


def corrected_proportion_reference(k, n, fa, fa_n, fr, fr_n, z=Z95):
    """Rogan-Gladen: p(obs, f, r) = (obs - f) / (1 - f - r); delta-method variance over obs,
    f and r (Agresti-Coull variances), its gradient taken by central differences of p."""
    def p(obs, f, r):
        return (obs - f) / (1 - f - r)

    x = np.array([k / n, fa / fa_n, fr / fr_n])
    grad = np.zeros(3)
    for i in range(3):
        step = np.zeros(3)
        step[i] = 1e-6
        grad[i] = (p(*(x + step)) - p(*(x - step))) / 2e-6
    var = np.array([agresti_coull_variance(k, n, z), agresti_coull_variance(fa, fa_n, z),
                    agresti_coull_variance(fr, fr_n, z)])
    return clip_reference(p(*x), z * np.sqrt(grad**2 @ var))


def corrected_ratio_reference(s, y, w, fa, fa_n, z=Z95):
    """R(f) = sum s w (y - f) / sum w (y - f); variance: the linearisation of the ratio
    at f plus (dR/df)^2 var(f), dR/df computed by a central difference of R(f)."""
    s, y, w = (np.asarray(v, np.float64) for v in (s, y, w))
    f = fa / fa_n

    def ratio(f):
        return (s * w * (y - f)).sum() / (w * (y - f)).sum()

    value, n = ratio(f), len(w)
    a, b = s * w * (y - f), w * (y - f)
    sampling = n / (n - 1) * ((a - value * b) ** 2).sum() / b.sum() ** 2
    slope = (ratio(f + 1e-7) - ratio(f - 1e-7)) / 2e-7
    return clip_reference(value, z * np.sqrt(sampling + slope**2 *
                                             agresti_coull_variance(fa, fa_n, z)))


def _rate(k, n):
    return stats.proportion(k, n)


@pytest.mark.parametrize("k,n,fa,fa_n,fr,fr_n", [(70, 100, 3, 60, 5, 60), (1, 40, 0, 20, 2, 30),
                                                 (40, 40, 1, 50, 0, 50), (500, 900, 9, 80, 4, 70)])
def test_corrected_proportion_matches_reference(k, n, fa, fa_n, fr, fr_n):
    got = stats.corrected_proportion(k, n, _rate(fa, fa_n), _rate(fr, fr_n))
    np.testing.assert_allclose([got["value"], got["low"], got["high"]],
                               corrected_proportion_reference(k, n, fa, fa_n, fr, fr_n),
                               rtol=1e-7, atol=1e-9)
    assert got["n"] == n


def test_corrected_proportion_degenerate_cases():
    none = _rate(0, 0)
    assert stats.corrected_proportion(0, 0, _rate(1, 9), _rate(1, 9))["value"] is None
    assert "gold" in stats.corrected_proportion(5, 9, none, _rate(1, 9))["reason"]
    assert "gold" in stats.corrected_proportion(5, 9, _rate(1, 9), none)["reason"]
    worse_than_chance = stats.corrected_proportion(5, 9, _rate(5, 9), _rate(4, 9))
    assert worse_than_chance["value"] is None and "1 or more" in worse_than_chance["reason"]
    # No errors seen: the value is the raw share, but the interval is wider than Wald's
    # because a rate of 0 out of 20 is not known to be 0.
    clean = stats.corrected_proportion(30, 40, _rate(0, 20), _rate(0, 20))
    assert clean["value"] == 0.75
    wald = Z95 * math.sqrt(0.75 * 0.25 / 40)
    assert clean["high"] - clean["value"] > wald
    # Every answer accept: the interval still has a width (at least the raw Wilson's lower
    # side would be far too narrow with Wald's p (1 - p) / n = 0).
    every = stats.corrected_proportion(5, 5, _rate(0, 200), _rate(0, 200))
    assert every["value"] == 1.0 and every["high"] == 1.0 and every["low"] < 0.8
    # Fewer accepts than the false-accept rate explains: clipped at 0, not negative, and
    # the interval keeps its width above 0 instead of collapsing to [0, 0].
    below = stats.corrected_proportion(1, 100, _rate(10, 100), _rate(0, 100))
    assert below["value"] == 0.0 == below["low"] and below["high"] > 0.02
    with pytest.raises(ValueError, match="k"):
        stats.corrected_proportion(5, 4, _rate(0, 9), _rate(0, 9))


@pytest.mark.parametrize("seed", range(3))
def test_corrected_ratio_matches_reference(seed):
    rng = np.random.default_rng(seed)
    w = 1 / rng.uniform(0.05, 1.0, 400)
    y = (rng.random(400) < 0.5).astype(float)
    s = ((rng.random(400) < 0.6) & (y > 0)).astype(float)
    s[:5] = 1.0  # some selected units answered reject (false accepts of the argmax...)
    got = stats.corrected_ratio(s.tolist(), y.tolist(), w.tolist(), _rate(3, 50), _rate(2, 50))
    np.testing.assert_allclose([got["value"], got["low"], got["high"]],
                               corrected_ratio_reference(s, y, w, 3, 50), rtol=1e-6)
    assert got["low"] < got["value"] < got["high"] and got["n"] == 400


def test_corrected_ratio_degenerate_cases():
    s, y, w = [1, 0, 0, 1], [1, 1, 0, 0], [1.0, 4.0, 2.0, 1.0]
    # With f = 0 the value is the uncorrected ratio (the interval still carries f's doubt).
    none = _rate(0, 0)
    clean = stats.corrected_ratio(s, y, w, _rate(0, 30), none)  # r unmeasured: it cancels
    assert clean["value"] == stats.ratio_estimate([1, 0, 0, 0], [1, 4, 0, 0])["value"] == 0.2
    assert stats.corrected_ratio(s, y, w, none, _rate(0, 9))["value"] is None
    assert stats.corrected_ratio([1], [1], [1.0], _rate(0, 9), none)["value"] is None
    chance = stats.corrected_ratio(s, y, w, _rate(5, 10), _rate(5, 10))  # f + r = 1
    assert chance["value"] is None and "1 or more" in chance["reason"]
    # No more accepts than false accepts would give: no estimate, not a negative one.
    phantom = stats.corrected_ratio([0] * 10, [1] + [0] * 9, [1.0] * 10, _rate(3, 10), none)
    assert phantom["value"] is None and "false-accept" in phantom["reason"]
    # Every unit counted in the numerator (R = 1) or none (R = 0): the linearisation has no
    # width; Agresti-Coull at Kish's n = (sum b)^2 / sum b^2 keeps one. (f's slope,
    # (R sum w - sum s w) / sum b, is 0 in both cases, so that is the whole variance.)
    ones = stats.corrected_ratio([1, 1, 1], [1, 1, 0], [1.0, 3.0, 2.0], _rate(0, 50), none)
    n_eff = 16 / 10
    assert ones["value"] == 1.0 and ones["high"] == 1.0
    assert ones["low"] == pytest.approx(1 - Z95 * math.sqrt(agresti_coull_variance(n_eff,
                                                                                   n_eff)))
    zeros = stats.corrected_ratio([0, 0, 0], [1, 1, 0], [1.0, 3.0, 2.0], _rate(0, 50), none)
    assert zeros["value"] == 0.0 == zeros["low"] and zeros["high"] > 0.2
    for args, message in (((s, y, w[:3]), "length"), (([2, 0, 0, 1], y, w), "0 or 1"),
                          ((s, y, [1.0, 0.0, 1.0, 1.0]), "positive")):
        with pytest.raises(ValueError, match=message):
            stats.corrected_ratio(*args, _rate(0, 9), _rate(0, 9))
