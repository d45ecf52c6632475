"""Top-k accuracy / error and the head/tail breakdown (Table 4.4) against scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import top_k_accuracy_score

from keras_fgvc.metrics import head_tail_breakdown, top_k_accuracy, top_k_correct, top_k_error


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_sklearn(k, dtype):
    rng = np.random.default_rng(k)
    labels = rng.integers(0, 8, 100)
    scores = rng.random((100, 8)).astype(dtype)
    expected = top_k_accuracy_score(labels, scores, k=k, labels=np.arange(8))
    np.testing.assert_allclose(top_k_accuracy(scores, labels, k), expected)
    np.testing.assert_allclose(top_k_error(scores, labels, k), 1 - expected)


def test_ties_and_large_k():
    scores = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.2, 0.2, 0.2]])
    # Ties go to the lower index, like argmax.
    np.testing.assert_array_equal(top_k_correct(scores, [0, 1, 2], 1), [True, False, False])
    np.testing.assert_array_equal(top_k_correct(scores, [0, 1, 2], 2), [True, True, False])
    assert top_k_accuracy(scores, [0, 1, 2], 5) == 1.0
    with pytest.raises(ValueError, match="k"):
        top_k_accuracy(scores, [0, 1, 2], 0)


def test_head_tail_breakdown():
    rng = np.random.default_rng(0)
    num_classes = 6
    train_counts = np.array([500, 100, 99, 20, 3, 1000])  # head: 0, 1, 5
    labels = rng.integers(0, num_classes, 300)
    scores = rng.random((300, num_classes))
    result = head_tail_breakdown(scores, labels, train_counts)
    head = np.isin(labels, [0, 1, 5])
    assert result["head"]["num_classes"] == 3 and result["tail"]["num_classes"] == 3
    assert result["head"]["num_examples"] == head.sum()
    for k in (1, 5):
        for name, mask in (("head", head), ("tail", ~head)):
            expected = 1 - top_k_accuracy_score(
                labels[mask], scores[mask], k=k, labels=np.arange(num_classes)
            )
            np.testing.assert_allclose(result[name][f"top{k}_error"], expected)
    # No tail example -> None; bad counts -> ValueError.
    only_head = head_tail_breakdown(scores[head], labels[head], train_counts)
    assert only_head["tail"]["top1_error"] is None
    with pytest.raises(ValueError, match="train_counts"):
        head_tail_breakdown(scores, labels, train_counts[:3])
