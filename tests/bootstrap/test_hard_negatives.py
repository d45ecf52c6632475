"""Training on S and human hard negatives: the round manifest, mining, batches, losses, configs."""

import json
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.data.bootstrap_manifest import load_bootstrap_task
from keras_fgvc.data.task import Split, Task
from keras_fgvc.losses import triplet as triplet_module
from keras_fgvc.losses.anchor_triplet import anchor_triplet_loss
from keras_fgvc.training import mining
from keras_fgvc.training.experiments import resolve_config
from keras_fgvc.training.hard_negatives import HardNegativeShareHook, epoch_rows
from keras_fgvc.training.hooks import Hook
from keras_fgvc.training.loop import Trainer
from keras_fgvc.training.loss_recipes import build_loss
from tests.bootstrap.loop_data import CATEGORIES, round_manifest, write_manifest


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_FGVC_CACHE", str(tmp_path / "cache"))


# === The manifest -> Task ===

def test_each_mode_maps_hard_negatives_and_carves_validation_from_s_only(tmp_path):
    manifest, rows = round_manifest(str(tmp_path), per_class=5, background=4,
                                    hard_negatives={"bag": 3, "coat": 2})
    negatives = {r[0]: r[2] for r in rows if r[2]}
    expected = {
        "none": ([], None),
        "pairs": ([], {"bag": -1, "coat": -1}),
        "one_class": (["hard_negative"], {"bag": 4, "coat": 4}),
        "per_class": (["hard_negative:ankle_boot", "hard_negative:bag", "hard_negative:coat"],
                      {"bag": 5, "coat": 6}),
    }
    vals = []
    for mode, (extra, label_of) in expected.items():
        task = load_bootstrap_task(manifest, hard_negatives=mode, channels=1, seed=3)
        assert task.class_names == ["background", *CATEGORIES, *extra]
        assert task.has_background and task.metadata["category_columns"] == [1, 2, 3]
        train = task.train
        paths = [str(p) for p in train.paths]
        found = {p: (int(train.labels[i]), int(train.hard_negative_for[i]))
                 for i, p in enumerate(paths) if p in negatives}
        if label_of is None:
            assert not found and train.hard_negative_for is None
            continue
        # every hard negative is in train, with its class and the column of its category
        assert {p: negatives[p] for p in found} == negatives
        for p, (label, mark) in found.items():
            assert (label, mark) == (label_of[negatives[p]], 1 + CATEGORIES.index(negatives[p]))
        others = np.flatnonzero(~np.isin(train.paths, list(negatives)))
        assert (train.hard_negative_for[others] == -1).all()
        assert task.metadata["num_hard_negatives"] == 5
        # validation: carved from S (1 of each category's 5, 1 of 4 background), never an HN
        assert not set(map(str, task.val.paths)) & set(negatives)
        assert np.bincount(task.val.labels, minlength=4)[:4].tolist() == [1, 1, 1, 1]
        assert len(train) + len(task.val) == len(rows)
        vals.append(sorted(map(str, task.val.paths)))
    assert all(v == vals[0] for v in vals)  # seeded: the same val whatever the mode
    other_seed = load_bootstrap_task(manifest, hard_negatives="pairs", channels=1, seed=4)
    assert sorted(map(str, other_seed.val.paths)) != vals[0]
    ignored = load_bootstrap_task(manifest, hard_negatives="per_class", background="ignore",
                                  channels=1)
    assert not ignored.has_background and ignored.class_names[:3] == list(CATEGORIES)
    assert ignored.metadata["optional_classes"] == [3, 4, 5]


@pytest.mark.parametrize("row, message", [
    (("x.png", "bag", "coat", ""), "exactly one of them"),
    (("x.png", "", "", ""), "exactly one of them"),
    (("x.png", "", "shoe", ""), "'shoe' is not a category"),
    (("x.png", "", "bag", "val"), "training data"),
    (("x.png", "bag", "", "later"), "split 'later'"),
    (("missing.png", "bag", "", ""), "file not found"),
])
def test_bad_manifest_rows_are_named(tmp_path, row, message):
    _, rows = round_manifest(str(tmp_path), per_class=2)
    (tmp_path / "x.png").write_bytes(open(rows[0][0], "rb").read())
    path = write_manifest(str(tmp_path / "bad.csv"), rows + [row])
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_bootstrap_task(path, channels=1)


