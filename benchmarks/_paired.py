"""Paired measurements on a noisy host: each target run right after its own baseline run.

On a shared machine the same measurement moves by 30-100% from minute to
minute, so a ratio of two medians taken at different times says little. A
benchmark runs the baseline immediately before each target run (`order` gives
each round's target order, shuffled per round with a fixed seed), and
`median_row` reports medians of the target's figures together with the median
of the per-pair ratios and differences.
"""

import random
import statistics

FIELDS = ("p50_ms", "p99_ms", "requests_per_s")


def order(targets, round_index, seed=0):
    """The targets of round `round_index` in a shuffled order (the same for the same seed)."""
    shuffled = list(targets)
    random.Random(seed * 1000 + round_index).shuffle(shuffled)
    return shuffled


def median_row(pairs):
    """Medians over ``[(target_stats, baseline_stats)]`` (dicts with `FIELDS`).

    Returns the target's medians, ``ratio_to_in_process`` (the median over pairs
    of target / baseline requests/s), ``added_p50_ms`` (the median over pairs of
    target p50 - baseline p50), the baseline's median requests/s, and every pair.
    """
    if not pairs:
        raise ValueError("median_row needs at least one (target, baseline) pair.")
    ratios = [t["requests_per_s"] / b["requests_per_s"] for t, b in pairs]
    added = [t["p50_ms"] - b["p50_ms"] for t, b in pairs]
    row = {k: round(statistics.median(t[k] for t, _ in pairs), 3 if k.endswith("ms") else 1)
           for k in FIELDS}
    return {**row, "ratio_to_in_process": round(statistics.median(ratios), 3),
            "added_p50_ms": round(statistics.median(added), 3),
            "in_process_requests_per_s": round(
                statistics.median(b["requests_per_s"] for _, b in pairs), 1),
            "rounds": [{**{k: t[k] for k in FIELDS}, "in_process": {k: b[k] for k in FIELDS},
                        "ratio_to_in_process": round(q, 3)}
                       for (t, b), q in zip(pairs, ratios)]}
