"""Long-tailed subsampling (dissertation Sec. 5.4.1) and the stage-2 balanced subset (Ch. 4.2.2)."""

import numpy as np
import pytest

from keras_fgvc.data import balanced_subset, long_tail_counts, long_tail_subsample
from keras_fgvc.data.task import Split, Task


def _reference_counts(n_max, c, imbalance):
    # n_i = n_max * mu^i, mu = (1 / imbalance)^(1 / (C - 1)), floored.
    mu = (1.0 / imbalance) ** (1.0 / (c - 1))
    return [int(n_max * mu**i + 1e-9) for i in range(c)]


@pytest.mark.parametrize("imbalance", [10, 20, 50, 100, 200])
@pytest.mark.parametrize("n_max,c", [(5000, 10), (500, 100), (6000, 10)])
def test_counts_follow_the_equation(imbalance, n_max, c):
    counts = long_tail_counts(n_max, c, imbalance)
    assert counts.tolist() == _reference_counts(n_max, c, imbalance)
    assert counts[0] == n_max and np.all(np.diff(counts) <= 0)
    if n_max / imbalance >= 20:  # flooring a tiny tail count changes the ratio
        assert counts[0] / counts[-1] == pytest.approx(imbalance, rel=0.05)


def test_known_cifar10_counts_and_degenerate_cases():
    # The CB-loss long-tailed CIFAR-10 with imbalance 100.
    assert long_tail_counts(5000, 10, 100).tolist() == [
        5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert long_tail_counts(7, 4, 1).tolist() == [7, 7, 7, 7]  # imbalance 1: unchanged
    assert long_tail_counts(9, 1, 50).tolist() == [9]
    with pytest.raises(ValueError, match="imbalance"):
        long_tail_counts(10, 3, 0.5)


def _task(per_class):
    y = np.repeat(np.arange(len(per_class)), per_class)
    split = Split(labels=y, images=np.arange(len(y)).reshape(-1, 1, 1, 1).astype(np.uint8))
    return Task("t", [str(i) for i in range(len(per_class))], split, split, split,
                has_background=False)


def test_long_tail_subsample_task():
    task = _task([60, 60, 60, 60])
    lt = long_tail_subsample(task, imbalance=10, seed=0)
    np.testing.assert_array_equal(lt.class_counts(), long_tail_counts(60, 4, 10))
    assert lt.name == "t_lt10" and len(lt.test) == len(task.test)
    again = long_tail_subsample(task, imbalance=10, seed=0)
    np.testing.assert_array_equal(lt.train.images, again.train.images)
    other = long_tail_subsample(task, imbalance=10, seed=1)
    assert not np.array_equal(lt.train.images, other.train.images)
    reordered = long_tail_subsample(task, imbalance=10, class_order=[3, 2, 1, 0])
    np.testing.assert_array_equal(reordered.class_counts(), long_tail_counts(60, 4, 10)[::-1])
    split_only = long_tail_subsample(task.train, imbalance=10, n_max=30)
    np.testing.assert_array_equal(np.bincount(split_only.labels), long_tail_counts(30, 4, 10))


def test_long_tail_bad_input():
    with pytest.raises(ValueError, match="class 2 .'2'. has no examples"):
        long_tail_subsample(_task([5, 5, 0, 5]), imbalance=10)
    with pytest.raises(ValueError, match="class 0 has 5 images but needs 9"):
        long_tail_subsample(_task([5, 5, 5]), imbalance=10, n_max=9)
    with pytest.raises(ValueError, match="permutation"):
        long_tail_subsample(_task([5, 5, 5]), imbalance=10, class_order=[0, 0, 1])


def test_balanced_subset_caps_the_head_and_keeps_the_tail():
    task = _task([100, 40, 7, 1])
    sub = balanced_subset(task, max_per_class=30, seed=0)
    assert sub.class_counts().tolist() == [30, 30, 7, 1]
    assert sub.name == "t_balanced30"
    images = sub.train.images.ravel()
    assert len(np.unique(images)) == len(images)  # without replacement
    np.testing.assert_array_equal(
        sub.train.images, balanced_subset(task, max_per_class=30, seed=0).train.images)
    with pytest.raises(ValueError, match="max_per_class"):
        balanced_subset(task, 0)
    with pytest.raises(ValueError, match="has no examples"):
        balanced_subset(_task([3, 0, 2]), 2)
