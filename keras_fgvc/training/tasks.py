"""Tasks by name: `Config.task` + `Config.task_kwargs` -> a `keras_fgvc.data.Task`.

Each entry adapts one `keras_fgvc.data` builder. Paper-scale tasks read local
files under `Config.data_dir` and fail with a message naming the missing path
and the ``--set data_dir=...`` override; Fashion-MNIST tasks run anywhere the
Debian package (or ``~/.keras/datasets``) is installed.

Validation is carved from the training split (every task but fashion_bg, which
builds its own): ``task_kwargs.val_fraction`` of every class (default
`DEFAULT_VAL_FRACTION` = 0.1), stratified and seeded by `Config.seed`
(`keras_fgvc.data.splits.carve_validation`), disjoint from train and test. The
paper-scale test split is the dataset's official validation set, which never serves
as val unless ``task_kwargs.val_fraction=0`` asks for it (the papers' protocol: train
on every training image); that logs a warning, as F1 thresholds and everything
chosen on val are then chosen on test.

| task | data_dir layout | task_kwargs |
| --- | --- | --- |
| fashion_mnist | (optional) IDX files | val_fraction |
| fashion_lt | (optional) IDX files | imbalance, n_max, val_fraction |
| fashion_bg | (optional) IDX files | make_fashion_bg args, background_keep |
| inat2017 | train2017.json, val2017.json, images | val_fraction |
| inat_bg | as inat2017 | n, model_index, inat_bg_tasks args, background_keep, teacher_labels |
| places_bg | Places365 file lists + images | as inat_bg (places_bg_tasks args) |
| cub | CUB_200_2011 (images.txt, ...) | val_fraction |
| image_folder_bg | rare/<class>/..., background/... [val/, test/] | see `_image_folder_bg` |
| bootstrap | a round's manifest CSV (or data_dir/manifest.csv) | see `_bootstrap` |

``task_kwargs.teacher_labels=/path/teacher.npz`` attaches a teacher's pseudo-labels
to a background task (background splitting at paper scale, where the teacher is a
model pretrained on ImageNet run offline): see `teacher_labels.attach_teacher_labels`.
"""

import dataclasses
import os

import numpy as np

from keras_fgvc.data.splits import DEFAULT_VAL_FRACTION, check_no_empty_class
from keras_fgvc.training.teacher_labels import attach_teacher_labels


def _data_dir(config, required):
    path = config.data_dir
    if not path:
        if required:
            raise FileNotFoundError(
                f"Config {config.name!r} (task {config.task!r}) reads local data: pass "
                "--set data_dir=/path/to/data."
            )
        return None
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"data_dir not found: {path} (config {config.name!r}, task {config.task!r}); "
            "pass an existing folder with --set data_dir=..."
        )
    return path


def _pop(kwargs, *names):
    return {n: kwargs.pop(n) for n in names if n in kwargs}


def _check_unused(config, kwargs):
    if kwargs:
        raise ValueError(
            f"Unknown task_kwargs for task {config.task!r}: {', '.join(sorted(kwargs))}."
        )


def _fashion_mnist(config, kwargs):
    from keras_fgvc.data.fashion_mnist import load_fashion_mnist_task

    val = kwargs.pop("val_fraction", DEFAULT_VAL_FRACTION)
    _check_unused(config, kwargs)
    return load_fashion_mnist_task(val_fraction=val, seed=config.seed,
                                   data_dir=_data_dir(config, False))


def _fashion_lt(config, kwargs):
    from keras_fgvc.data.long_tail import long_tail_subsample

    imbalance = kwargs.pop("imbalance", 100)
    n_max = kwargs.pop("n_max", None)
    task = _fashion_mnist(config, kwargs)
    return long_tail_subsample(task, imbalance=imbalance, n_max=n_max, seed=config.seed)


def _fashion_bg(config, kwargs):
    from keras_fgvc.data.background_tasks import downsample_background
    from keras_fgvc.training.teacher import make_fashion_bg_with_teacher

    keep = kwargs.pop("background_keep", 1.0)
    task = make_fashion_bg_with_teacher(seed=config.seed, data_dir=_data_dir(config, False),
                                        verbose=0, **kwargs)
    return task if keep >= 1.0 else downsample_background(task, keep, seed=config.seed)


def _inat2017(config, kwargs):
    from keras_fgvc.data.inaturalist import load_inaturalist

    root = _data_dir(config, True)
    train_json = os.path.join(root, kwargs.pop("train_json", "train2017.json"))
    val_json = os.path.join(root, kwargs.pop("val_json", "val2017.json"))
    val = kwargs.pop("val_fraction", DEFAULT_VAL_FRACTION)
    _check_unused(config, kwargs)
    return load_inaturalist(train_json, val_json, image_root=root, val_fraction=val,
                            seed=config.seed)


