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
