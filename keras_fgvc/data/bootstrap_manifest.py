"""A bootstrapping round's training set: S_{i-1} and H_{i-1} as a manifest CSV -> a `Task`.

Dissertation Sec. 2.2.2: round i trains on the seed set grown so far,
S_{i-1}, and the hard negatives H_{i-1} that labelers marked (candidates they
rejected for a category). `keras_fgvc.bootstrap.rounds` writes them to
``<round workdir>/manifest.csv`` with the columns::

    path,label,hard_negative_for,split

- ``label``: a category name, ``background`` (a seed background image), or
  empty for a hard negative;
- ``hard_negative_for``: the category a hard negative was rejected for
  (empty otherwise);
- ``split``: ``train``, ``val``, ``test`` or empty (= train). Hard negatives
  are training data only.

Paths are absolute or relative to the manifest's folder. The categories are
the labels' names in sorted order (the store's category index). Classes:
``[background,] c_0 .. c_{N-1}`` and then, by `HARD_NEGATIVE_MODES`:

- ``none``: hard negatives left out (Softmax / Triplet-A on S alone);
- ``pairs``: each hard negative has label -1 and ``hard_negative_for`` = its
  category's class: `TripletLoss` reads them as ``(label, hard_negative_for)``
  rows, a negative for that category's anchors only (Triplet-A + HN);
- ``one_class``: one extra class ``hard_negative`` holding all of them
  (Table 2.3's Softmax + HNS, N + 1 outputs);
- ``per_class``: one extra class ``hard_negative:<category>`` per category
  (Softmax + HNM, 2N outputs).

``task.metadata["category_columns"]`` lists the output column of each
category: a detector's confidence for category c is the probability in that
column (the hard-negative classes only absorb probability mass). When the
manifest has no val rows, validation is carved from S (positives and
background, never hard negatives) by `splits.carve_validation`, seeded.
Unreadable files are skipped and listed in ``metadata["skipped"]``.
"""

import csv
import os

import numpy as np

from keras_fgvc.data.folder_task import BACKGROUND, UNREADABLE, find_unreadable
from keras_fgvc.data.splits import carve_validation, require_path
from keras_fgvc.data.task import Split, Task

COLUMNS = ("path", "label", "hard_negative_for", "split")
HARD_NEGATIVE_MODES = ("none", "pairs", "one_class", "per_class")
BACKGROUND_MODES = ("class", "ignore")
HARD_NEGATIVE_CLASS = "hard_negative"
SPLITS = ("train", "val", "test")


def hard_negative_class_name(category):
    """The HNM class of `category`'s hard negatives."""
    return f"{HARD_NEGATIVE_CLASS}:{category}"


def read_manifest(path):
    """Rows ``(absolute path, label, hard_negative_for, split)`` of a round manifest, checked.

    Raises:
        FileNotFoundError: the manifest or a listed file is missing.
        ValueError: a bad header or row (named by line number), a path listed twice.
    """
    require_path(path, "manifest")
    base = os.path.dirname(os.path.abspath(path))
    rows, seen = [], {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in reader.fieldnames or []]
        if not {"path", "label", "hard_negative_for"} <= set(fields):
            raise ValueError(f"manifest {path}: the first line must name the columns "
                             f"{','.join(COLUMNS)}; it has {fields}.")
        reader.fieldnames = fields
        for line, row in enumerate(reader, start=2):
            file, label, negative, split = ((row.get(k) or "").strip() for k in COLUMNS)
            split = split or "train"
            where = f"manifest {path}, line {line}"
            if not file:
                raise ValueError(f"{where}: empty path.")
            if bool(label) == bool(negative):
                raise ValueError(f"{where}: give a label (a category or {BACKGROUND!r}) or "
                                 "hard_negative_for (a category), exactly one of them.")
            if negative and negative == BACKGROUND:
                raise ValueError(f"{where}: an image cannot be a hard negative of "
                                 f"{BACKGROUND!r}.")
            if split not in SPLITS:
                raise ValueError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}.")
            if negative and split != "train":
                raise ValueError(f"{where}: a hard negative is training data; its split is "
                                 f"{split!r}.")
            full = os.path.normpath(os.path.join(base, file))
            if not os.path.isfile(full):
                raise FileNotFoundError(f"{where}: file not found: {full}")
            if full in seen:
                raise ValueError(f"{where}: {full} is listed twice (first on line "
                                 f"{seen[full]}).")
            seen[full] = line
            rows.append((full, label, negative, split))
    return rows


def _check_options(hard_negatives, background, hard_negative_ratio):
    if hard_negatives not in HARD_NEGATIVE_MODES:
        raise ValueError(f"task_kwargs.hard_negatives={hard_negatives!r} is not one of "
                         f"{', '.join(HARD_NEGATIVE_MODES)}.")
    if background not in BACKGROUND_MODES:
        raise ValueError(f"task_kwargs.background={background!r} is not one of "
                         f"{', '.join(BACKGROUND_MODES)}.")
    if not float(hard_negative_ratio) > 0:
        raise ValueError(f"task_kwargs.hard_negative_ratio={hard_negative_ratio!r} must be > 0.")