def _background(loader, specs_fn):
    def build(config, kwargs):
        from keras_fgvc.data.background_tasks import background_task, downsample_background

        model_index = kwargs.pop("model_index", 0)
        keep = kwargs.pop("background_keep", 1.0)
        teacher = kwargs.pop("teacher_labels", "")
        spec_kwargs = _pop(kwargs, "n", "num_test_categories", "num_train_categories",
                           "num_models", "group_size", "num_group_models", "num_binary_models")
        json_files = {k: kwargs.get(k, f"{k[:-5]}2017.json") for k in ("train_json", "val_json")}
        full = loader(config, kwargs)
        specs = specs_fn(num_categories=full.num_classes, seed=config.seed, **spec_kwargs)
        if not 0 <= model_index < len(specs):
            raise ValueError(
                f"task_kwargs.model_index={model_index} is outside [0, {len(specs) - 1}] "
                f"for {config.task!r} with {spec_kwargs}."
            )
        task = background_task(full, specs[model_index])
        if keep < 1.0:
            task = downsample_background(task, keep, seed=config.seed)
        if teacher:
            json_paths = [os.path.join(config.data_dir, f) for f in json_files.values()]
            task = attach_teacher_labels(task, teacher, config.data_dir,
                                         json_paths if config.task == "inat_bg" else ())
        return task

    return build


def _inat_specs(**kwargs):
    from keras_fgvc.data.background_tasks import inat_bg_tasks

    return inat_bg_tasks(**kwargs)


def _places_specs(**kwargs):
    from keras_fgvc.data.background_tasks import places_bg_tasks

    return places_bg_tasks(**kwargs)


def _places365(config, kwargs):
    from keras_fgvc.data.places365 import load_places365

    root = _data_dir(config, True)
    val = kwargs.pop("val_fraction", DEFAULT_VAL_FRACTION)
    files = _pop(kwargs, "train_list", "val_list", "categories", "train_images", "val_images")
    _check_unused(config, kwargs)
    return load_places365(root, val_fraction=val, seed=config.seed, **files)


def _cub(config, kwargs):
    from keras_fgvc.data.cub import load_cub

    root = _data_dir(config, True)
    val = kwargs.pop("val_fraction", DEFAULT_VAL_FRACTION)
    _check_unused(config, kwargs)
    return load_cub(root, val_fraction=val, seed=config.seed)


def _image_folder_bg(config, kwargs):
    """The user's own images (`keras_fgvc.data.folder_task`), with an optional teacher.

    task_kwargs: ``manifest`` (CSV instead of data_dir), ``val_fraction`` /
    ``test_fraction`` (carved when DIR/val, DIR/test are absent; 0.1),
    ``background_keep`` (downsample the training background), ``teacher_model``
    (.keras file or SavedModel dir; background splitting needs one),
    ``teacher_mode`` (hard | soft), ``teacher_preprocessing`` (raw | caffe | tf |
    torch), ``teacher_batch_size``, ``records`` (a folder: write the splits there as
    sharded TFRecords once and stream them, `keras_fgvc.data.folder_records`) and
    ``records_shard_size`` (images per shard, 1024).
    """
    from keras_fgvc.data.background_tasks import downsample_background
    from keras_fgvc.data.folder_task import load_folder_task

    teacher = kwargs.pop("teacher_model", "")
    mode = kwargs.pop("teacher_mode", "hard")
    preprocessing = kwargs.pop("teacher_preprocessing", "raw")
    teacher_batch = int(kwargs.pop("teacher_batch_size", 64))
    manifest = kwargs.pop("manifest", "")
    keep = kwargs.pop("background_keep", 1.0)
    fractions = _pop(kwargs, "val_fraction", "test_fraction")
    records = kwargs.pop("records", "")
    shard_size = int(kwargs.pop("records_shard_size", 1024))
    _check_unused(config, kwargs)
    positional = [f"sampling={config.sampling!r}"] if config.sampling != "instance" else []
    if (config.finetune_epochs and config.finetune_sampling != "instance"
            and not config.finetune_max_per_class):  # the stage would stream the records
        positional.append(f"finetune_sampling={config.finetune_sampling!r}")
    if config.refresh_every_steps > 0:
        positional.append(f"refresh_every_steps={config.refresh_every_steps} (re-mined orders)")
    if records and positional:
        raise ValueError(f"task_kwargs.records streams shuffled shards, which cannot realise "
                         f"{positional[0]}: drop task_kwargs.records (the images are then "
                         "read by path) or train without it.")
    if config.loss == "bg_split" and not teacher:
        raise ValueError(
            f"Config {config.name!r} is background splitting: it needs a teacher, a saved "
            "classifier whose predictions split the background. Pass "
            "--set task_kwargs.teacher_model=/path/teacher.keras (or a SavedModel folder), "
            f"or train without one: --config {config.name.split('_split')[0]}_ft.")
    if manifest and config.data_dir:
        raise ValueError("Give --set data_dir=DIR or --set task_kwargs.manifest=FILE.csv, "
                         "not both.")
    if not manifest and not config.data_dir:
        raise FileNotFoundError(
            f"Config {config.name!r} trains on your images: pass --set data_dir=DIR (with "
            "DIR/rare/<class name>/... and DIR/background/...) or "
            "--set task_kwargs.manifest=FILE.csv (columns path,label[,split]).")
    task = load_folder_task(_data_dir(config, False) if not manifest else None,
                            manifest=manifest or None, channels=config.channels,
                            seed=config.seed, **fractions)
    if keep < 1.0:
        task = downsample_background(task, keep, seed=config.seed)
    if teacher:
        from keras_fgvc.training.pseudo_labels import attach_teacher

        task = attach_teacher(task, teacher, mode, teacher_batch, preprocessing)
    if records:  # last: the records hold the teacher labels
        from keras_fgvc.data.folder_records import attach_records

        task = attach_records(task, records, seed=config.seed, shard_size=shard_size)
    return task


