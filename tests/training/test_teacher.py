"""The Fashion-BG teacher (`keras_fgvc.training.teacher`): training, pseudo-labels, cache.

The task and the teacher's source split themselves: tests/data/test_fashion_bg.py.
"""

import functools
import os

import keras
import numpy as np
import pytest

from keras_fgvc.data import cache, fashion_mnist, make_fashion_bg
from keras_fgvc.data.idx import write_idx
from keras_fgvc.training.teacher import (
    _builder_name,
    attach_fashion_bg_teacher,
    default_teacher_builder,
    make_fashion_bg_with_teacher,
    recalibrate_batch_norm,
    teacher_cache_path,
    teacher_predictions,
    train_teacher,
)
from tests.fake_fashion_mnist import assert_fashion_bg_layout, write_fake_fashion_mnist

RARE = (3, 6, 8)


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory):
    return write_fake_fashion_mnist(str(tmp_path_factory.mktemp("fashion")))


class CountingBuilder:
    """A tiny dict-output teacher (logits / probabilities), counting its builds."""

    def __init__(self):
        self.calls = 0

    def __call__(self, num_classes, input_shape):
        self.calls += 1
        inputs = keras.Input(input_shape)
        x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
        logits = keras.layers.Dense(num_classes)(x)
        return keras.Model(inputs, {"logits": logits,
                                    "probabilities": keras.layers.Softmax()(logits)})


def _build(fake_dir, cache_dir, builder, **kwargs):
    args = dict(rare_classes=RARE, background_fraction=0.9, val_size=60, teacher_size=140,
                seed=0, teacher_epochs=15, teacher_builder=builder, cache_dir=cache_dir,
                data_dir=fake_dir, verbose=0)
    args.update(kwargs)
    return make_fashion_bg_with_teacher(**args)


