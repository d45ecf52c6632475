"""Every registered experiment builds: Fashion-MNIST ones run a training step here, paper-scale
ones build their task, model, loss and input pipeline on a small fake data tree."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.training import tasks
from keras_fgvc.training.config import list_configs, resolve_config
from keras_fgvc.training.loop import Trainer
from keras_fgvc.training.strategy import make_strategy

FASHION = [n for n in list_configs() if n.startswith("fashion_")]
PAPER = [n for n in list_configs() if not n.startswith("fashion_")]

# Small settings of the builders (a smaller teacher, fewer images): same code paths.
_SHRINK = {
    "fashion_bg": ["task_kwargs.teacher_size=1000", "task_kwargs.teacher_epochs=1",
                   "task_kwargs.num_background=1500", "task_kwargs.val_size=500"],
}
_TASK_CACHE = {}


@pytest.fixture
def cached_tasks(monkeypatch):
    """Build each distinct task once per session (the dry runs only differ in the model)."""
    build = tasks.build_task

    def cached(config):
        key = (config.task, json.dumps(config.task_kwargs, sort_keys=True), config.data_dir)
        if key not in _TASK_CACHE:
            _TASK_CACHE[key] = build(config)
        return _TASK_CACHE[key]

    monkeypatch.setattr(tasks, "build_task", cached)


@pytest.mark.slow
@pytest.mark.parametrize("name", FASHION)
def test_fashion_config_trains_one_step(name, cached_tasks):
    base = resolve_config(name)
    overrides = _SHRINK.get(base.task, []) + [
        "batch_size=16", "steps_per_epoch=1", "max_train_examples=400", "max_eval_examples=32",
        "eval_batch_size=32", f"adapt_examples={min(base.adapt_examples, 16)}",
        "refresh_max_examples=64",
    ]
    config = resolve_config(name, overrides)
    trainer = Trainer(config, make_strategy("one_device"), verbose=0)
    result = trainer.dry_run(steps=1, forward=False)
    assert len(result["losses"]) == 1 and np.isfinite(result["losses"]).all(), result
    assert trainer.model.output["probabilities"].shape[-1] == trainer.task.num_classes
    if config.task == "fashion_bg":
        assert trainer.task.has_background and trainer.task.class_names[0] == "background"


# === Paper-scale configs on fake data trees ===

_NUM_CATEGORIES = 12


def _write_images(root, relative_paths, seed=0):
    rng = np.random.default_rng(seed)
    for path in relative_paths:
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        pixels = rng.integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
        tf.io.write_file(full, tf.io.encode_jpeg(pixels))


def _fake_inat(root):
    categories = [{"id": 100 + c, "name": f"species_{c}"} for c in range(_NUM_CATEGORIES)]
    for split, per_class in (("train", 3), ("val", 1)):
        images, annotations = [], []
        for c in range(_NUM_CATEGORIES):
            for k in range(per_class):
                image_id = len(images) + 1
                images.append({"id": image_id, "file_name": f"{split}/{c}/{k}.jpg"})
                annotations.append({"image_id": image_id, "category_id": 100 + c})
        with open(os.path.join(root, f"{split}2017.json"), "w") as f:
            json.dump({"images": images, "annotations": annotations,
                       "categories": categories}, f)
        _write_images(root, [img["file_name"] for img in images])


def _fake_places(root):
    with open(os.path.join(root, "categories_places365.txt"), "w") as f:
        f.writelines(f"/s/scene_{c} {c}\n" for c in range(_NUM_CATEGORIES))
    for folder, name, per_class in (("data_256", "places365_train_standard.txt", 3),
                                    ("val_256", "places365_val.txt", 1)):
        rows = [(f"/s/scene_{c}/{k:08d}.jpg", c) for c in range(_NUM_CATEGORIES)
                for k in range(per_class)]
        with open(os.path.join(root, name), "w") as f:
            f.writelines(f"{p} {c}\n" for p, c in rows)
        _write_images(os.path.join(root, folder), [p.lstrip("/") for p, _ in rows])


def _fake_cub(root):
    rows = [(i + 1, f"{c:03d}.bird/{k}.jpg", c + 1, int(k < 3))
            for i, (c, k) in enumerate((c, k) for c in range(_NUM_CATEGORIES) for k in range(4))]
    with open(os.path.join(root, "images.txt"), "w") as f:
        f.writelines(f"{i} {p}\n" for i, p, _, _ in rows)
    with open(os.path.join(root, "image_class_labels.txt"), "w") as f:
        f.writelines(f"{i} {c}\n" for i, _, c, _ in rows)
    with open(os.path.join(root, "train_test_split.txt"), "w") as f:
        f.writelines(f"{i} {t}\n" for i, _, _, t in rows)
    _write_images(os.path.join(root, "images"), [p for _, p, _, _ in rows])


_FAKE = {"inat2017": _fake_inat, "inat_bg": _fake_inat, "places_bg": _fake_places,
         "cub": _fake_cub}
# The paper's N on the fake 12-category tree: 5089 -> all, 1100 -> 6, 100 -> 4 test ones.
_INAT_N = {5089: _NUM_CATEGORIES, 1100: 6, 100: 4, 10: 2, 1: 1}


@pytest.fixture(scope="module")
def fake_roots(tmp_path_factory):
    roots = {}
    for kind, make in (("inat", _fake_inat), ("places", _fake_places), ("cub", _fake_cub)):
        root = str(tmp_path_factory.mktemp(kind))
        make(root)
        roots[kind] = root
    return roots


def _paper_overrides(config, roots):
    size = 75 if config.model == "inception_v3" else 32
    out = [f"image_size={size}", "batch_size=4", "eval_batch_size=4", "steps_per_epoch=1",
           f"adapt_examples={min(config.adapt_examples, 4)}"]
    if config.task == "inat_bg":
        n = _INAT_N[config.task_kwargs["n"]]
        out += [f"task_kwargs.n={n}", "task_kwargs.num_test_categories=4",
                "task_kwargs.num_train_categories=6", "task_kwargs.num_models=2"]
    if config.task == "places_bg":
        out += [f"task_kwargs.n={2 if config.task_kwargs['n'] == 10 else 1}",
                "task_kwargs.group_size=2", "task_kwargs.num_group_models=3",
                "task_kwargs.num_binary_models=2"]
    if config.finetune_max_per_class:
        out.append("finetune_max_per_class=2")
    root = roots["inat" if config.task.startswith("inat") else config.task.split("_")[0]]
    return out + [f"data_dir={root}"]


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPER)
def test_paper_config_builds_on_a_fake_tree(name, fake_roots):
    base = resolve_config(name)
    # Without data the error names the override to use.
    with pytest.raises(FileNotFoundError, match="--set data_dir="):
        tasks.build_task(base)
    config = resolve_config(name, _paper_overrides(base, fake_roots))
    trainer = Trainer(config, make_strategy("one_device"), verbose=0)
    result = trainer.dry_run(steps=0, forward=False)
    size = config.image_size
    assert result["batch_shape"] == [4, size, size, 3]
    assert trainer.model.output["logits"].shape[-1] == trainer.task.num_classes
    if config.task in ("inat_bg", "places_bg"):
        assert trainer.task.has_background
        expected_n = {"inat_bg": _INAT_N, "places_bg": {10: 2, 1: 1}}[config.task]
        assert trainer.task.num_foreground == expected_n[base.task_kwargs["n"]]
    assert [s.name for s in trainer.stages] == (
        ["train", "finetune"] if config.finetune_epochs else ["train"])


def test_missing_data_dir_is_named(tmp_path):
    config = resolve_config("cub_kernel_pooling_resnet50", [f"data_dir={tmp_path}/nowhere"])
    with pytest.raises(FileNotFoundError, match="data_dir not found: .*nowhere"):
        tasks.build_task(config)