def _bootstrap(config, kwargs):
    """A bootstrapping round's training set (`keras_fgvc.data.bootstrap_manifest`): task_kwargs
    ``manifest``, ``hard_negatives``, ``background``, ``val_fraction``, ``hard_negative_ratio``."""
    from keras_fgvc.data.bootstrap_manifest import load_bootstrap_task

    manifest = kwargs.pop("manifest", "") or (
        os.path.join(config.data_dir, "manifest.csv") if config.data_dir else "")
    if not manifest:
        raise FileNotFoundError(
            f"Config {config.name!r} trains a bootstrapping round: pass "
            "--set task_kwargs.manifest=FILE.csv (columns path,label,hard_negative_for,split; "
            "`python -m keras_fgvc.bootstrap round` writes it into the round's workdir).")
    options = _pop(kwargs, "hard_negatives", "background", "val_fraction",
                   "hard_negative_ratio")
    _check_unused(config, kwargs)
    return load_bootstrap_task(manifest, channels=config.channels, seed=config.seed, **options)


_TASKS = {
    "fashion_mnist": _fashion_mnist,
    "fashion_lt": _fashion_lt,
    "fashion_bg": _fashion_bg,
    "inat2017": _inat2017,
    "inat_bg": _background(_inat2017, _inat_specs),
    "places_bg": _background(_places365, _places_specs),
    "cub": _cub,
    "image_folder_bg": _image_folder_bg,
    "bootstrap": _bootstrap,
}


def list_tasks():
    """Names `Config.task` accepts."""
    return sorted(_TASKS)


def check_task(task):
    """Bad input before training: labels in range, no empty class in train.

    The background class may be empty (iNat-BG N = 5089 labels every category), and
    so may the classes listed in ``task.metadata["optional_classes"]`` (the
    hard-negative classes of a bootstrapping round before any rejection).

    Raises:
        ValueError: naming the split and label / class at fault.
    """
    for split_name in ("train", "val", "test"):
        split = getattr(task, split_name)
        labels = split.labels
        lowest = 0 if split.hard_negative_for is None else -1  # -1: a human hard negative
        bad = labels[(labels < lowest) | (labels >= task.num_classes)]
        if len(bad):
            raise ValueError(
                f"Task {task.name!r}: {split_name} label {int(bad[0])} is outside the class "
                f"range [0, {task.num_classes - 1}]."
            )
    if len(task.train) == 0:
        raise ValueError(f"Task {task.name!r} has an empty training split.")
    labels = task.train.labels[task.train.labels >= 0]
    if task.has_background:
        labels = np.concatenate([labels, [0]])  # background may be empty
    # A bootstrapping round's hard-negative classes may be empty (no rejection yet).
    optional = (task.metadata or {}).get("optional_classes", ())
    labels = np.concatenate([labels, np.asarray(optional, np.int64)])
    check_no_empty_class(labels, task.num_classes, f"task {task.name!r} train split",
                         task.class_names)


def build_task(config):
    """The `Task` named by `config.task`, checked with `check_task`.

    Raises:
        ValueError: unknown task or task_kwargs, bad labels, an empty class.
        FileNotFoundError: a paper-scale task without `data_dir` or with a missing one.
    """
    if config.task not in _TASKS:
        raise ValueError(f"Unknown task {config.task!r}; choose one of {', '.join(list_tasks())}.")
    task = _TASKS[config.task](config, dict(config.task_kwargs))
    check_task(task)
    return task


def limit_split(split, max_examples, seed=0):
    """A seeded random subset of at most `max_examples` (0 = all) keeping every class seen."""
    if not max_examples or len(split) <= max_examples:
        return split
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(split))
    # One example of every class first, so a small subset has no empty class.
    _, first = np.unique(split.labels[order], return_index=True)
    rest = np.setdiff1d(np.arange(len(order)), first)
    keep = np.concatenate([first, rest])[:max(max_examples, len(first))]
    return split.subset(np.sort(order[keep]))


def limit_task(task, max_train_examples=0, max_eval_examples=0, seed=0):
    """`task` with its train / val / test splits cut by `limit_split` (0 = keep all)."""
    if not max_train_examples and not max_eval_examples:
        return task
    return dataclasses.replace(task, train=limit_split(task.train, max_train_examples, seed),
                               val=limit_split(task.val, max_eval_examples, seed),
                               test=limit_split(task.test, max_eval_examples, seed))
