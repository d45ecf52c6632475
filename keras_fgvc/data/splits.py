"""Helpers shared by the loaders: checked paths, validation carving, label checks."""

import os

import numpy as np


def require_path(path, what="data path"):
    """Returns `path` as str, or raises FileNotFoundError naming it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_lines(path, what="file"):
    """Non-empty, stripped lines of a text file (FileNotFoundError if missing)."""
    require_path(path, what)
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def check_labels(labels, num_classes, where):
    """Raises ValueError when a label lies outside [0, num_classes)."""
    labels = np.asarray(labels)
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if len(bad):
        raise ValueError(
            f"{where}: label {int(bad[0])} is outside the class range [0, {num_classes - 1}]."
        )


def check_no_empty_class(labels, num_classes, where, class_names=None):
    """Raises ValueError naming the first class with no example."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    empty = np.flatnonzero(counts[:num_classes] == 0)
    if len(empty):
        c = int(empty[0])
        name = f" ({class_names[c]!r})" if class_names is not None else ""
        raise ValueError(
            f"{where}: class {c}{name} has no examples ({len(empty)} empty classes); "
            "every class needs at least one."
        )
    return counts


def carve_validation(split, fraction, seed=0):
    """Splits `split` into (train, val), stratified per class, seeded.

    Each class gives ``round(fraction * count)`` examples to val (at most
    count - 1, so no class disappears from train).

    Args:
        split: a `Split`.
        fraction: share of each class moved to val, in [0, 1).
        seed: NumPy seed.

    Returns:
        (train, val) `Split`s; val is empty when `fraction` is 0.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction}.")
    rng = np.random.default_rng(seed)
    val_idx = []
    for c in np.unique(split.labels):
        members = rng.permutation(np.flatnonzero(split.labels == c))
        k = min(int(round(fraction * len(members))), len(members) - 1)
        val_idx.append(members[:k])
    val_idx = np.sort(np.concatenate(val_idx)) if val_idx else np.zeros(0, np.int64)
    train_idx = np.setdiff1d(np.arange(len(split)), val_idx)
    return split.subset(train_idx), split.subset(val_idx)


def train_val_test(train, test, val_fraction, seed):
    """(train, val, test): val carved from train, or val = test when fraction is 0."""
    if val_fraction:
        train, val = carve_validation(train, val_fraction, seed)
        return train, val, test
    return train, test, test
