"""Statistics of the labelling: confidence intervals, agreement, majority vote, gold accuracy.

Pure Python (no NumPy needed), each written from its formula:

- `wilson_interval`: the Wilson score interval for a binomial proportion
  (Wilson 1927), ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``.
- `cohen_kappa`: ``(p_o - p_e) / (1 - p_e)`` for two raters (Cohen 1960).
- `majority_vote`: the decision with strictly the most votes; a tie is 'unsure'.
- `gold_accuracy`: each labeler's accuracy on gold items, with its Wilson interval.
- `ratio_estimate`: a ratio of two Horvitz-Thompson sums over a uniform
  sample, ``R = sum(a) / sum(b)``, with the linearisation (delta-method)
  interval ``R -+ z sqrt(n / (n - 1) sum((a - R b)^2)) / sum(b)`` (Cochran,
  Sampling Techniques, ch. 6), clipped to [0, 1]; where it has no width (every
  a_i = R b_i, so R is 0 or 1) the Wilson interval at Kish's effective sample
  size ``sum(b)^2 / sum(b^2)`` instead.
- `corrected_proportion` and `corrected_ratio`: the same two estimates when
  the answers come from labelers who accept a wrong question at rate f and
  reject a right one at rate r (both measured on gold items). An answer then
  says accept with chance ``f + y (1 - f - r)``, so ``(answer - f) / (1 - f - r)``
  is an unbiased stand-in for the truth y (Rogan and Gladen 1978). Precision
  ``(p_obs - f) / (1 - f - r)``; recall ``sum(s w (y - f)) / sum(w (y - f))``
  over the sample (w = 1 / q, s = selected and asks the argmax), where
  1 - f - r cancels. Their 95% intervals add the gold rates' own uncertainty
  to the sampling variance by the delta method, every binomial part with
  Agresti-Coull's variance (so that 0 out of n still has one); the value is
  clipped to [0, 1], and an interval past an end keeps its width inside.
"""

import math
from collections import Counter
from statistics import NormalDist

DECISIONS = ("accept", "reject", "unsure")