def class_layout(categories, has_background, hard_negatives):
    """``(class_names, category_columns, hard_negative_columns)`` of a round's task.

    ``hard_negative_columns[c]``: the class a hard negative of category c gets
    (-1 in ``pairs`` mode: no class of its own; None in ``none`` mode).
    """
    reserved = [c for c in categories if c == BACKGROUND or c == HARD_NEGATIVE_CLASS
                or c.startswith(f"{HARD_NEGATIVE_CLASS}:")]
    if reserved:
        raise ValueError(f"category name {reserved[0]!r} is reserved (background and "
                         "hard-negative classes); rename that category's folder.")
    offset = int(has_background)
    names = [BACKGROUND] * offset + list(categories)
    columns = [offset + c for c in range(len(categories))]
    if hard_negatives == "one_class":
        negative = [len(names)] * len(categories)
        names.append(HARD_NEGATIVE_CLASS)
    elif hard_negatives == "per_class":
        negative = [len(names) + c for c in range(len(categories))]
        names += [hard_negative_class_name(c) for c in categories]
    elif hard_negatives == "pairs":
        negative = [-1] * len(categories)
    else:
        negative = None
    return names, columns, negative


def load_bootstrap_task(manifest, hard_negatives="pairs", background="class", val_fraction=0.1,
                        hard_negative_ratio=1.0, channels=3, seed=0, name=None, cache_dir=None):
    """The `Task` of a round manifest (module docstring).

    Args:
        manifest: the CSV file.
        hard_negatives: one of `HARD_NEGATIVE_MODES`.
        background: ``class`` (seed background images are class 0) or ``ignore``.
        val_fraction: share of each class of S carved as validation when the
            manifest has no val rows (0: no validation).
        hard_negative_ratio: recorded in the metadata for the softmax
            baselines' epoch composition (`keras_fgvc.training.hard_negatives`).
        channels: decode channels of the readability scan.
        seed: seed of the carving.
        name: task name (default ``bootstrap``).
        cache_dir: where the readability scan is cached.

    Raises:
        ValueError / FileNotFoundError: a bad manifest, no category, a hard
            negative for an unknown category, a category with no readable image.
    """
    _check_options(hard_negatives, background, hard_negative_ratio)
    rows = read_manifest(manifest)
    categories = sorted({label for _, label, _, _ in rows if label and label != BACKGROUND})
    if not categories:
        raise ValueError(f"manifest {manifest}: no category (no row labelled with one).")
    unknown = sorted({n for _, _, n, _ in rows if n and n not in categories})
    if unknown:
        raise ValueError(f"manifest {manifest}: hard_negative_for {unknown[0]!r} is not a "
                         f"category with images ({', '.join(categories)}).")
    bad = set(find_unreadable([r[0] for r in rows], channels, cache_dir))
    skipped = [(rows[i][0], UNREADABLE) for i in sorted(bad)]
    rows = [r for i, r in enumerate(rows) if i not in bad]
    with_background = background == "class" and any(r[1] == BACKGROUND for r in rows)
    if background == "ignore":
        rows = [r for r in rows if r[1] != BACKGROUND]
    if hard_negatives == "none":
        rows = [r for r in rows if not r[2]]
    names, columns, negative_class = class_layout(categories, with_background, hard_negatives)
    index = {name: i for i, name in enumerate(names)}
    category_of = {c: i for i, c in enumerate(categories)}
    parts = {s: ([], [], []) for s in SPLITS}
    for path, label, negative, split in rows:
        paths, labels, marks = parts[split]
        paths.append(path)
        if negative:
            labels.append(negative_class[category_of[negative]])
            marks.append(columns[category_of[negative]])
        else:
            labels.append(index[label])
            marks.append(-1)
    marked = hard_negatives != "none"
    splits = {s: Split(labels=np.asarray(lab, np.int64), paths=np.asarray(p, dtype=object),
                       hard_negative_for=np.asarray(m, np.int64) if marked and s == "train"
                       else None)
              for s, (p, lab, m) in parts.items()}
    train = splits["train"]
    counts = np.bincount(train.labels[train.labels >= 0], minlength=len(names))
    for c, column in zip(categories, columns):
        if counts[column] == 0:
            raise ValueError(f"manifest {manifest}: category {c!r} has no readable training "
                             "image.")
    carved = []
    if not len(splits["val"]) and val_fraction:
        positives = np.flatnonzero(train.hard_negative_for < 0) if marked \
            else np.arange(len(train))
        rest, val = carve_validation(train.subset(positives), val_fraction, seed)
        negatives = np.setdiff1d(np.arange(len(train)), positives)
        splits["train"] = _concat(rest, train.subset(negatives), marked)
        splits["val"] = Split(labels=val.labels, paths=val.paths)
        carved.append("val")
    if not len(splits["val"]):
        raise ValueError(f"manifest {manifest}: no validation image (the trainer evaluates on "
                         "one): give every category at least 2 images, or add val rows.")
    optional = [index[BACKGROUND]] if with_background else []
    optional += sorted(set(negative_class or ()) - {-1})
    metadata = {"source": os.path.abspath(manifest), "categories": categories,
                "category_columns": columns, "hard_negatives": hard_negatives,
                "num_hard_negatives": splits["train"].num_hard_negatives,
                "hard_negative_ratio": float(hard_negative_ratio),
                "optional_classes": optional, "skipped": skipped, "carved": carved}
    return Task(name=name or "bootstrap", class_names=names, has_background=with_background,
                metadata=metadata, **splits)


def _concat(a, b, marked):
    """`a` then `b` (file-based splits), keeping `hard_negative_for` when `marked`."""
    return Split(labels=np.concatenate([a.labels, b.labels]),
                 paths=np.concatenate([a.paths, b.paths]),
                 hard_negative_for=np.concatenate([a.hard_negative_for, b.hard_negative_for])
                 if marked else None)
