"""Helpers shared by the loaders: checked paths, validation carving, label checks."""

import logging
import os

import numpy as np

logger = logging.getLogger(__name__)

# Share of each training class held out as validation by the paper-scale loaders (iNat
# 2017, Places365, CUB) and the Fashion-MNIST tasks. Their official "val" / test split is
# what the papers report on, so validation has to come from train. 10% keeps 90% of the
# training data and still gives a sizeable val set: ~3 images per CUB class (~600),
# ~58k iNat 2017 images (every class with >= 2 training images, see `carve_validation`),
# ~180k Places365 images (5x its 36.5k test images; ``task_kwargs.val_fraction=0.02``
# gives about the test split's size if evaluating that many is too slow).
DEFAULT_VAL_FRACTION = 0.1


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

    A class of n examples gives ``round(fraction * n)`` of them (rounded half
    up) to val, at least 1 and at most n - 1: every class with two or more
    examples appears in both splits, so per-class thresholds and AP are
    defined on val for every class that can have them, and no class
    disappears from train. A class with one example keeps it in train (it has
    no val example). With `fraction` = 0.1 the at-least-one rule only changes
    classes of 2-4 examples, which lose one to val.

    Args:
        split: a `Split`.
        fraction: share of each class moved to val, in [0, 1); 0 moves none.
        seed: NumPy seed; the same seed gives the same split.

    Returns:
        (train, val) `Split`s, disjoint, each in the original order; val is
        empty when `fraction` is 0.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction}.")
    rng = np.random.default_rng(seed)
    val_idx = [np.zeros(0, np.int64)]
    for c in np.unique(split.labels):
        members = rng.permutation(np.flatnonzero(split.labels == c))
        n = len(members)
        k = 0 if fraction == 0 or n < 2 else min(max(int(np.floor(fraction * n + 0.5)), 1), n - 1)
        val_idx.append(members[:k])
    val_idx = np.sort(np.concatenate(val_idx))
    train_idx = np.setdiff1d(np.arange(len(split)), val_idx)
    return split.subset(train_idx), split.subset(val_idx)


def train_val_test(train, test, val_fraction, seed, name="task"):
    """(train, val, test): val carved from train by `carve_validation`, seeded by `seed`.

    `val_fraction` = 0 makes val the test split itself (the papers' protocol:
    train on every training image, report on the official test set); it logs
    a warning, since whatever is chosen on val (F1 thresholds, a learning
    rate, a loss parameter) is then chosen on test.
    """
    if val_fraction:
        train, val = carve_validation(train, val_fraction, seed)
        return train, val, test
    logger.warning(
        "%s: val_fraction=0, so validation IS the test split: F1 thresholds and everything "
        "chosen on val are chosen on test, and test scores are optimistic. Set val_fraction "
        "> 0 (e.g. %g) to carve validation from the training split.",
        name, DEFAULT_VAL_FRACTION)
    return train, test, test
