"""CUB-200-2011 from its local metadata files.

``images.txt`` (``<id> <relative path>``), ``image_class_labels.txt``
(``<id> <class 1..200>``), ``train_test_split.txt`` (``<id> <1 = train, 0 = test>``),
``classes.txt`` (``<class> <name>``, optional) and the ``images/`` folder.
5,994 training and 5,794 test images of 200 bird species.
"""

import os

import numpy as np

from keras_fgvc.data.splits import (
    DEFAULT_VAL_FRACTION,
    check_no_empty_class,
    read_lines,
    require_path,
    train_val_test,
)
from keras_fgvc.data.task import Split, Task


def _id_table(path, what):
    table = {}
    for n, line in enumerate(read_lines(path, what), 1):
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{path}:{n}: expected '<id> <value>', got {line!r}.")
        if not parts[0].isdigit():
            raise ValueError(f"{path}:{n}: expected an integer id, got {parts[0]!r}.")
        table[int(parts[0])] = parts[1]
    return table


def load_cub(root, val_fraction=DEFAULT_VAL_FRACTION, seed=0):
    """CUB-200-2011 as a `Task` (200 classes, no background).

    Args:
        root: the ``CUB_200_2011`` folder.
        val_fraction: share of each training class held out as `val`
            (default 0.1: ~3 of a class's ~30 images; stratified, see
            `carve_validation`); 0 uses the test split for validation too (the
            paper's protocol: train on all 5,994 images) and logs a warning.
        seed: seed of the hold-out.

    Returns:
        `Task` named ``"cub200"``; labels are the class ids minus one.

    Raises:
        FileNotFoundError: `root` or a metadata file is missing.
        ValueError: ids that disagree between files, a class id outside
            1..num_classes, an ``is_training_image`` other than 0 / 1, or a
            class without training images.

    Example:
        >>> task = load_cub("/data/CUB_200_2011")  # doctest: +SKIP
        >>> len(task.train), len(task.val), len(task.test)  # doctest: +SKIP
        (5394, 600, 5794)
    """
    root = require_path(root, "CUB-200-2011 root")
    at = lambda p: os.path.join(root, p)
    images = _id_table(at("images.txt"), "CUB images.txt")
    labels = _id_table(at("image_class_labels.txt"), "CUB image_class_labels.txt")
    is_train = _id_table(at("train_test_split.txt"), "CUB train_test_split.txt")
    if os.path.exists(at("classes.txt")):
        classes = _id_table(at("classes.txt"), "CUB classes.txt")
        if sorted(classes) != list(range(1, len(classes) + 1)):
            raise ValueError(f"classes.txt: class ids are not 1..{len(classes)}.")
        class_names = [classes[k] for k in sorted(classes)]
    else:
        class_names = [str(k) for k in range(1, max(int(v) for v in labels.values()) + 1)]
    ids = sorted(images)
    for table, name in ((labels, "image_class_labels.txt"), (is_train, "train_test_split.txt")):
        missing = sorted(set(ids) - set(table))
        if missing:
            raise ValueError(f"{name} has no entry for image id {missing[0]}.")
    y = np.array([int(labels[i]) - 1 for i in ids], np.int64)
    bad = y[(y < 0) | (y >= len(class_names))]
    if len(bad):
        raise ValueError(
            f"CUB class id {int(bad[0]) + 1} is outside the class range 1..{len(class_names)}."
        )
    paths = np.array([os.path.join(root, "images", images[i]) for i in ids], dtype=object)
    flags = [is_train[i].strip() for i in ids]
    bad = [(i, f) for i, f in zip(ids, flags) if f not in ("0", "1")]
    if bad:
        raise ValueError(f"train_test_split.txt: image id {bad[0][0]} has is_training_image "
                         f"{bad[0][1]!r}; expected 1 (train) or 0 (test).")
    train_mask = np.array([f == "1" for f in flags])
    train = Split(labels=y[train_mask], paths=paths[train_mask])
    test = Split(labels=y[~train_mask], paths=paths[~train_mask])
    check_no_empty_class(train.labels, len(class_names), "CUB train split", class_names)
    train, val, test = train_val_test(train, test, val_fraction, seed, "cub200")
    return Task(name="cub200", class_names=class_names, train=train, val=val, test=test,
                has_background=False)
