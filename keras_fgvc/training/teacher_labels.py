"""A teacher's pseudo-labels for a task, read from an ``.npz`` file.

``task_kwargs.teacher_labels=/path/teacher.npz`` (tasks ``inat_bg``, ``places_bg``)
attaches them: background splitting at paper scale, where the teacher is a model
pretrained on ImageNet run offline. The file names images by path or, for
iNaturalist, by image id (resolved through the dataset's JSON files).

Example:

>>> task = attach_teacher_labels(task, "/data/teacher.npz", "/data", json_paths)
>>> task.train.teacher_labels  # int [n], -1 where the file lists no label
"""

import dataclasses
import json
import os

import numpy as np


def _image_id_paths(json_paths, data_dir):
    """{iNaturalist image id: normalised image path} over `json_paths`."""
    paths = {}
    for json_path in json_paths:
        with open(json_path) as f:
            for image in json.load(f)["images"]:
                path = os.path.normpath(os.path.join(data_dir, image["file_name"]))
                if paths.setdefault(int(image["id"]), path) != path:
                    raise ValueError(f"Image id {image['id']} names two images "
                                     f"({paths[int(image['id'])]} and {path}).")
    return paths


def attach_teacher_labels(task, path, data_dir, json_paths=()):
    """`task` with `Split.teacher_labels` read from the ``.npz`` file `path`.

    The file holds ``teacher_labels`` (int [m], class indices of the teacher,
    -1 = none), either ``paths`` (str [m], absolute or relative to
    `data_dir`) or ``image_ids`` (int [m], iNaturalist image ids, resolved
    through `json_paths`), and optionally ``teacher_class_names`` (str [K];
    default ``teacher_0..teacher_{K-1}`` with K = max label + 1). Images of
    the task that the file does not list get -1.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: a missing or mismatched array, a label outside [-1, K),
            a duplicate entry, or no image of the task's training split listed.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"task_kwargs.teacher_labels file not found: {path}")
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    if "teacher_labels" not in arrays or not ({"paths", "image_ids"} & set(arrays)):
        raise ValueError(f"Teacher file {path} needs arrays 'teacher_labels' and 'paths' or "
                         f"'image_ids'; it has {sorted(arrays)}.")
    labels = np.asarray(arrays["teacher_labels"]).astype(np.int64).reshape(-1)
    if "paths" in arrays:
        keys = [os.path.normpath(p if os.path.isabs(p) else os.path.join(data_dir, p))
                for p in arrays["paths"].astype(str).reshape(-1)]
    else:
        if not json_paths:
            raise ValueError(f"Teacher file {path}: 'image_ids' needs an iNaturalist task; "
                             f"task {task.name!r} has none, store 'paths' instead.")
        by_id = _image_id_paths(json_paths, data_dir)
        ids = np.asarray(arrays["image_ids"]).astype(np.int64).reshape(-1)
        unknown = [int(i) for i in ids if int(i) not in by_id]
        if unknown:
            raise ValueError(f"Teacher file {path}: image id {unknown[0]} is not in "
                             f"{', '.join(json_paths)}.")
        keys = [by_id[int(i)] for i in ids]
    if len(keys) != len(labels):
        raise ValueError(f"Teacher file {path}: {len(keys)} images but {len(labels)} "
                         "teacher_labels.")
    if len(set(keys)) != len(keys):
        raise ValueError(f"Teacher file {path} lists an image twice.")
    if "teacher_class_names" in arrays:
        names = [str(n) for n in arrays["teacher_class_names"].reshape(-1)]
    else:
        names = [f"teacher_{k}" for k in range(int(labels.max(initial=-1)) + 1)]
    bad = labels[(labels < -1) | (labels >= len(names))]
    if len(bad) or not names:
        raise ValueError(f"Teacher file {path}: teacher label "
                         f"{int(bad[0]) if len(bad) else '(none)'} is outside [-1, "
                         f"{len(names) - 1}] ({len(names)} teacher classes).")
    lookup = dict(zip(keys, labels.tolist()))
    splits = {}
    for name in ("train", "val", "test"):
        split = getattr(task, name)
        found = [lookup.get(os.path.normpath(str(p)), -1) for p in split.paths]
        splits[name] = dataclasses.replace(split, teacher_labels=np.asarray(found, np.int64),
                                           records=None)
    if len(task.train) and (splits["train"].teacher_labels < 0).all():
        raise ValueError(f"Teacher file {path} labels none of the {len(task.train)} training "
                         f"images of task {task.name!r}: do its paths match data_dir "
                         f"{data_dir}?")
    return dataclasses.replace(task, teacher_class_names=names, **splits)