def test_a_manifest_without_validation_images_is_refused(tmp_path):
    _, rows = round_manifest(str(tmp_path), per_class=1)  # one image each: nothing to carve
    with pytest.raises(ValueError, match="no validation image"):
        load_bootstrap_task(write_manifest(str(tmp_path / "one.csv"), rows), channels=1)


def test_a_path_listed_twice_and_an_unreadable_file(tmp_path):
    _, rows = round_manifest(str(tmp_path), per_class=3)
    with pytest.raises(ValueError, match="listed twice"):
        load_bootstrap_task(write_manifest(str(tmp_path / "twice.csv"), rows + [rows[0]]))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    task = load_bootstrap_task(write_manifest(str(tmp_path / "skip.csv"),
                                              rows + [(str(broken), "", "bag", "")]), channels=1)
    assert task.metadata["skipped"] == [(str(broken), "unreadable or not a decodable image")]
    assert task.train.num_hard_negatives == 0


# === Mining: one human hard negative per mined triplet (Sec. 2.4.3) ===

def _clusters(rng):
    centres = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = np.repeat([0, 1, 2], 6)
    x = centres[labels] + rng.normal(0, 0.05, (18, 2))
    # hard negatives: rejected for class 0 (near its cluster) and class 1; label -1
    hard = np.array([[0.9, 0.1], [0.95, -0.1], [0.1, 0.9]])
    return (np.concatenate([x, hard]), np.concatenate([labels, [-1, -1, -1]]),
            np.concatenate([np.full(18, -1), [0, 0, 1]]))


def test_every_triplet_gets_one_human_hard_negative_of_its_category():
    x, labels, marks = _clusters(np.random.default_rng(0))
    order = mining.mine_triplet_order_with_hard_negatives(x, labels, marks, 4 * 60, seed=1)
    distances = ((x[:, None] - x[None]) ** 2).sum(-1)
    for r, p, n, h in order.reshape(-1, 4):
        assert labels[r] == labels[p] >= 0 and r != p and marks[[r, p, n]].max() == -1
        assert labels[n] >= 0 and labels[n] != labels[r]
        own = np.flatnonzero(marks == labels[r])
        if len(own):
            assert marks[h] == labels[r]
            violating = own[distances[r, own] < distances[r, p] + 0.2]
            assert h in violating if len(violating) else h == own[np.argmin(distances[r, own])]
        else:  # class 2 has none: a hard negative of another class keeps the count
            assert marks[h] >= 0
    # per batch of 40 (10 groups): as many human hard negatives as mined negatives
    for batch in order.reshape(-1, 40):
        assert (marks[batch] >= 0).sum() == 10 == (labels[batch[2::4]] >= 0).sum()
    with pytest.raises(ValueError, match="No row is a human hard negative"):
        mining.mine_triplet_order_with_hard_negatives(x[:18], labels[:18], marks[:18], 8)


# === Losses: (label, hard_negative_for) rows, no classification loss for label -1 ===

def _pairs_task(n=12, negatives=4, classes=3):
    labels = np.concatenate([np.arange(n) % classes, np.full(negatives, -1)])
    marks = np.concatenate([np.full(n, -1), np.arange(negatives) % classes])
    split = Split(labels=labels, images=np.zeros((len(labels), 4, 4, 1), np.uint8),
                  hard_negative_for=marks)
    empty = Split(labels=np.zeros(0, np.int64), images=np.zeros((0, 4, 4, 1), np.uint8))
    return Task("pairs", [f"c{i}" for i in range(classes)], split, empty, empty,
                has_background=False)


