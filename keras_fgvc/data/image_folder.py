"""An image folder: one sub-folder per class (``root/<class>/<image>``)."""

import os

import numpy as np

from keras_fgvc.data.splits import (
    carve_validation,
    check_no_empty_class,
    require_path,
    train_val_test,
)
from keras_fgvc.data.task import Split, Task

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def list_image_folder(root, class_names=None, extensions=IMAGE_EXTENSIONS):
    """Lists ``root/<class>/*`` image files.

    Args:
        root: folder with one sub-folder per class.
        class_names: the class order to use; default: sorted sub-folder names.
            A sub-folder not in `class_names` is an error.
        extensions: file name endings (case-insensitive) counted as images.

    Returns:
        (split, class_names): a `Split` of paths (sorted) and labels, and the
        class names.

    Raises:
        FileNotFoundError: `root` is missing.
        ValueError: a class folder holds no image (an empty class), or a
            folder names a class outside `class_names`.
    """
    root = require_path(root, "image folder")
    folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if class_names is None:
        class_names = folders
    class_names = list(class_names)
    unknown = sorted(set(folders) - set(class_names))
    if unknown:
        raise ValueError(f"{root}: folder {unknown[0]!r} is not one of the classes.")
    if not class_names:
        raise ValueError(f"{root} has no class sub-folders.")
    paths, labels = [], []
    for label, name in enumerate(class_names):
        folder = os.path.join(root, name)
        files = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        for f in files:
            if f.lower().endswith(tuple(extensions)):
                paths.append(os.path.join(folder, f))
                labels.append(label)
    labels = np.asarray(labels, np.int64)
    check_no_empty_class(labels, len(class_names), f"image folder {root}", class_names)
    return Split(labels=labels, paths=np.asarray(paths, dtype=object)), class_names


def load_image_folder(train_dir, test_dir=None, val_dir=None, val_fraction=0.0, seed=0,
                      name=None):
    """A `Task` (no background) from class-per-folder trees.

    Args:
        train_dir: training tree; its sub-folders define the classes.
        test_dir: test tree with the same class folders; default: none, the
            test split is then the carved validation split.
        val_dir: validation tree; default: carve `val_fraction` of each
            training class (or use the test split when `val_fraction` is 0).
        val_fraction: share of each training class held out when `val_dir` is None.
        seed: seed of that hold-out.
        name: task name (default: the train folder's name).

    Returns:
        `Task` with ``has_background=False``.

    Example:
        >>> task = load_image_folder("/data/cars/train", "/data/cars/test")  # doctest: +SKIP
    """
    train, class_names = list_image_folder(train_dir)
    test = list_image_folder(test_dir, class_names)[0] if test_dir is not None else None
    if val_dir is not None:
        val = list_image_folder(val_dir, class_names)[0]
    elif test is None:
        if not val_fraction:
            raise ValueError("load_image_folder needs test_dir, val_dir or val_fraction > 0.")
        train, val = carve_validation(train, val_fraction, seed)
        test = val
    else:
        train, val, test = train_val_test(train, test, val_fraction, seed)
    name = name or os.path.basename(os.path.normpath(os.fspath(train_dir)))
    return Task(name=name, class_names=class_names, train=train, val=val, test=test,
                has_background=False)
