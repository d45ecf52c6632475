"""Every registered experiment builds: Fashion-MNIST ones run a training step here, paper-scale
ones build their task, model, loss and input pipeline on a small fake data tree."""

import dataclasses
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.training import tasks
from keras_fgvc.training.experiments import get_config, list_configs, resolve_config
from keras_fgvc.training.experiments.fashion import FASHION_BG
from keras_fgvc.training.experiments.paper import BACKGROUND
from keras_fgvc.training.loop import Trainer
from keras_fgvc.training.strategy import make_strategy

FASHION = [n for n in list_configs() if n.startswith("fashion_")]
FOLDER = [n for n in list_configs() if n.startswith("folder_")]
# Bootstrapping configs train on a round's manifest: tests/bootstrap/test_hard_negatives.py.
PAPER = [n for n in list_configs() if not n.startswith(("fashion_", "folder_", "bootstrap_"))]

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


_TEACHER_CLASSES = 5


def _teacher_rows(root, task):
    """Relative image paths of a fake tree and a teacher label for each (-1 for every 7th)."""
    if task == "inat":
        rows = [img["file_name"] for split in ("train", "val")
                for img in json.load(open(os.path.join(root, f"{split}2017.json")))["images"]]
    else:
        rows = []
        for folder, name in (("data_256", "places365_train_standard.txt"),
                             ("val_256", "places365_val.txt")):
            with open(os.path.join(root, name)) as f:
                rows += [os.path.join(folder, line.split()[0].lstrip("/")) for line in f]
    labels = np.array([-1 if i % 7 == 6 else i % _TEACHER_CLASSES for i in range(len(rows))])
    return rows, labels


def _write_teacher(root, task, **arrays):
    rows, labels = _teacher_rows(root, task)
    arrays = {"paths": np.array(rows), "teacher_labels": labels,
              "teacher_class_names": np.array([f"imagenet_{k}" for k in range(_TEACHER_CLASSES)]),
              **arrays}
    path = os.path.join(root, "teacher.npz")
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.fixture(scope="module")
def fake_roots(tmp_path_factory):
    roots = {}
    for kind, make in (("inat", _fake_inat), ("places", _fake_places), ("cub", _fake_cub)):
        root = str(tmp_path_factory.mktemp(kind))
        make(root)
        roots[kind] = root
        if kind != "cub":
            roots[f"{kind}_teacher"] = _write_teacher(root, kind)
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
    kind = "inat" if config.task.startswith("inat") else config.task.split("_")[0]
    if config.loss == "bg_split":
        out.append(f"task_kwargs.teacher_labels={roots[kind + '_teacher']}")
    return out + [f"data_dir={roots[kind]}"]


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
        ["head"] * bool(config.head_epochs) + ["train"] + ["finetune"] * bool(
            config.finetune_epochs))
    assert config.batch_size == 4 and base.batch_size in (1024, 512, 256, 128, 32)
    if config.task in ("inat_bg", "places_bg") and base.batch_size != 1024:
        assert name.endswith(f"_batch{base.batch_size}")  # only the batch-size study differs
    if config.loss == "bg_split":
        assert trainer.model.output["aux_logits"].shape[-1] == _TEACHER_CLASSES
        assert trainer.task.teacher_class_names[0] == "imagenet_0"
    if "background_keep" in base.task_kwargs:
        assert trainer.task.name.endswith(f"_bg{100 * base.task_kwargs['background_keep']:g}")