def test_triplet_anchor_recipe_reads_hard_negative_rows():
    task = _pairs_task()
    config = resolve_config("bootstrap_triplet_a_hn")
    recipe = build_loss(config, task)
    assert recipe.targets == ["hard_negative_for", "labels"] and recipe.unlabelled_rows
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(16, 8)).astype(np.float32)
    log_probs = np.log(rng.dirichlet(np.ones(3), 16)).astype(np.float32)
    batch = {"labels": task.train.labels.astype(np.int32),
             "hard_negative_for": task.train.hard_negative_for.astype(np.int32)}
    got = keras.ops.convert_to_numpy(recipe(batch, {"embedding": emb, "logits": log_probs}))
    want = keras.ops.convert_to_numpy(anchor_triplet_loss(
        batch["labels"], emb, log_probs, 0.1, 0.2, 0.6, batch["hard_negative_for"]))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    unmarked = dict(batch, hard_negative_for=np.full(16, -1, np.int32))
    without = keras.ops.convert_to_numpy(recipe(unmarked, {"embedding": emb, "logits": log_probs}))
    assert not np.allclose(got[:12], without[:12])  # the hard negatives change the triplets
    with pytest.raises(ValueError, match="only a triplet loss can use"):
        build_loss(resolve_config("bootstrap_softmax"), task)


def test_triplet_a_hn_classification_term_is_a_mean_over_labelled_rows():
    # Eq. 2.4-2.5: L = omega * L_triplet + (1 - omega) * mean over labelled x of -log p_C(x).
    # The trainer divides the per-example sum by B; hard negatives (label -1) must neither
    # add to the classification term nor shrink it (it was 12 / 16 of Triplet-A's before).
    from tests.losses.test_triplet import balanced_reference

    task = _pairs_task()
    recipe = build_loss(resolve_config("bootstrap_triplet_a_hn"), task)
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(16, 8)).astype(np.float64)
    log_probs = np.log(rng.dirichlet(np.ones(3), 16))
    labels, marks = task.train.labels, task.train.hard_negative_for
    assert (labels < 0).sum() == 4
    batch = {"labels": labels.astype(np.int32), "hard_negative_for": marks.astype(np.int32)}
    got = keras.ops.convert_to_numpy(recipe(batch, {"embedding": emb.astype(np.float32),
                                                    "logits": log_probs.astype(np.float32)}))
    kept = np.flatnonzero(labels >= 0)
    classification = -log_probs[kept, labels[kept]].mean()
    triplet, _ = balanced_reference(labels, emb, 0.2, 0.6, marks)
    np.testing.assert_allclose(got.sum() / 16, 0.9 * classification + 0.1 * triplet, rtol=1e-5)


# === The softmax baselines' epochs: at most hard_negative_ratio HN per image of S ===

def test_share_hook_caps_and_resamples_hard_negatives_per_epoch():
    marks = np.concatenate([np.full(10, -1), np.arange(30) % 3])
    first, again, second = (epoch_rows(marks, 0.5, 0, e) for e in (0, 0, 1))
    for rows in (first, second):
        assert (marks[rows] < 0).sum() == 10 and (marks[rows] >= 0).sum() == 5
    assert first.tolist() == again.tolist() and first.tolist() != second.tolist()
    assert len(epoch_rows(marks, 3.0, 0, 0)) == 40  # all fit: all of them
    replaced = []
    split = Split(labels=np.where(marks < 0, 0, 1), paths=np.array(["x"] * 40, dtype=object),
                  hard_negative_for=marks)
    trainer = types.SimpleNamespace(
        stage=types.SimpleNamespace(split=split, steps_per_epoch=3),
        task=types.SimpleNamespace(metadata={"hard_negative_ratio": 0.5}),
        config=types.SimpleNamespace(seed=0, batch_size=5), step_in_epoch=1,
        replace_order=replaced.append)
    HardNegativeShareHook().on_epoch_begin(trainer, 0)
    tail = replaced[0]
    assert len(tail) == 10 and set(tail) <= set(first)  # the rest of the epoch from step 1


# === Training: HN in every Triplet-A + HN batch, every config trains and round-trips ===

class _Orders(Hook):
    def __init__(self):
        self.orders = []

    def on_epoch_begin(self, trainer, epoch):
        self.orders.append(np.array(trainer._order))


