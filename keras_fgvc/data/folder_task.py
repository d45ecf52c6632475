"""A background task from the user's own images: ``DIR/rare/<class>/...`` + ``DIR/background/...``.

Layout (DESIGN.md, "Your own images")::

    DIR/rare/<class name>/...   images of each rare class (any depth of sub-folders)
    DIR/background/...          everything else (any depth of sub-folders)
    DIR/val/..., DIR/test/...   optional, the same two-part layout

or a CSV manifest with columns ``path,label[,split]`` (``label`` is
``background`` or a class name, ``split`` is ``train``, ``val``, ``test`` or
empty; paths are relative to the manifest's folder).

Label contract: 0 is background, 1..N are the rare classes in sorted name
order. When DIR/val or DIR/test (or manifest rows of that split) are absent,
they are carved from the training images by `splits.carve_validation`:
seeded, stratified, and never taking a rare class's last training image.

Files are recognised by extension (JPEG, PNG, GIF: first frame, BMP, WebP;
TF 2.21 decodes all of them, so the same decoder serves them). Every listed
file is decoded once (in parallel, the decoder the pipeline and the exported
``serving_default`` use); one that cannot be read is skipped and recorded in
``task.metadata["skipped"]`` as ``(path, reason)``, never fatal. The result
of that scan is cached by the files' paths, sizes and modification times.
"""

import csv
import os

import numpy as np
import tensorflow as tf

from keras_fgvc.data.cache import cache_key, cache_path, load_npz, save_npz
from keras_fgvc.data.image_ops import decode_image
from keras_fgvc.data.splits import carve_validation, require_path
from keras_fgvc.data.task import Split, Task

FOLDER_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
BACKGROUND = "background"
SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = {"val": 0.1, "test": 0.1}
UNREADABLE = "unreadable or not a decodable image"


def walk_images(folder, extensions=FOLDER_EXTENSIONS):
    """Image files (by extension) under `folder` at any depth, sorted; hidden ones skipped."""
    return _walk(folder, extensions)