def test_structure_disjointness_and_teacher(fake_dir, tmp_path):
    builder = CountingBuilder()
    task = _build(fake_dir, str(tmp_path), builder, teacher_splits=("train", "val", "test"))
    assert task.class_names == ["background", "Dress", "Shirt", "Bag"]
    assert task.teacher_class_names == [fashion_mnist.CLASS_NAMES[c]
                                        for c in range(10) if c not in RARE]
    assert_fashion_bg_layout(task, fake_dir, RARE)
    assert "N=3 rare" in task.summary()
    for split in (task.train, task.val, task.test):
        assert split.images.shape[1:] == (28, 28, 1) and split.images.dtype == np.uint8
        assert split.teacher_probabilities.shape == (len(split), 7)
        np.testing.assert_allclose(split.teacher_probabilities.sum(1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(split.teacher_labels,
                                      split.teacher_probabilities.argmax(1))
    # The band images are easy: the teacher labels background val images correctly.
    idx = task.metadata["source_indices"]
    (_, y), _ = fashion_mnist.load_fashion_mnist(fake_dir)
    bg = task.val.labels == 0
    true_teacher = np.searchsorted([0, 1, 2, 4, 5, 7, 9], y[idx["val"]][bg])
    assert np.mean(task.val.teacher_labels[bg] == true_teacher) > 0.8
    assert builder.calls == 1


def test_teacher_is_cached_atomically_and_reused(fake_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_FGVC_CACHE", str(tmp_path / "envcache"))
    assert cache.default_cache_dir() == str(tmp_path / "envcache")
    builder = CountingBuilder()
    first = _build(fake_dir, None, builder)
    files = sorted(os.listdir(tmp_path / "envcache"))
    # The pseudo-labels and the teacher itself (students start from its trunk).
    assert len(files) == 2 and all(f.startswith("fashion_bg_teacher-") for f in files)
    assert [f.rsplit(".", 1)[1] for f in files] == ["keras", "npz"]
    assert first.teacher_model == os.path.join(tmp_path / "envcache", files[0])
    files = files[1:]
    second = _build(fake_dir, None, builder)
    assert builder.calls == 1  # served from the cache
    assert second.teacher_model == first.teacher_model
    np.testing.assert_array_equal(first.train.teacher_labels, second.train.teacher_labels)
    np.testing.assert_array_equal(first.train.images, second.train.images)
    assert first.val.teacher_labels is None  # only the train split by default
    _build(fake_dir, None, builder, seed=1)
    assert builder.calls == 2 and len(os.listdir(tmp_path / "envcache")) == 4
    # A corrupt cache entry is ignored and rewritten.
    path = os.path.join(tmp_path / "envcache", files[0])
    with open(path, "wb") as f:
        f.write(b"broken")
    _build(fake_dir, None, builder)
    assert builder.calls == 3 and cache.load_npz(path) is not None
    # An entry without its teacher model is recomputed (the model is part of the entry).
    os.remove(first.teacher_model)
    third = _build(fake_dir, None, builder)
    assert builder.calls == 4 and os.path.isfile(third.teacher_model)
    np.testing.assert_array_equal(third.train.teacher_labels, first.train.teacher_labels)


def test_bad_input(fake_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown split 'training'"):
        _build(fake_dir, str(tmp_path), None, teacher_splits=("training",))
    with pytest.raises(ValueError, match="teacher label 7 is outside"):
        train_teacher(np.zeros((2, 28, 28), np.uint8), [0, 7], 3, builder=CountingBuilder())
    plain = make_fashion_bg(rare_classes=RARE, background_fraction=0.9, val_size=60,
                            teacher_size=140, data_dir=fake_dir, verbose=0, teacher=False)
    with pytest.raises(ValueError, match="no teacher source split"):
        attach_fashion_bg_teacher(plain, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown split 'training'"):
        attach_fashion_bg_teacher(plain, splits=("training",), cache_dir=str(tmp_path))


def test_attach_to_a_data_task_is_the_wrapper(fake_dir, tmp_path):
    """make_fashion_bg + attach_fashion_bg_teacher = make_fashion_bg_with_teacher (one entry)."""
    builder = CountingBuilder()
    wrapped = _build(fake_dir, str(tmp_path), builder)
    task = make_fashion_bg(rare_classes=RARE, background_fraction=0.9, val_size=60,
                           teacher_size=140, data_dir=fake_dir, verbose=0)
    attached = attach_fashion_bg_teacher(task, epochs=15, builder=builder,
                                         cache_dir=str(tmp_path), verbose=0)
    assert builder.calls == 1  # the second is served from the first's cache entry
    assert attached.teacher_model == wrapped.teacher_model
    assert attached.teacher_model.endswith(".keras") and os.path.isfile(attached.teacher_model)
    np.testing.assert_array_equal(attached.train.teacher_labels, wrapped.train.teacher_labels)
    assert task.train.teacher_labels is None and task.teacher_model is None  # not modified
    assert attached.val.teacher_labels is None
    assert teacher_cache_path(task, 15, builder, ("train",), str(tmp_path)) == \
        attached.teacher_model[:-len(".keras")] + ".npz"


def test_cache_file_name_is_unchanged(fake_dir, tmp_path):
    """The key hashes what it hashed when data/fashion_bg.py trained the teacher, so the
    caches users already have stay valid (name computed with that code)."""
    task = make_fashion_bg(rare_classes=RARE, background_fraction=0.9, val_size=60,
                           teacher_size=140, data_dir=fake_dir, verbose=0)
    path = teacher_cache_path(task, 15, None, ("train",), str(tmp_path))
    assert os.path.basename(path) == "fashion_bg_teacher-186d9a37733989d6.npz"
    path = teacher_cache_path(task, 2, None, ("val", "train"), str(tmp_path))
    assert os.path.basename(path) == "fashion_bg_teacher-3e4dfafcf9f9315a.npz"


def test_teacher_with_plain_logits_model():
    def builder(k, shape):
        return keras.Sequential([keras.Input(shape), keras.layers.Flatten(),
                                 keras.layers.Dense(k)])

    x = np.zeros((8, 4, 4), np.uint8)
    x[4:] = 255
    y = np.array([0] * 4 + [1] * 4)
    model = train_teacher(x, y, 2, builder=builder, epochs=20, batch_size=8,
                          learning_rate=0.05, verbose=0)
    labels, probs = teacher_predictions(model, x)
    assert labels.tolist() == y.tolist() and probs.shape == (8, 2)


def test_recalibrate_batch_norm_matches_numpy():
    inputs = keras.Input((3, 3, 2))
    outputs = keras.layers.BatchNormalization()(keras.layers.Rescaling(1.0)(inputs))
    inner = keras.Model(inputs, outputs)
    model = keras.Sequential([keras.Input((3, 3, 2)), inner])  # nested models are searched
    x = np.random.default_rng(0).uniform(0, 255, size=(16, 3, 3, 2)).astype(np.float32)
    assert recalibrate_batch_norm(model, x, batch_size=16, num_batches=3) == 1
    bn = inner.layers[-1]
    # Every batch is all 16 images, so the average of batch statistics is the statistic.
    np.testing.assert_allclose(bn.moving_mean.numpy(), x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), x.var(axis=(0, 1, 2)), rtol=1e-4)
    assert bn.momentum == 0.99  # restored


def test_default_teacher_is_small_cnn():
    model = default_teacher_builder(7, (28, 28, 1))
    out = model(np.zeros((2, 28, 28, 1), np.float32))
    assert out["logits"].shape == (2, 7) and out["probabilities"].shape == (2, 7)
    labels, probs = teacher_predictions(model, np.zeros((3, 28, 28), np.uint8))
    assert labels.shape == (3,) and probs.shape == (3, 7)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)


def test_cache_key_covers_the_images_not_only_the_labels(fake_dir, tmp_path):
    # Same labels, different pixels (e.g. another copy of the data): the teacher
    # predictions of the first set must not be served for the second.
    other = tmp_path / "other"
    other.mkdir()
    (x, y), (xt, yt) = fashion_mnist.load_fashion_mnist(fake_dir)
    for part, images, labels in (("train", 255 - x, y), ("t10k", 255 - xt, yt)):
        images, labels = images.astype(np.uint8), labels.astype(np.uint8)
        write_idx(os.fspath(other / f"{part}-images-idx3-ubyte.gz"), images)
        write_idx(os.fspath(other / f"{part}-labels-idx1-ubyte.gz"), labels)
    builder = CountingBuilder()
    _build(fake_dir, str(tmp_path / "c"), builder, teacher_epochs=1)
    _build(os.fspath(other), str(tmp_path / "c"), builder, teacher_epochs=1)
    assert builder.calls == 2
    assert len([f for f in os.listdir(tmp_path / "c") if f.endswith(".npz")]) == 2


def test_builder_names_in_the_cache_key_tell_builders_apart():
    def make(width):
        return lambda k, shape: width * k

    first, second = (lambda k, s: k), (lambda k, s: k + 1)
    assert _builder_name(first) != _builder_name(second)  # both "<lambda>" by name
    assert _builder_name(first) == _builder_name(first)
    assert _builder_name(make(1)) != _builder_name(make(2))  # same code, other closure
    assert _builder_name(make(1)) == _builder_name(make(1))
    assert _builder_name(functools.partial(max, 1)) != _builder_name(functools.partial(max, 2))
    assert _builder_name(CountingBuilder()).endswith("CountingBuilder")
    assert _builder_name(None) == "small_cnn"
    # Stable across processes: no memory addresses in the name.
    assert "0x" not in _builder_name(first) + _builder_name(functools.partial(max, 1))


def test_teacher_classes_exclude_held_out_classes_and_key_the_cache(fake_dir, tmp_path):
    """Appendix D: the S1 teacher is trained without the S2 classes (2, 4, 7)."""
    teacher_classes = (9, 0, 1, 5)  # non-rare, non-S2; given unsorted
    builder = CountingBuilder()
    default = _build(fake_dir, str(tmp_path), builder, teacher_splits=("train", "val"))
    task = _build(fake_dir, str(tmp_path), builder, teacher_classes=teacher_classes,
                  teacher_splits=("train", "val"))
    assert builder.calls == 2  # a different teacher: not served from the default's entry
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".npz")]) == 2
    _build(fake_dir, str(tmp_path), builder, teacher_classes=[0, 1, 5, 9],
           teacher_splits=("train", "val"))
    assert builder.calls == 2  # same classes, other order: the same cache entry
    assert task.teacher_class_names == ["T-shirt/top", "Trouser", "Sandal", "Ankle boot"]
    assert task.metadata["teacher_classes"] == [0, 1, 5, 9]
    assert default.metadata["teacher_classes"] == [0, 1, 2, 4, 5, 7, 9]
    # The task's own splits are unchanged; only the teacher's training images shrink.
    for name in ("train", "val", "test", "teacher"):
        np.testing.assert_array_equal(task.metadata["source_indices"][name],
                                      default.metadata["source_indices"][name])
    (_, y), _ = fashion_mnist.load_fashion_mnist(fake_dir)
    idx = task.metadata["source_indices"]
    seen = y[idx["teacher_train"]]
    assert set(seen.tolist()) == {0, 1, 5, 9}
    assert len(idx["teacher_train"]) == np.isin(y[idx["teacher"]], [0, 1, 5, 9]).sum()
    assert set(y[default.metadata["source_indices"]["teacher_train"]].tolist()) == {
        0, 1, 2, 4, 5, 7, 9}
    for split in (task.train, task.val):
        assert split.teacher_probabilities.shape == (len(split), 4)
        assert split.teacher_labels.min() >= 0 and split.teacher_labels.max() <= 3
    # Teacher label j = j-th teacher class: the band images are easy to tell apart.
    val_y = y[idx["val"]]
    known = np.isin(val_y, [0, 1, 5, 9])
    expected = np.searchsorted([0, 1, 5, 9], val_y[known])
    assert np.mean(task.val.teacher_labels[known] == expected) > 0.8