def test_inat_places_background_methods_are_registered():
    inat = [f"inat_bg_n{n}_{m}" for n in (1, 10, 100, 1100, 5089)
            for m in ("ft", "bg_split", "bg_split_fixed")]
    inat += [f"inat_bg_n{n}_{m}" for n in (100, 1100, 5089) for m in ("ldam_drw", "lws", "focal")]
    inat += [f"inat_bg_n100_{m}_downsample{k}" for m in ("ft", "ldam_drw", "lws")
             for k in (1, 5, 25)]
    inat += [f"inat_bg_n100_{m}_batch{b}" for m in ("ft", "bg_split") for b in (128, 256, 512)]
    places = [f"places_bg_n{n}_{m}" for n in (1, 10) for m in ("ft", "bg_split")]
    assert set(inat + places) <= set(PAPER)
    # Method settings come from the Fashion-BG configs, on ResNet-50 at batch 1024.
    for method, fashion in (("focal", "fashion_bg_focal"), ("ldam_drw", "fashion_bg_ldam_drw"),
                            ("lws", "fashion_bg_lws"), ("bg_split", "fashion_bg_split")):
        paper, small = resolve_config(f"inat_bg_n100_{method}"), resolve_config(fashion)
        assert (paper.loss, paper.loss_kwargs) == (small.loss, small.loss_kwargs)
        assert paper.finetune_transform == small.finetune_transform
        assert paper.batch_size == 1024 and "resnet50" in json.dumps(
            [paper.model, paper.model_kwargs])
    assert resolve_config("inat_bg_n100_ldam_drw").drw_epoch == 20
    assert resolve_config("inat_bg_n100_focal").model_kwargs["head"] == "sigmoid"
    assert resolve_config("inat_bg_n100_bg_split_fixed").model == "bg_split_fixed_background"
    assert "not stated" in resolve_config("inat_bg_n100_lws").description.lower()


# === Paper-scale methods mirror the Fashion-BG ones ===

# The Fashion-BG models and their ResNet-50 counterparts at paper scale.
_RESNET50 = {
    "small_cnn": ("resnet50_gap", {}),
    "small_cnn_sigmoid": ("classifier", {"backbone": "resnet50", "pooling": "gap",
                                         "head": "sigmoid"}),
    "bg_split": ("bg_split", {"backbone": "resnet50"}),
    "bg_split_fixed_background": ("bg_split_fixed_background", {"backbone": "resnet50"}),
}
# Epoch-dependent fields set for the 30-epoch paper schedule, not copied (paper.py says why).
_PAPER_SCALE = {
    "drw_epoch": BACKGROUND.decay_epochs[0],  # re-weight from the first learning-rate decay
    "finetune_epochs": 10,
    "finetune_learning_rate": BACKGROUND.learning_rate / 10,
}
_BACKGROUND_NAME = re.compile(r"(inat|places)_bg_n\d+_(?P<method>.+?)(_downsample\d+|_batch\d+)?$")


