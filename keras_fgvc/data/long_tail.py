"""Long-tailed subsampling (CB loss, Sec. 5.4.1) and the balanced stage-2 subset (Ch. 4.2.2)."""

import dataclasses

import numpy as np

from keras_fgvc.data.splits import check_no_empty_class
from keras_fgvc.data.task import Task

IMBALANCE_FACTORS = (10, 20, 50, 100, 200)


def long_tail_counts(n_max, num_classes, imbalance):
    """Per-class counts n_i = n_max * mu^i with mu = (1 / imbalance)^(1 / (C - 1)).

    Dissertation Sec. 5.4.1 (long-tailed CIFAR, written there as
    n = n_i mu^i with n_i the original count, 5,000 for every CIFAR class):
    class i (0-indexed) keeps ``n_max * mu^i`` images; the imbalance factor
    is the largest class over the smallest, so mu^(C-1) = 1 / imbalance. Counts are floored (as the
    authors' code does with ``int``), with a 1e-9 tolerance against rounding
    error so that n_{C-1} = n_max / imbalance when that is an integer.

    Args:
        n_max: images of the largest class (class 0).
        num_classes: C.
        imbalance: n_0 / n_{C-1}, >= 1 (10..200 in the paper).

    Returns:
        int64 [C], non-increasing, each >= 1.

    Example:
        >>> long_tail_counts(5000, 10, 100).tolist()
        [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    """
    if imbalance < 1:
        raise ValueError(f"imbalance must be >= 1, got {imbalance}.")
    if num_classes < 1 or n_max < 1:
        raise ValueError(f"num_classes={num_classes} and n_max={n_max} must be >= 1.")
    if num_classes == 1:
        return np.array([int(n_max)], np.int64)
    mu = (1.0 / imbalance) ** (1.0 / (num_classes - 1))
    counts = np.floor(n_max * mu ** np.arange(num_classes) + 1e-9).astype(np.int64)
    return np.maximum(counts, 1)


def _split_of(task_or_split):
    return task_or_split.train if isinstance(task_or_split, Task) else task_or_split


def _names(task_or_split):
    return task_or_split.class_names if isinstance(task_or_split, Task) else None


def _with_train(task_or_split, indices, suffix):
    if isinstance(task_or_split, Task):
        return dataclasses.replace(task_or_split, name=f"{task_or_split.name}_{suffix}",
                                   train=task_or_split.train.subset(indices))
    return task_or_split.subset(indices)


def long_tail_subsample(task, imbalance, n_max=None, class_order=None, seed=0):
    """Long-tailed version of a (balanced) task: class i keeps n_max * mu^i images.

    Only the training split is subsampled; val and test are unchanged (Sec. 5.4.1).

    Args:
        task: a `Task` (its train split is subsampled) or a `Split`.
        imbalance: imbalance factor (10, 20, 50, 100, 200 in the paper).
        n_max: images kept for the largest class; default: the smallest
            class count, so every class can supply its share.
        class_order: the class that becomes i-th largest; default 0..C-1
            (for a background task the background keeps index 0, i.e. n_max).
        seed: NumPy seed of which images are kept.

    Returns:
        same type as `task`; a Task is renamed ``<name>_lt<imbalance>``.

    Raises:
        ValueError: an empty class, a class with fewer than its n_i images,
            or a bad `class_order`.

    Example:
        >>> lt = long_tail_subsample(fashion_task, imbalance=100)  # doctest: +SKIP
    """
    split = _split_of(task)
    num_classes = task.num_classes if isinstance(task, Task) else int(split.labels.max()) + 1
    counts = check_no_empty_class(split.labels, num_classes, "long_tail_subsample",
                                  _names(task))
    order = np.arange(num_classes) if class_order is None else np.asarray(class_order)
    if sorted(order.tolist()) != list(range(num_classes)):
        raise ValueError(f"class_order must be a permutation of 0..{num_classes - 1}.")
    n_max = int(counts.min()) if n_max is None else int(n_max)
    target = long_tail_counts(n_max, num_classes, imbalance)
    rng = np.random.default_rng(seed)
    keep = []
    for rank, c in enumerate(order):
        members = np.flatnonzero(split.labels == c)
        if len(members) < target[rank]:
            raise ValueError(
                f"class {int(c)} has {len(members)} images but needs {int(target[rank])} "
                f"(n_max={n_max}, imbalance={imbalance})."
            )
        keep.append(rng.choice(members, size=target[rank], replace=False))
    return _with_train(task, np.sort(np.concatenate(keep)), f"lt{imbalance:g}")


def balanced_subset(task, max_per_class, seed=0):
    """A more balanced subset for stage-2 fine-tuning (dissertation Ch. 4.2.2).

    What the text fixes: stage 1 trains on the whole long-tailed training
    set; stage 2 fine-tunes with a small learning rate (1e-6) on "a subset
    containing more balanced data", drawn from that same training set, so
    that the network can "rebalance among all categories". It gives no rule
    for building the subset (Fig. 4.2 only plots both distributions), and it
    states that nothing can be done about the tail's lack of data (about
    1,500 iNat classes have fewer than 30 images). So every category stays
    in the subset, the tail keeps all its images, and only the head is
    reduced: each class keeps ``min(count, max_per_class)`` images, drawn at
    random without replacement. The head-to-tail ratio falls from
    ``max(count) / min(count)`` to ``min(max(count), max_per_class) / min(count)``
    (the subset is more balanced whenever ``max_per_class < max(count)``).
    Val and test are unchanged.

    Args:
        task: a `Task` (its train split is reduced) or a `Split`.
        max_per_class: the cap, >= 1.
        seed: NumPy seed.

    Returns:
        same type as `task`; a Task is renamed ``<name>_balanced<cap>``.

    Raises:
        ValueError: `max_per_class` < 1 or a class without training images.

    Example:
        >>> stage2 = balanced_subset(inat_task, max_per_class=30)  # doctest: +SKIP
    """
    if max_per_class < 1:
        raise ValueError(f"max_per_class must be >= 1, got {max_per_class}.")
    split = _split_of(task)
    num_classes = task.num_classes if isinstance(task, Task) else int(split.labels.max()) + 1
    check_no_empty_class(split.labels, num_classes, "balanced_subset", _names(task))
    rng = np.random.default_rng(seed)
    keep = []
    for c in range(num_classes):
        members = np.flatnonzero(split.labels == c)
        keep.append(rng.choice(members, size=min(len(members), max_per_class), replace=False))
    return _with_train(task, np.sort(np.concatenate(keep)), f"balanced{max_per_class}")
