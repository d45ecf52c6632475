"""evaluate_background_task / evaluate_classification and input validation."""

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, top_k_accuracy_score

from keras_fgvc.metrics import (
    evaluate_background_task,
    evaluate_classification,
    mean_average_precision,
    per_class_average_precision,
    top_k_error,
)


def _task(seed, n=400, num_classes=5):
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random(n) < 0.7, 0, rng.integers(1, num_classes, n))
    logits = rng.normal(size=(n, num_classes))
    logits[np.arange(n), labels] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs.astype("float32"), labels


def test_evaluate_background_task():
    probs, labels = _task(0)
    result = evaluate_background_task(probs, labels)
    json.dumps(result, allow_nan=False)  # JSON-safe for metrics.json
    fg = range(1, 5)
    ap = [average_precision_score(labels == c, probs[:, c]) for c in fg]
    np.testing.assert_allclose(result["average_precision"], ap)
    np.testing.assert_allclose(result["mAP"], np.mean(ap))
    np.testing.assert_allclose(
        result["macro_f1"],
        f1_score(labels, probs.argmax(1), labels=list(fg), average="macro", zero_division=0),
    )
    assert len(result["thresholds"]) == 4 and len(result["best_f1"]) == 4
    assert result["macro_f1_best_thresholds"] >= result["macro_f1"] - 0.2
    assert result["num_foreground_classes"] == 4 and result["num_examples"] == 400


def test_evaluate_background_task_missing_class_is_none():
    probs, labels = _task(1)
    labels[labels == 3] = 0
    with pytest.warns(RuntimeWarning):
        result = evaluate_background_task(probs, labels)
    assert result["average_precision"][2] is None and result["f1"][2] is None
    assert result["num_classes_without_positives"] == 1
    json.dumps(result, allow_nan=False)


def test_evaluate_classification():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(10), 300)
    labels = rng.integers(0, 10, 300)
    counts = np.array([500, 400, 300, 200, 100, 99, 50, 20, 10, 5])
    result = evaluate_classification(probs, labels, train_counts=counts)
    json.dumps(result, allow_nan=False)
    for k in (1, 5):
        acc = top_k_accuracy_score(labels, probs, k=k, labels=np.arange(10))
        np.testing.assert_allclose(result[f"top{k}_accuracy"], acc)
        np.testing.assert_allclose(result[f"top{k}_error"], 1 - acc)
    head = labels < 5
    np.testing.assert_allclose(
        result["head"]["top1_error"], top_k_error(probs[head], labels[head], 1)
    )
    np.testing.assert_allclose(
        result["tail"]["top5_error"], top_k_error(probs[~head], labels[~head], 5)
    )
    np.testing.assert_allclose(
        result["macro_f1"], f1_score(labels, probs.argmax(1), average="macro", zero_division=0)
    )
    assert "head" not in evaluate_classification(probs, labels)


@pytest.mark.parametrize(
    "scores, labels, match",
    [
        (np.zeros((3, 4)), np.zeros(2, int), "labels"),  # length mismatch
        (np.zeros((3, 4)), np.array([0, 1, 4]), r"\[0, 4\).*4"),  # out of range
        (np.zeros((3, 4)), np.array([0, -1, 2]), "-1"),
        (np.array([[0.1, np.nan], [0.2, 0.8]]), np.array([0, 1]), "NaN"),
        (np.array([[0.1, np.inf], [0.2, 0.8]]), np.array([0, 1]), "infinite"),
        (np.zeros(4), np.zeros(4, int), "2-D"),
        (np.zeros((0, 3)), np.zeros(0, int), "empty"),
        (np.zeros((2, 1)), np.zeros(2, int), "background"),
        (np.zeros((2, 3)), np.array([0.5, 1.0]), "integer"),
        (np.array([["a", "b"], ["c", "d"]]), np.zeros(2, int), "numeric"),
    ],
)
def test_bad_input(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        mean_average_precision(scores, labels)


def test_bad_input_in_evaluate_functions():
    with pytest.raises(ValueError, match="NaN"):
        evaluate_background_task(np.full((2, 3), np.nan), [0, 1])
    with pytest.raises(ValueError, match="labels"):
        evaluate_classification(np.zeros((2, 3)), [0, 3])
    with pytest.raises(ValueError, match="train_counts"):
        evaluate_classification(np.zeros((2, 3)), [0, 1], train_counts=[1, 2])


def test_accepts_integer_like_inputs():
    ap = per_class_average_precision([[0, 1], [1, 0], [0, 1]], [[1], [0], [1]])
    np.testing.assert_allclose(ap, [1.0])