def _method_fields(config, base):
    """The fields where `config` differs from `base`, other than its name and data."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if f.name not in ("name", "description", "task", "task_kwargs")
            and getattr(config, f.name) != getattr(base, f.name)}


@pytest.mark.parametrize("method, fashion", [
    ("ft", "fashion_bg_ft"), ("focal", "fashion_bg_focal"), ("ldam_drw", "fashion_bg_ldam_drw"),
    ("lws", "fashion_bg_lws"), ("bg_split", "fashion_bg_split"),
    ("bg_split_fixed", "fashion_bg_split_fixed"),
])
def test_paper_background_methods_mirror_fashion_bg(method, fashion):
    # What the Fashion-BG method changes from Fashion-BG, on ResNet-50 at paper scale ...
    small = _method_fields(get_config(fashion), FASHION_BG)
    model, model_kwargs = _RESNET50[small.pop("model", FASHION_BG.model)]
    expected = {**small, "model": model,
                "model_kwargs": {**model_kwargs, **small.get("model_kwargs", {})}}
    expected.update({k: v for k, v in _PAPER_SCALE.items() if k in small})
    expected = {k: v for k, v in expected.items() if v != getattr(BACKGROUND, k)}
    # ... is what every paper-scale config of the method changes from BACKGROUND.
    names = [n for n in PAPER if (m := _BACKGROUND_NAME.match(n)) and m["method"] == method]
    assert f"inat_bg_n100_{method}" in names
    for name in names:
        paper = _method_fields(get_config(name), BACKGROUND)
        if "_batch" in name:  # the batch-size study: the rate scales linearly with the batch
            batch, rate = paper.pop("batch_size"), paper.pop("learning_rate")
            assert name.endswith(f"_batch{batch}"), name
            assert rate == pytest.approx(BACKGROUND.learning_rate * batch / 1024), name
        assert paper == expected, name


def _teacher_config(root, teacher, name="inat_bg_n100_bg_split", extra=()):
    base = resolve_config(name)
    overrides = _paper_overrides(base, {"inat": root, "inat_teacher": teacher})
    return resolve_config(name, overrides + list(extra))


@pytest.mark.slow
def test_inat_teacher_labels_from_file_train_one_step(fake_roots):
    root = fake_roots["inat"]
    # One real step through the augmenting file pipeline into ResNet-50's caffe
    # normalisation, which needs the static channel count the random crop must keep.
    config = _teacher_config(root, fake_roots["inat_teacher"])
    trainer = Trainer(config, make_strategy("one_device"), verbose=0)
    result = trainer.dry_run(steps=1, forward=False)
    assert len(result["losses"]) == 1 and np.isfinite(result["losses"]).all(), result
    task = trainer.task
    assert task.teacher_class_names == [f"imagenet_{k}" for k in range(_TEACHER_CLASSES)]
    assert trainer.model.output["aux_logits"].shape[-1] == _TEACHER_CLASSES
    rows, labels = _teacher_rows(root, "inat")
    expected = {os.path.join(root, r): t for r, t in zip(rows, labels)}
    for split in (task.train, task.val, task.test):
        np.testing.assert_array_equal(split.teacher_labels, [expected[p] for p in split.paths])
    assert (task.train.teacher_labels == -1).any() and (task.train.teacher_labels >= 0).any()


def test_inat_teacher_labels_by_image_id_and_partial_cover(tmp_path):
    root = str(tmp_path)
    _fake_inat(root)
    rows, labels = _teacher_rows(root, "inat")
    by_path = tasks.build_task(_teacher_config(root, _write_teacher(root, "inat")))
    # iNat image ids (each JSON numbers its images from 1; make val ids distinct).
    train_images = json.load(open(os.path.join(root, "train2017.json")))["images"]
    val_json = json.load(open(os.path.join(root, "val2017.json")))
    for image in val_json["images"]:
        image["id"] += 1000
    for annotation in val_json["annotations"]:
        annotation["image_id"] += 1000
    with open(os.path.join(root, "val2017.json"), "w") as f:
        json.dump(val_json, f)
    ids = [img["id"] for img in train_images] + [img["id"] for img in val_json["images"]]
    teacher = _write_teacher(root, "inat", paths=None, image_ids=np.array(ids))
    by_id = tasks.build_task(_teacher_config(root, teacher))
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(by_id, name).teacher_labels,
                                      getattr(by_path, name).teacher_labels)
    with pytest.raises(ValueError, match="image id 99999 is not in"):
        tasks.build_task(_teacher_config(root, _write_teacher(
            root, "inat", paths=None, image_ids=np.array([99999]), teacher_labels=labels[:1])))
    # A file listing only part of the images: the rest get -1; names default to teacher_k.
    half = len(rows) // 2
    teacher = _write_teacher(root, "inat", paths=np.array(rows[:half]),
                             teacher_labels=labels[:half], teacher_class_names=None)
    task = tasks.build_task(_teacher_config(root, teacher))
    assert task.teacher_class_names == [f"teacher_{k}" for k in range(int(labels.max()) + 1)]
    listed = {os.path.join(root, r) for r in rows[:half]}
    unlisted = [t for p, t in zip(task.train.paths, task.train.teacher_labels) if p not in listed]
    assert unlisted and all(t == -1 for t in unlisted)


def test_inat_teacher_label_file_errors(fake_roots, tmp_path):
    root = fake_roots["inat"]
    rows, labels = _teacher_rows(root, "inat")

    def build(**arrays):
        path = str(tmp_path / "bad.npz")
        np.savez(path, **arrays)
        return tasks.build_task(_teacher_config(root, path))

    with pytest.raises(FileNotFoundError, match="teacher_labels file not found: .*nowhere"):
        tasks.build_task(_teacher_config(root, str(tmp_path / "nowhere.npz")))
    with pytest.raises(ValueError, match="needs arrays 'teacher_labels' and 'paths'"):
        build(paths=np.array(rows))
    with pytest.raises(ValueError, match=f"{len(rows)} images but 3 teacher_labels"):
        build(paths=np.array(rows), teacher_labels=labels[:3])
    with pytest.raises(ValueError, match="teacher label 9 is outside \\[-1, 4\\]"):
        build(paths=np.array(rows), teacher_labels=np.where(labels == 0, 9, labels),
              teacher_class_names=np.array([f"c{k}" for k in range(5)]))
    with pytest.raises(ValueError, match="labels none of the .* training images"):
        build(paths=np.array([f"elsewhere/{r}" for r in rows]), teacher_labels=labels)
    with pytest.raises(ValueError, match="lists an image twice"):
        build(paths=np.array(rows[:1] * 2), teacher_labels=labels[:2])
    with pytest.raises(ValueError, match="Image id 1 names two images"):  # ids repeat here
        build(image_ids=np.array([1]), teacher_labels=labels[:1])
    # Without the file, background splitting says what it needs before training.
    config = resolve_config("inat_bg_n100_bg_split",
                            [o for o in _paper_overrides(resolve_config("inat_bg_n100_bg_split"),
                                                         {"inat": root, "inat_teacher": ""})
                             if "teacher" not in o])
    with pytest.raises(ValueError, match="needs .*teacher labels"):
        Trainer(config, make_strategy("one_device"), verbose=0).dry_run(steps=0, forward=False)


def test_missing_data_dir_is_named(tmp_path):
    config = resolve_config("cub_kernel_pooling_resnet50", [f"data_dir={tmp_path}/nowhere"])
    with pytest.raises(FileNotFoundError, match="data_dir not found: .*nowhere"):
        tasks.build_task(config)


def test_fashion_lt_n_max_sets_the_head_class_size():
    config = resolve_config("fashion_lt10_softmax", ["task_kwargs.n_max=500"])
    counts = np.bincount(tasks.build_task(config).train.labels, minlength=10)
    mu = (1 / 10) ** (1 / 9)
    assert counts.tolist() == [int(500 * mu**i + 1e-9) for i in range(10)]
    with pytest.raises(ValueError, match="n_max"):
        tasks.build_task(resolve_config("fashion_lt10_softmax", ["task_kwargs.n_max=100000"]))


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    from tests.folder_images import make_folder, make_teacher

    root = tmp_path_factory.mktemp("folder")
    make_folder(str(root / "photos"), {"background": 24, "red_spot": 6, "blue_spot": 5})
    return str(root / "photos"), make_teacher(str(root / "teacher.keras"), 4, 24)


@pytest.mark.slow
@pytest.mark.parametrize("name", FOLDER)
def test_folder_config_runs_a_step(name, image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_FGVC_CACHE", str(tmp_path))
    data, teacher = image_folder
    overrides = [f"data_dir={data}", "image_size=32", "batch_size=4", "steps_per_epoch=1"]
    if "split" in name:
        overrides.append(f"task_kwargs.teacher_model={teacher}")
    result = Trainer(resolve_config(name, overrides), verbose=0).dry_run(steps=1)
    assert np.isfinite(result["losses"]).all() and result["probabilities_shape"][1] == 3
