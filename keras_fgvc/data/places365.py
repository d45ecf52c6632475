"""Places365 from its local file lists (``path label`` per line).

Official files: ``places365_train_standard.txt`` (e.g. ``/a/airfield/00000001.jpg 0``),
``places365_val.txt`` (``Places365_val_00000001.jpg 165``) and
``categories_places365.txt`` (``/a/airfield 0``). 365 categories, 1,803,460
training and 36,500 validation images.
"""

import os

import numpy as np

from keras_fgvc.data.splits import (
    DEFAULT_VAL_FRACTION,
    check_labels,
    read_lines,
    require_path,
    train_val_test,
)
from keras_fgvc.data.task import Split, Task


def read_file_list(list_path, image_root, num_classes=None):
    """Reads a ``path label`` list into a `Split` of file paths.

    Args:
        list_path: the list file.
        image_root: folder the listed paths are relative to (a leading ``/``
            in the list is treated as relative, as in the official lists).
        num_classes: when given, labels must lie in [0, num_classes).

    Returns:
        `Split` with ``paths`` and ``labels``.

    Raises:
        FileNotFoundError: `list_path` or `image_root` is missing.
        ValueError: a malformed line or a label outside the class range.
    """
    image_root = require_path(image_root, "Places365 image root")
    paths, labels = [], []
    for n, line in enumerate(read_lines(list_path, "Places365 file list"), 1):
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{list_path}:{n}: expected 'path label', got {line!r}.")
        paths.append(os.path.join(image_root, parts[0].lstrip("/")))
        labels.append(int(parts[1]))
    labels = np.asarray(labels, np.int64)
    if num_classes is not None:
        check_labels(labels, num_classes, f"{list_path}")
    return Split(labels=labels, paths=np.asarray(paths, dtype=object))


def read_categories(categories_path):
    """Class names by index from ``categories_places365.txt`` (``/a/airfield 0``)."""
    entries = {}
    for n, line in enumerate(read_lines(categories_path, "Places365 categories file"), 1):
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"{categories_path}:{n}: expected 'name index', got {line!r}.")
        entries[int(parts[1])] = parts[0]
    if sorted(entries) != list(range(len(entries))):
        raise ValueError(f"{categories_path}: category indices are not 0..{len(entries) - 1}.")
    return [entries[i] for i in range(len(entries))]


def load_places365(
    root,
    train_list="places365_train_standard.txt",
    val_list="places365_val.txt",
    categories="categories_places365.txt",
    train_images="data_256",
    val_images="val_256",
    val_fraction=DEFAULT_VAL_FRACTION,
    seed=0,
):
    """Places365 as a `Task` over all categories (no background).

    File names are relative to `root` (absolute paths are used as given).
    The official validation set is the test split; `val` is carved from the
    training split (`val_fraction` of each class, default 0.1, stratified and
    seeded by `seed`: `carve_validation`). `val_fraction` = 0 makes `val` the
    test split too and logs a warning.

    Returns:
        `Task` named ``"places365"`` with ``has_background=False``.

    Example:
        >>> task = load_places365("/data/places365")  # doctest: +SKIP
        >>> places_bg_tasks(task.num_classes, n=10)  # doctest: +SKIP
    """
    root = require_path(root, "Places365 root")
    at = lambda p: os.path.join(root, p)
    class_names = read_categories(at(categories))
    c = len(class_names)
    train = read_file_list(at(train_list), at(train_images), num_classes=c)
    test = read_file_list(at(val_list), at(val_images), num_classes=c)
    train, val, test = train_val_test(train, test, val_fraction, seed, "places365")
    return Task(name="places365", class_names=class_names, train=train, val=val, test=test,
                has_background=False)
