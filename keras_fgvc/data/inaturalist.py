"""iNaturalist 2017 from its local JSON files (``train2017.json``, ``val2017.json``).

The JSON follows the COCO layout: ``images`` (``id``, ``file_name``),
``annotations`` (``image_id``, ``category_id``) and ``categories`` (``id``,
``name``, ``supercategory``). iNat 2017 has 5,089 categories, 579,184 training
and 95,986 validation images (background-splitting appendix A; its "5098" is a
typo for 5089).
"""

import json
import os

import numpy as np

from keras_fgvc.data.splits import DEFAULT_VAL_FRACTION, require_path, train_val_test
from keras_fgvc.data.task import Split, Task


def _require_keys(json_path, section, entries, keys):
    """ValueError naming the first entry of `section` that lacks one of `keys`."""
    if not isinstance(entries, list):
        raise ValueError(f"{json_path}: {section!r} must be a list, got {type(entries).__name__}.")
    for n, entry in enumerate(entries):
        missing = [k for k in keys if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise ValueError(f"{json_path}: {section}[{n}] has no {missing[0]!r} field.")


def read_inaturalist_json(json_path, image_root=None):
    """Reads one iNat JSON file.

    Args:
        json_path: path of e.g. ``train2017.json``.
        image_root: folder the ``file_name`` entries are relative to
            (default: the JSON's folder).

    Returns:
        (paths, category_ids, categories): str [n] image paths, int64 [n]
        category ids (-1 for images without annotation, e.g. a test set),
        and the JSON's ``categories`` list sorted by id.

    Raises:
        FileNotFoundError: `json_path` or `image_root` is missing.
        ValueError: the JSON lacks ``images``/``categories``, an entry lacks
            a field (``id``, ``file_name``, ``name``, ``image_id``,
            ``category_id``), ids repeat, or an annotation names an unknown
            image or category.
    """
    require_path(json_path, "iNaturalist JSON")
    image_root = require_path(
        image_root if image_root is not None else os.path.dirname(os.fspath(json_path)) or ".",
        "iNaturalist image root",
    )
    with open(json_path, encoding="utf-8") as f:
        data = json.load(f)
    for key in ("images", "categories"):
        if key not in data:
            raise ValueError(f"{json_path}: missing the {key!r} list.")
    _require_keys(json_path, "categories", data["categories"], ("id", "name"))
    _require_keys(json_path, "images", data["images"], ("id", "file_name"))
    _require_keys(json_path, "annotations", data.get("annotations", []),
                  ("image_id", "category_id"))
    categories = sorted(data["categories"], key=lambda c: c["id"])
    known = {c["id"] for c in categories}
    if len(known) != len(categories):
        raise ValueError(f"{json_path}: category ids repeat.")
    row = {img["id"]: i for i, img in enumerate(data["images"])}
    if len(row) != len(data["images"]):
        raise ValueError(f"{json_path}: image ids repeat.")
    paths = np.array([os.path.join(image_root, img["file_name"]) for img in data["images"]],
                     dtype=object)
    ids = np.full(len(paths), -1, dtype=np.int64)
    for ann in data.get("annotations", []):
        if ann["image_id"] not in row:
            raise ValueError(f"{json_path}: annotation for unknown image id {ann['image_id']}.")
        if ann["category_id"] not in known:
            raise ValueError(f"{json_path}: unknown category id {ann['category_id']}.")
        ids[row[ann["image_id"]]] = ann["category_id"]
    return paths, ids, categories


def load_inaturalist(train_json, val_json, image_root=None, val_fraction=DEFAULT_VAL_FRACTION,
                     seed=0):
    """iNaturalist 2017 as a `Task` over all categories (no background).

    Labels are indices into the categories sorted by id. The official
    validation set is the test split (as in the papers); `val` is carved from
    the training split (stratified, seeded: `carve_validation`), so nothing
    chosen on val is chosen on test.

    Args:
        train_json, val_json: paths of ``train2017.json`` and ``val2017.json``.
        image_root: folder the ``file_name`` entries are relative to.
        val_fraction: share of each training class held out as `val`
            (default 0.1); 0 makes `val` the test split too and logs a
            warning (train on every training image, as the papers did).
        seed: seed of that hold-out.

    Returns:
        `Task` named ``"inaturalist2017"`` with ``has_background=False``;
        class names are the category names.

    Example:
        >>> task = load_inaturalist("train2017.json", "val2017.json")  # doctest: +SKIP
        >>> background_task(task, inat_bg_tasks(task.num_classes, n=100)[0])  # doctest: +SKIP
    """
    out = []
    for path in (train_json, val_json):
        paths, ids, categories = read_inaturalist_json(path, image_root)
        keep = ids >= 0
        if not keep.any():
            raise ValueError(f"{path}: no image has an annotation (a labelled "
                             f"train/val JSON needs the 'annotations' list).")
        out.append((paths[keep], ids[keep], categories))
    categories = out[0][2]
    index = {c["id"]: i for i, c in enumerate(categories)}
    splits = []
    for paths, ids, cats in out:
        if [c["id"] for c in cats] != [c["id"] for c in categories]:
            raise ValueError(f"{train_json} and {val_json} list different categories.")
        splits.append(Split(labels=np.array([index[i] for i in ids], np.int64), paths=paths))
    train, val, test = train_val_test(splits[0], splits[1], val_fraction, seed,
                                      "inaturalist2017")
    return Task(
        name="inaturalist2017", class_names=[c["name"] for c in categories],
        train=train, val=val, test=test, has_background=False,
    )
