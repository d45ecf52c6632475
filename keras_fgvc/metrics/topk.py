"""Top-k accuracy and error (iNat results are top-1 / top-5 error, dissertation Ch. 4)."""

import numpy as np

from keras_fgvc.metrics._validation import check_scores_and_labels


def _check_k(k):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"`k` must be an int >= 1. Received: {k!r}")
    return int(k)


def top_k_correct(scores, labels, k=1):
    """Whether each example's true class is among its k highest scores.

    The true class' rank is the number of classes with a higher score plus
    the tied ones with a lower index (ties go to the lower index, as
    `np.argmax`). k larger than the number of classes counts every example.

    Returns:
        bool array [n].
    """
    k = _check_k(k)
    scores, labels = check_scores_and_labels(scores, labels)
    true_score = scores[np.arange(len(labels)), labels][:, None]
    index = np.arange(scores.shape[1])[None, :]
    ahead = (scores > true_score) | ((scores == true_score) & (index < labels[:, None]))
    return ahead.sum(axis=1) < k


def top_k_accuracy(scores, labels, k=1):
    """Fraction of examples whose true class is in the top k (sklearn's top_k_accuracy_score)."""
    return float(np.mean(top_k_correct(scores, labels, k)))


def top_k_error(scores, labels, k=1):
    """1 - top-k accuracy."""
    return 1.0 - top_k_accuracy(scores, labels, k)
