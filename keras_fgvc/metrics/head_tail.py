"""Head vs tail breakdown of top-k error (dissertation Table 4.4: >= 100 vs < 100 images)."""

import numpy as np

from keras_fgvc.metrics._validation import check_scores_and_labels
from keras_fgvc.metrics.topk import top_k_correct


def head_tail_breakdown(scores, labels, train_counts, head_threshold=100, ks=(1, 5)):
    """Top-k error on examples of head classes and of tail classes.

    A class is "head" when it has at least `head_threshold` training images
    (Table 4.4 uses 100), "tail" otherwise; each test example counts for the
    group of its true class.

    Args:
        scores: [n, C] scores or probabilities.
        labels: int [n] in [0, C).
        train_counts: [C] training images per class.
        head_threshold: the head/tail boundary (default 100).
        ks: the k of the top-k errors (default top-1 and top-5).

    Returns:
        {"head": {...}, "tail": {...}, "head_threshold": int}; each group has
        "num_classes", "num_examples" and "top{k}_error" for each k (None when
        the group has no test example).
    """
    scores, labels = check_scores_and_labels(scores, labels)
    counts = np.asarray(train_counts)
    if counts.shape != (scores.shape[1],):
        raise ValueError(
            f"`train_counts` must have one count per class ({scores.shape[1]}). "
            f"Received shape={counts.shape}"
        )
    if not np.issubdtype(counts.dtype, np.number) or np.any(counts < 0):
        raise ValueError("`train_counts` must be non-negative numbers.")
    is_head = counts >= head_threshold
    correct = {k: top_k_correct(scores, labels, k) for k in ks}
    result = {"head_threshold": head_threshold}
    for name, group in (("head", is_head), ("tail", ~is_head)):
        in_group = group[labels]
        entry = {"num_classes": int(group.sum()), "num_examples": int(in_group.sum())}
        for k in ks:
            entry[f"top{k}_error"] = (
                float(1.0 - np.mean(correct[k][in_group])) if in_group.any() else None
            )
        result[name] = entry
    return result
