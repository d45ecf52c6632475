"""A bootstrapping round's hard-negative classes fold into the served background (issue 17).

Softmax + HNS / HNM train with extra classes (``hard_negative``,
``hard_negative:<category>``) that only absorb probability mass. The trainer
lists them as ``absorbed_classes`` in ``W/preprocessing.json``
(`evaluation.served_layout`); the export serves the categories alone, with
background = p(background) + p(hard-negative classes), and the category
thresholds the trainer chose on the same probabilities.
"""

import json
import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.data.bootstrap_manifest import load_bootstrap_task
from keras_fgvc.data.preprocessing import make_spec
from keras_fgvc.export import saved_model
from keras_fgvc.training import artifacts, evaluation
from tests.bootstrap.loop_data import CATEGORIES, SIZE, round_manifest
from tests.test_case import reload_in_fresh_process

HNM = [f"hard_negative:{c}" for c in CATEGORIES]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("round")
    path, _ = round_manifest(str(root), per_class=3, background=3,
                             hard_negatives={"bag": 2, "coat": 1})
    return path


def _task(manifest, mode, background="class"):
    return load_bootstrap_task(manifest, hard_negatives=mode, background=background,
                               channels=1, val_fraction=0.4,
                               cache_dir=os.path.join(os.path.dirname(manifest), "cache"))