def _walk(folder, extensions):
    """Image files under `folder` at any depth, sorted; hidden files and folders skipped."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files)
                  if not f.startswith(".") and f.lower().endswith(extensions)]
    return found


def read_layout(root, where, class_names=None, extensions=FOLDER_EXTENSIONS, required=True,
                background_required=None):
    """``{label name: [paths]}`` of one ``rare/`` + ``background/`` tree (module docstring).

    The layout's rules and their error messages, for every reader of such a
    folder (this task's splits, a bootstrapping project's seed set).

    Args:
        root: the folder holding ``rare/`` (and ``background/``).
        where: how messages name it (e.g. ``"data_dir DIR"``).
        class_names: the only rare class folders allowed (None: any).
        extensions: the image file extensions.
        required: at least one class folder, each holding an image file.
        background_required: a ``background/`` folder holding an image
            (default: `required`); without one, ``background`` maps to [].

    Raises:
        ValueError: naming `where` and the folder at fault.
    """
    if background_required is None:
        background_required = required
    rare = os.path.join(root, "rare")
    if not os.path.isdir(rare):
        raise ValueError(
            f"{where}: no 'rare' folder in {root}. Expected {root}/rare/<class name>/... "
            f"(one sub-folder per rare class) and{'' if background_required else ' optionally'} "
            f"{root}/background/...")
    loose = [f for f in sorted(os.listdir(rare)) if os.path.isfile(os.path.join(rare, f))
             and f.lower().endswith(extensions)]
    if loose:
        raise ValueError(f"{where}: image {os.path.join(rare, loose[0])} lies directly in "
                         f"{rare}; put each rare class's images in {rare}/<class name>/.")
    folders = sorted(d for d in os.listdir(rare)
                     if os.path.isdir(os.path.join(rare, d)) and not d.startswith("."))
    if class_names is not None:
        unknown = sorted(set(folders) - set(class_names))
        if unknown:
            raise ValueError(f"{where}: rare class folder {os.path.join(rare, unknown[0])} "
                             f"is not a training class ({', '.join(class_names)}).")
    if not folders and required:
        raise ValueError(f"{where}: {rare} has no class sub-folders; put each rare class's "
                         f"images in {rare}/<class name>/.")
    out = {}
    for name in folders:
        if name == BACKGROUND:
            raise ValueError(f"{where}: a rare class may not be named {BACKGROUND!r} "
                             f"({os.path.join(rare, name)}); background images go in "
                             f"{os.path.join(root, BACKGROUND)}/.")
        out[name] = _walk(os.path.join(rare, name), extensions)
        if required and not out[name]:
            raise ValueError(f"{where}: rare class {name!r} has no image: "
                             f"{os.path.join(rare, name)} holds no "
                             f"{'/'.join(e[1:] for e in extensions)} file.")
    background = os.path.join(root, BACKGROUND)
    if not os.path.isdir(background) and background_required:
        raise ValueError(f"{where}: no 'background' folder in {root}. Expected "
                         f"{root}/background/... holding images of everything else.")
    out[BACKGROUND] = _walk(background, extensions) if os.path.isdir(background) else []
    if background_required and not out[BACKGROUND]:
        raise ValueError(f"{where}: {background} holds no image.")
    return out


def _read_manifest(path, extensions=FOLDER_EXTENSIONS):
    """``{split: {label name: [paths]}}`` from a ``path,label[,split]`` CSV file."""
    require_path(path, "manifest")
    base = os.path.dirname(os.path.abspath(path))
    parts = {s: {} for s in SPLITS}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in reader.fieldnames or []]
        if "path" not in fields or "label" not in fields:
            raise ValueError(f"manifest {path}: the first line must name the columns "
                             f"path,label[,split]; it has {fields}.")
        reader.fieldnames = fields
        for line, row in enumerate(reader, start=2):
            file, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
            split = (row.get("split") or "").strip() or "train"
            if not file or not label:
                raise ValueError(f"manifest {path}, line {line}: empty path or label.")
            if split not in SPLITS:
                raise ValueError(f"manifest {path}, line {line}: split {split!r} is not one "
                                 f"of {', '.join(SPLITS)}.")
            full = os.path.normpath(os.path.join(base, file))
            if not os.path.isfile(full):
                raise FileNotFoundError(f"manifest {path}, line {line}: file not found: {full}")
            parts[split].setdefault(label, []).append(full)
    return parts


def _classes_of_manifest(path, parts):
    names = sorted({n for part in parts.values() for n in part if n != BACKGROUND})
    train = parts["train"]
    if not names:
        raise ValueError(f"manifest {path}: no rare class (every label is {BACKGROUND!r}).")
    for split in ("val", "test"):
        unknown = sorted(set(parts[split]) - set(train) - {BACKGROUND})
        if unknown:
            raise ValueError(f"manifest {path}: unknown label {unknown[0]!r} in {split}: it "
                             f"is not {BACKGROUND!r} and no training row has it (a rare "
                             "class needs training images).")
    empty = [n for n in names if not train.get(n)]
    if empty:
        raise ValueError(f"manifest {path}: rare class {empty[0]!r} has no training image.")
    return names


def _to_split(part, class_names):
    index = {name: i for i, name in enumerate(class_names)}
    paths, labels = [], []
    for name, files in part.items():
        if name not in index:
            raise ValueError(f"unknown label {name!r}: not {BACKGROUND!r} or one of the rare "
                             f"classes ({', '.join(class_names[1:])}).")
        paths += files
        labels += [index[name]] * len(files)
    return Split(labels=np.asarray(labels, np.int64), paths=np.asarray(paths, dtype=object))


def find_unreadable(paths, channels=3, cache_dir=None):
    """Indices of `paths` the pipeline's decoder cannot read (one parallel decode pass).

    The answer is cached (``<cache>/folder_scan-<key>.npz``) keyed by every file's
    path, size and modification time, so a second run over unchanged files
    decodes nothing.
    """
    paths = [str(p) for p in paths]
    stats = []
    for p in paths:
        try:
            st = os.stat(p)
            stats.append((p, st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((p, -1, -1))
    key = cache_key(files=stats, channels=channels, version=1)
    cache_file = cache_path("folder_scan", key, cache_dir)
    cached = load_npz(cache_file)
    if cached is not None and "unreadable" in cached:
        return [int(i) for i in cached["unreadable"]]
    if not paths:
        return []
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(paths), np.arange(len(paths))))
    ds = ds.map(lambda p, i: (tf.shape(decode_image(tf.io.read_file(p), channels)), i),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).ignore_errors()
    readable = np.zeros(len(paths), bool)
    for shape, i in ds.batch(1024).as_numpy_iterator():
        readable[i[(shape[:, 0] > 0) & (shape[:, 1] > 0)]] = True
    unreadable = np.flatnonzero(~readable)
    save_npz(cache_file, unreadable=unreadable.astype(np.int64))
    return unreadable.tolist()


def _drop_unreadable(split, channels, skipped, cache_dir):
    bad = find_unreadable(split.paths, channels, cache_dir)
    if not bad:
        return split
    skipped += [(str(split.paths[i]), UNREADABLE) for i in bad]
    return split.subset(np.setdiff1d(np.arange(len(split)), bad))


def load_folder_task(data_dir=None, manifest=None, channels=3, val_fraction=None,
                     test_fraction=None, seed=0, name=None, cache_dir=None):
    """The background `Task` of a folder of images (module docstring) or a manifest.

    Args:
        data_dir: DIR with ``rare/<class>/`` and ``background/`` (optional
            ``val/`` and ``test/`` in the same layout).
        manifest: a CSV file instead (``path,label[,split]``).
        channels: the decode channels (1 or 3) the readability scan uses.
        val_fraction, test_fraction: share of each class carved from the
            training images when there is no val / test part (default 0.1).
        seed: seed of the carving.
        name: task name (default: the folder's or manifest's name).
        cache_dir: where the readability scan is cached.

    Returns:
        `Task` with ``has_background=True``, class names ``["background", *rare]``
        and ``metadata`` holding ``skipped`` (list of ``(path, reason)``),
        ``source`` and ``carved`` (the splits carved from train).

    Raises:
        ValueError / FileNotFoundError: one clear message per bad layout (no
            ``rare/``, an empty class, an unknown label, a missing file, a rare
            class left with no readable image).
    """
    if bool(data_dir) == bool(manifest):
        raise ValueError("Give data_dir (DIR/rare/<class>/..., DIR/background/...) or a "
                         "manifest CSV, not both and not neither.")
    if manifest:
        parts = _read_manifest(manifest)
        rare = _classes_of_manifest(manifest, parts)
        source = os.path.abspath(manifest)
    else:
        root = require_path(data_dir, "data_dir")
        train_part = read_layout(root, f"data_dir {root}")
        rare = sorted(n for n in train_part if n != BACKGROUND)
        parts = {"train": train_part}
        for split in ("val", "test"):
            folder = os.path.join(root, split)
            parts[split] = (read_layout(folder, f"{split} folder {folder}", rare,
                                        required=False) if os.path.isdir(folder) else {})
        source = os.path.abspath(root)
    class_names = [BACKGROUND, *rare]
    skipped = []
    splits = {}
    for split in SPLITS:
        splits[split] = _drop_unreadable(_to_split(parts[split], class_names), channels,
                                         skipped, cache_dir)
    counts = np.bincount(splits["train"].labels, minlength=len(class_names))
    for c in np.flatnonzero(counts[1:] == 0) + 1:
        raise ValueError(f"rare class {class_names[c]!r} has no readable training image "
                         f"({source}); every file of it was skipped as {UNREADABLE}.")
    fractions = {"val": val_fraction, "test": test_fraction}
    carved = []
    for split in ("test", "val"):
        if len(splits[split]):
            continue
        fraction = DEFAULT_FRACTIONS[split] if fractions[split] is None else fractions[split]
        splits["train"], splits[split] = carve_validation(
            splits["train"], fraction, seed + (0 if split == "test" else 1))
        carved.append(split)
    name = name or os.path.splitext(os.path.basename(os.path.normpath(source)))[0]
    return Task(name=name, class_names=class_names, has_background=True,
                metadata={"skipped": skipped, "source": source, "carved": sorted(carved)},
                **splits)


def describe(task):
    """Lines a user reads first: images per rare class per split, background share, skips."""
    lines = [task.summary()]
    width = max(len(n) for n in task.class_names)
    lines.append(f"  {'class':<{width}}  {'train':>7} {'val':>6} {'test':>6}")
    for c, cname in enumerate(task.class_names):
        row = [int(task.class_counts(s)[c]) for s in SPLITS]
        lines.append(f"  {cname:<{width}}  {row[0]:>7} {row[1]:>6} {row[2]:>6}")
    carved = (task.metadata or {}).get("carved") or []
    if carved:
        lines.append(f"  {' and '.join(carved)} carved from the training images "
                     "(seeded, stratified per class).")
    skipped = (task.metadata or {}).get("skipped") or []
    lines.append(f"  skipped files: {len(skipped)}"
                 + (f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""))
    return "\n".join(lines)
