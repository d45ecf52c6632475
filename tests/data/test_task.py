"""Split / Task contract, including the teacher_probabilities and metadata additions."""

import numpy as np
import pytest

from keras_fgvc.data import Split, Task


def test_split_subset_carries_every_field():
    probs = np.arange(8, dtype=np.float64).reshape(4, 2)
    split = Split(labels=[0, 1, 2, 1], paths=["a", "b", "c", "d"], teacher_labels=[1, 0, -1, 1],
                  teacher_probabilities=probs)
    assert split.teacher_probabilities.dtype == np.float32
    sub = split.subset([2, 0])
    assert sub.labels.tolist() == [2, 0] and sub.paths.tolist() == ["c", "a"]
    assert sub.teacher_labels.tolist() == [-1, 1]
    np.testing.assert_array_equal(sub.teacher_probabilities, probs[[2, 0]])
    with pytest.raises(ValueError, match="teacher_probabilities has 3 entries but labels has 4"):
        Split(labels=[0, 1, 2, 1], paths=["a"] * 4, teacher_probabilities=probs[:3])


def test_task_checks_labels_and_reports_background():
    split = Split(labels=[0, 0, 0, 1], images=np.zeros((4, 2, 2, 1), np.uint8))
    task = Task("t", ["background", "rare"], split, split, split)
    assert task.metadata is None and task.background_fraction() == 0.75
    assert task.summary().endswith("background 75.00% of train")
    bad = Split(labels=[0, 2], images=np.zeros((2, 2, 2, 1), np.uint8))
    with pytest.raises(ValueError, match="train label 2 is outside the class range"):
        Task("t", ["background", "rare"], bad, split, split)