def _z(confidence):
    if not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _count(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def wilson_interval(successes, n, confidence=0.95):
    """The Wilson score interval (low, high) of `successes` out of `n` trials.

    n = 0 gives (0.0, 1.0): no data, the whole range.
    """
    successes, n = _count(successes, "successes"), _count(n, "n")
    if successes > n:
        raise ValueError(f"successes ({successes}) > n ({n})")
    z = _z(confidence)
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def proportion(successes, n, confidence=0.95):
    """{'value', 'low', 'high', 'k', 'n'}: k/n (None when n = 0) and its Wilson interval."""
    low, high = wilson_interval(successes, n, confidence)
    return {"value": successes / n if n else None, "low": low, "high": high,
            "k": successes, "n": n}


def ratio_estimate(a, b, confidence=0.95):
    """{'value', 'low', 'high', 'n'}: sum(a) / sum(b) over n sampled units and its interval.

    For a ratio of two totals estimated from the same uniform sample (each unit's
    a_i, b_i already weighted by 1 / its inclusion chance). The value is None and
    the interval (0, 1) when sum(b) = 0; with n < 2 the interval is (0, 1).
    """
    a, b = [float(v) for v in a], [float(v) for v in b]
    if len(a) != len(b):
        raise ValueError(f"a and b differ in length: {len(a)} vs {len(b)}")
    if any(not math.isfinite(v) or v < 0 for v in a + b):
        raise ValueError("a and b must be finite and non-negative")
    n, total = len(a), sum(b)
    if total <= 0:
        return {"value": None, "low": 0.0, "high": 1.0, "n": n}
    ratio = sum(a) / total
    if n < 2:
        return {"value": ratio, "low": 0.0, "high": 1.0, "n": n}
    z = _z(confidence)
    spread = sum((x - ratio * y) ** 2 for x, y in zip(a, b)) * n / (n - 1)
    if spread > 0:
        half = z * math.sqrt(spread) / total
        low, high = max(0.0, ratio - half), min(1.0, ratio + half)
    else:  # every a = R b (R = 0 or 1, as Wald's interval at p = 0): Wilson at Kish's n
        n_eff = total * total / sum(y * y for y in b)
        center = (ratio + z * z / (2 * n_eff)) / (1 + z * z / n_eff)
        half = z * math.sqrt(ratio * (1 - ratio) / n_eff + z * z / (4 * n_eff ** 2)) / (
            1 + z * z / n_eff)
        low, high = max(0.0, center - half), min(1.0, center + half)
        low, high = (0.0, high) if ratio == 0 else (low, 1.0) if ratio == 1 else (low, high)
    return {"value": ratio, "low": low, "high": high, "n": n}


def cohen_kappa(rater_a, rater_b):
    """Cohen's kappa between two raters' labels of the same items.

    Returns NaN when kappa is undefined: no items, or chance agreement p_e = 1
    (both raters gave every item the same single category).
    """
    rater_a, rater_b = list(rater_a), list(rater_b)
    if len(rater_a) != len(rater_b):
        raise ValueError(f"the raters labelled different numbers of items: "
                         f"{len(rater_a)} vs {len(rater_b)}")
    n = len(rater_a)
    if n == 0:
        return float("nan")
    observed = sum(a == b for a, b in zip(rater_a, rater_b)) / n
    count_a, count_b = Counter(rater_a), Counter(rater_b)
    expected = sum(count_a[c] * count_b[c] for c in count_a) / (n * n)
    if expected == 1:
        return float("nan")
    return (observed - expected) / (1 - expected)


def majority_vote(votes):
    """The decision with strictly the most votes; a tie is 'unsure'; no votes is None."""
    votes = list(votes)
    for vote in votes:
        if vote not in DECISIONS:
            raise ValueError(f"unknown decision {vote!r}; expected one of {DECISIONS}")
    if not votes:
        return None
    ranked = Counter(votes).most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return "unsure"
    return ranked[0][0]


def gold_accuracy(rows, confidence=0.95):
    """Each labeler's accuracy on gold items.

    Args:
      rows: iterable of (labeler, decision, correct) where correct is the
        right decision, 'accept' or 'reject'.

    Returns:
      {labeler: {'value', 'low', 'high', 'k', 'n', 'unsure'}}: 'unsure'
      answers are counted apart and left out of the accuracy.
    """
    correct, total, unsure = Counter(), Counter(), Counter()
    for labeler, decision, right in rows:
        if decision not in DECISIONS:
            raise ValueError(f"unknown decision {decision!r} by {labeler!r}")
        if right not in ("accept", "reject"):
            raise ValueError(f"the correct decision must be 'accept' or 'reject', got {right!r}")
        if decision == "unsure":
            unsure[labeler] += 1
            total[labeler] += 0
            continue
        total[labeler] += 1
        correct[labeler] += decision == right
    return {labeler: dict(proportion(correct[labeler], total[labeler], confidence),
                          unsure=unsure[labeler])
            for labeler in sorted(total)}


def _agresti_coull_variance(k, n, z):
    """Agresti-Coull variance of k successes in n: p~ (1 - p~) / (n + z^2), p~ = (k + z^2/2) /
    (n + z^2); unlike Wald's, it is not 0 at k = 0 or k = n. k and n may be fractional."""
    n = n + z * z
    centre = (k + z * z / 2) / n
    return centre * (1 - centre) / n


def _clipped(value, half, n, **extra):
    """value -+ half kept in [0, 1]: the value is clipped, and an interval that lies wholly
    outside [0, 1] keeps its half-width on the inside instead of shrinking to a point."""
    centre = min(1.0, max(0.0, value))
    return {"value": centre, "low": max(0.0, min(value, centre) - half),
            "high": min(1.0, max(value, centre) + half), "n": n, **extra}


def _unavailable(n, reason):
    return {"value": None, "low": 0.0, "high": 1.0, "n": n, "reason": reason}


def corrected_proportion(k, n, false_accept, false_reject, confidence=0.95):
    """k accepts out of n answers, corrected for the labelers' error rates.

    false_accept, false_reject: `proportion` dicts measured on gold items (k
    errors out of n). Returns {'value', 'low', 'high', 'n'}; the value is None
    (with a 'reason') without answers, without both gold rates, or where
    f + r >= 1 (answers no better than chance). The variance of k / n is
    Agresti-Coull's too, so the interval keeps a width at k = 0 or n.
    """
    k, n = _count(k, "k"), _count(n, "n")
    if k > n:
        raise ValueError(f"k ({k}) > n ({n})")
    z = _z(confidence)
    if n == 0:
        return _unavailable(n, "no answers")
    if not false_accept["n"] or not false_reject["n"]:
        return _unavailable(n, "no decided gold items of both kinds")
    f, r = false_accept["value"], false_reject["value"]
    gap = 1 - f - r
    if gap <= 0:
        return _unavailable(n, "the gold error rates add up to 1 or more")
    observed = k / n
    value = (observed - f) / gap
    variance = (_agresti_coull_variance(k, n, z) / gap ** 2
                + ((observed - 1 + r) / gap ** 2) ** 2
                * _agresti_coull_variance(false_accept["k"], false_accept["n"], z)
                + ((observed - f) / gap ** 2) ** 2
                * _agresti_coull_variance(false_reject["k"], false_reject["n"], z))
    return _clipped(value, z * math.sqrt(variance), n)


def corrected_ratio(selected, answers, weights, false_accept, false_reject, confidence=0.95):
    """The recall ratio ``sum(s w (y - f)) / sum(w (y - f))``, corrected for false accepts.

    selected: [n] 0/1, the unit counts in the numerator (selected, asks its
    argmax); answers: [n] 0/1 (1 = accept); weights: [n] 1 / q;
    false_accept, false_reject: `proportion` dicts from gold items (r cancels
    from the ratio; it only tells whether the answers beat chance, f + r < 1).
    Returns {'value', 'low', 'high', 'n'}; the value is None (with a 'reason')
    with n < 2, without decided gold negatives, where f + r >= 1, or where the
    corrected denominator is not positive (no more accepts than false accepts
    would give). Where the linearisation has no width (every unit or none
    counts in the numerator: R = 1 or 0), the sampling part is Agresti-Coull's
    at Kish's effective n, ``sum(b)^2 / sum(b^2)``, as in `ratio_estimate`.
    """
    s, y, w = ([float(v) for v in column] for column in (selected, answers, weights))
    if not len(s) == len(y) == len(w):
        raise ValueError(f"selected, answers and weights differ in length: "
                         f"{len(s)}, {len(y)}, {len(w)}")
    if any(v not in (0.0, 1.0) for v in s + y):
        raise ValueError("selected and answers must be 0 or 1")
    if any(not math.isfinite(v) or v <= 0 for v in w):
        raise ValueError("weights must be finite and positive")
    n, z = len(w), _z(confidence)
    if n < 2:
        return _unavailable(n, "fewer than 2 answers")
    if not false_accept["n"]:
        return _unavailable(n, "no decided gold items whose right answer is reject")
    f = false_accept["value"]
    if false_reject["n"] and f + false_reject["value"] >= 1:
        return _unavailable(n, "the gold error rates add up to 1 or more")
    a = [si * wi * (yi - f) for si, yi, wi in zip(s, y, w)]
    b = [wi * (yi - f) for yi, wi in zip(y, w)]
    total = sum(b)
    if total <= 0:
        return _unavailable(n, "no more accepts than the false-accept rate explains")
    ratio = sum(a) / total
    spread = sum((x - ratio * v) ** 2 for x, v in zip(a, b)) * n / (n - 1)
    if spread > 0:
        sampling = spread / total ** 2
    else:
        n_eff = total * total / sum(v * v for v in b)
        sampling = _agresti_coull_variance(ratio * n_eff, n_eff, z)
    slope = (ratio * sum(w) - sum(si * wi for si, wi in zip(s, w))) / total
    variance = sampling + slope ** 2 * _agresti_coull_variance(false_accept["k"],
                                                               false_accept["n"], z)
    return _clipped(ratio, z * math.sqrt(variance), n)