def _overrides(manifest, name, batch):
    out = [f"task_kwargs.manifest={manifest}", "epochs=1", "steps_per_epoch=3",
           f"batch_size={batch}", "bn_reestimate_batches=1", "eval_batch_size=64",
           "checkpoint_every_steps=100", "warmup_epochs=0", "decay_epochs=()"]
    return out + (["refresh_every_steps=3", "refresh_max_examples=64"] if "triplet" in name
                  else [])


@pytest.mark.slow
@pytest.mark.parametrize("name, hard", [("bootstrap_triplet_a_hn", True),
                                        ("bootstrap_triplet_a", False)])
def test_human_hard_negatives_reach_the_triplet_loss(tmp_path, monkeypatch, name, hard):
    manifest, rows = round_manifest(str(tmp_path), per_class=10,
                                    hard_negatives={"bag": 6, "coat": 6})
    seen = []
    original = triplet_module.TripletLoss.call

    def record(self, y_true, y_pred):
        seen.append(keras.ops.convert_to_numpy(y_true))
        return original(self, y_true, y_pred)

    monkeypatch.setattr(triplet_module.TripletLoss, "call", record)
    orders = _Orders()
    config = resolve_config(name, _overrides(manifest, name, 16))
    tf.config.run_functions_eagerly(True)
    try:
        trainer = Trainer(config, hooks=[orders], verbose=0)
        trainer.run()
    finally:
        tf.config.run_functions_eagerly(False)
    batches = [y for y in seen if y.shape[0] == 16]
    assert len(batches) == 3
    marks = trainer.task.train.hard_negative_for
    if not hard:
        assert all(y.ndim == 1 and (y >= 0).all() for y in batches) and marks is None
        return
    assert not trainer.task.has_background  # no background rows: columns 0..N-1
    columns = {CATEGORIES.index("bag"), CATEGORIES.index("coat")}
    for y in batches:  # (label, hard_negative_for) rows; 4 of 16 = one per mined triplet
        assert y.shape == (16, 2)
        human = y[:, 0] == -1
        assert human.sum() == 4 and set(y[human, 1]) <= columns
        assert (y[~human, 1] == -1).all() and (y[~human, 0] >= 0).all()
    order = orders.orders[0].reshape(-1, 4)
    labels = trainer.task.train.labels
    assert (marks[order[:, 3]] >= 0).all() and (marks[order[:, :3]] == -1).all()
    assert (labels[order[:, 2]] != labels[order[:, 0]]).all()


@pytest.mark.slow
@pytest.mark.parametrize("name, extra", [
    ("bootstrap_softmax", []), ("bootstrap_softmax_hns", ["hard_negative"]),
    ("bootstrap_softmax_hnm", [f"hard_negative:{c}" for c in CATEGORIES]),
    ("bootstrap_triplet_a", []), ("bootstrap_triplet_a_hn", [])])
def test_each_config_trains_and_round_trips_keras(tmp_path, name, extra):
    manifest, _ = round_manifest(str(tmp_path), per_class=10, hard_negatives={"bag": 5})
    config = resolve_config(name, _overrides(manifest, name, 16))
    workdir = str(tmp_path / "w")
    trainer = Trainer(config, workdir=workdir, verbose=0)
    # Eagerly: 3 steps cost less than tracing them (test_rounds / test_cli train in graphs).
    tf.config.run_functions_eagerly(True)
    try:
        assert trainer.run()["steps"] == 3
    finally:
        tf.config.run_functions_eagerly(False)
    with open(os.path.join(workdir, "labels.txt")) as f:
        assert f.read().split() == [*CATEGORIES, *extra]
    with open(os.path.join(workdir, "preprocessing.json")) as f:  # the export folds them away
        assert json.load(f).get("absorbed_classes", []) == extra
    images = np.random.default_rng(0).uniform(0, 255, (5, 28, 28, 1)).astype(np.float32)
    trained = keras.ops.convert_to_numpy(trainer.model(images, training=False)["probabilities"])
    assert trained.shape == (5, len(CATEGORIES) + len(extra))
    model = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    np.testing.assert_allclose(model(images, training=False)["probabilities"], trained,
                               rtol=1e-5, atol=1e-6)