def _model(width, seed=0):
    """Images in [0, 255] -> ``{"probabilities"}`` over `width` classes (random weights)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 64)(inputs))
    logits = keras.layers.Dense(width, kernel_initializer=keras.initializers.RandomNormal(
        stddev=0.05))(x)
    return keras.Model(inputs, {"probabilities": keras.layers.Softmax()(logits)})


def _images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 1)).astype(np.float32)


def _probabilities(model, images):
    return keras.ops.convert_to_numpy(model(images, training=False)["probabilities"])


def _workdir(task, path):
    """A workdir as the trainer writes it, with a random-weight model and its thresholds."""
    model = _model(task.num_classes)
    val = _probabilities(model, _images(len(task.val), seed=1))
    thresholds = evaluation.thresholds(task, task.val.labels, val)
    preprocessing = {**make_spec(SIZE, 1, aspect="stretch"), **evaluation.served_layout(task)}
    artifacts.write_results(path, model, task.class_names, thresholds, preprocessing, {})
    return model, thresholds


def test_served_layout_lists_only_the_hard_negative_classes(manifest):
    expected = {"none": [], "pairs": [], "one_class": ["hard_negative"], "per_class": HNM}
    for mode, absorbed in expected.items():
        task = _task(manifest, mode)
        layout = evaluation.served_layout(task)
        assert layout == {"has_background": True,
                          **({"absorbed_classes": absorbed} if absorbed else {})}, mode
    task = _task(manifest, "per_class", background="ignore")
    assert evaluation.served_layout(task) == {"has_background": False, "absorbed_classes": HNM}


@pytest.mark.parametrize("mode, background", [("one_class", "class"), ("per_class", "class"),
                                              ("per_class", "ignore")])
def test_export_serves_the_categories_and_folds_hard_negatives_into_background(
        manifest, tmp_path, mode, background):
    task = _task(manifest, mode, background)
    columns = task.metadata["category_columns"]
    absorbed = [c for c, n in enumerate(task.class_names) if n.startswith("hard_negative")]
    assert absorbed and not set(absorbed) & set(columns)
    workdir = str(tmp_path / "w")
    model, trained = _workdir(task, workdir)
    info = saved_model.read_workdir(workdir)
    assert info["class_names"] == list(CATEGORIES) and info["absorbed_columns"] == absorbed
    path = saved_model.export_from_workdir(workdir, str(tmp_path / "models"), "det",
                                           warmup_batch_sizes=(), update_model_config=False)

    # The trainer's category thresholds, chosen on the category columns' probabilities.
    category_thresholds = [trained["thresholds"][trained["class_names"].index(c)]
                           for c in CATEGORIES]
    with open(os.path.join(path, "assets", "labels.txt")) as f:
        assert f.read().splitlines() == list(CATEGORIES)
    with open(os.path.join(path, "assets", "thresholds.json")) as f:
        assert json.load(f) == {"class_names": list(CATEGORIES),
                                "thresholds": category_thresholds}
    with open(os.path.join(path, "assets", "preprocessing.json")) as f:
        assert json.load(f)["absorbed_columns"] == absorbed  # what `background` also sums
    loaded = tf.saved_model.load(path)
    meta = loaded.signatures["metadata"]()
    assert [n.decode() for n in meta["class_names"].numpy()] == list(CATEGORIES)
    np.testing.assert_allclose(meta["thresholds"].numpy(), category_thresholds, rtol=1e-6)

    images = _images(3, seed=2)
    for n in (1, 3):
        probabilities = _probabilities(model, images[:n])
        out = loaded.signatures["predict_images"](images=tf.constant(images[:n]))
        scores = out["scores"].numpy()
        np.testing.assert_allclose(scores, probabilities[:, columns], atol=1e-5)
        folded = probabilities[:, absorbed].sum(axis=1)
        if task.has_background:
            folded += probabilities[:, 0]
        np.testing.assert_allclose(out["background"].numpy(), folded, atol=1e-5)
        np.testing.assert_allclose(scores.sum(axis=1) + out["background"].numpy(), 1.0,
                                   atol=1e-5)
        np.testing.assert_array_equal(out["detected"].numpy(), scores >= category_thresholds)

    if mode == "one_class":  # once: a fresh process (no state of this one) serves the same
        fresh = reload_in_fresh_process(path, "predict_images", [images])
        np.testing.assert_allclose(fresh["scores"], _probabilities(model, images)[:, columns],
                                   atol=1e-5)
        np.testing.assert_allclose(fresh["scores"].sum(axis=1) + fresh["background"], 1.0,
                                   atol=1e-5)

    # serving_default and classify (what REST :classify runs) serve the categories only.
    encoded = [tf.io.encode_png(tf.cast(image, tf.uint8)).numpy() for image in images]
    default = loaded.signatures["serving_default"](image_bytes=tf.constant(encoded))
    np.testing.assert_allclose(default["scores"].numpy(),
                               _probabilities(model, images)[:, columns], atol=1e-5)
    examples = [tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))}))
        .SerializeToString() for data in encoded]
    classified = loaded.signatures["classify"](inputs=tf.constant(examples))
    assert [[c.decode() for c in row] for row in classified["classes"].numpy()] == \
        [list(CATEGORIES)] * 3
    np.testing.assert_allclose(classified["scores"].numpy(), default["scores"].numpy(),
                               atol=1e-6)


def test_a_workdir_without_hard_negative_classes_reads_as_before(manifest, tmp_path):
    task = _task(manifest, "pairs")
    _, trained = _workdir(task, str(tmp_path))
    with open(tmp_path / "preprocessing.json") as f:
        assert "absorbed_classes" not in json.load(f)
    info = saved_model.read_workdir(str(tmp_path))
    assert info["class_names"] == list(CATEGORIES) == trained["class_names"]
    assert info["thresholds"] == trained["thresholds"] and info["absorbed_columns"] == []


@pytest.mark.parametrize("mode", ["one_class", "per_class"])
def test_a_round_trained_before_absorbed_classes_existed_folds_them_with_a_warning(
        manifest, tmp_path, mode):
    """A round workdir (lineage.json) without the key: its reserved-name hard-negative
    classes are absorbed as if the trainer had listed them; a workdir with no lineage
    (not a bootstrapping round) is read as it says."""
    task = _task(manifest, mode)
    _workdir(task, str(tmp_path))
    expected = saved_model.read_workdir(str(tmp_path))
    assert expected["absorbed_columns"]
    with open(tmp_path / "preprocessing.json") as f:
        preprocessing = json.load(f)
    del preprocessing["absorbed_classes"]
    artifacts.write_json(str(tmp_path / "preprocessing.json"), preprocessing)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = saved_model.read_workdir(str(tmp_path))  # no lineage: no guess, no warning
    assert plain["absorbed_columns"] == [] and len(plain["class_names"]) == task.num_classes - 1
    artifacts.write_json(str(tmp_path / "lineage.json"), {"round": 1})
    with pytest.warns(UserWarning, match="has no absorbed_classes .* folded into background"):
        legacy = saved_model.read_workdir(str(tmp_path))
    for key in ("class_names", "thresholds", "absorbed_columns"):
        assert legacy[key] == expected[key], key
    assert legacy["lineage"] == {"round": 1}


def test_bad_absorbed_classes_and_columns_are_refused(manifest, tmp_path):
    task = _task(manifest, "one_class")
    model, _ = _workdir(task, str(tmp_path))
    with open(tmp_path / "preprocessing.json") as f:
        preprocessing = json.load(f)
    artifacts.write_json(str(tmp_path / "preprocessing.json"),
                         {**preprocessing, "absorbed_classes": ["zebra"]})
    for bad in (["zebra"], "hard_negative", [["hard_negative"]],
                ["hard_negative", "hard_negative"]):
        artifacts.write_json(str(tmp_path / "preprocessing.json"),
                             {**preprocessing, "absorbed_classes": bad})
        with pytest.raises(ValueError, match="absorbed_classes .* must be a list of "
                                             "distinct foreground classes"):
            saved_model.read_workdir(str(tmp_path))
    artifacts.write_json(str(tmp_path / "preprocessing.json"), preprocessing)
    with open(tmp_path / "thresholds.json") as f:
        thresholds = json.load(f)
    artifacts.write_json(str(tmp_path / "thresholds.json"),
                         {**thresholds, "thresholds": thresholds["thresholds"][:-1]})
    with pytest.raises(ValueError, match="has 3 thresholds for the 4 foreground classes"):
        saved_model.read_workdir(str(tmp_path))
    artifacts.write_json(str(tmp_path / "thresholds.json"), thresholds)
    # What the caller passes wins over the workdir's own values.
    path = saved_model.export_from_workdir(str(tmp_path), str(tmp_path / "over"), "det",
                                           thresholds=[0.25] * len(CATEGORIES),
                                           warmup_batch_sizes=(), update_model_config=False)
    with open(os.path.join(path, "assets", "thresholds.json")) as f:
        assert json.load(f)["thresholds"] == [0.25] * len(CATEGORIES)
    base = str(tmp_path / "models")
    for columns, message in (([0], "0 is not a foreground column"),
                             ([5], "5 is not a foreground column"),
                             ([4, 4], "lists a column twice")):
        with pytest.raises(ValueError, match=message):
            saved_model.export_model(model, base, "det", list(CATEGORIES),
                                     absorbed_columns=columns, warmup_batch_sizes=())
    with pytest.raises(ValueError, match="class_names has 4 names but the model scores 3"):
        saved_model.export_model(model, base, "det", [*CATEGORIES, "hard_negative"],
                                 absorbed_columns=[4], warmup_batch_sizes=())
    assert not os.path.exists(base) or not os.listdir(os.path.join(base, "det"))
