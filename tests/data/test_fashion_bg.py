"""Fashion-BG: rare classes in a sea of background, and the teacher's source split.

Fake and real data. The teacher trained on that split, its pseudo-labels and their
cache: tests/training/test_teacher.py.
"""

import json
import os

import numpy as np
import pytest

from keras_fgvc.data import cache, fashion_mnist, make_fashion_bg
from tests.fake_fashion_mnist import assert_fashion_bg_layout, write_fake_fashion_mnist

RARE = (3, 6, 8)


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory):
    return write_fake_fashion_mnist(str(tmp_path_factory.mktemp("fashion")))


def _build(fake_dir, **kwargs):
    args = dict(rare_classes=RARE, background_fraction=0.9, val_size=60, teacher_size=140,
                seed=0, data_dir=fake_dir, verbose=0)
    args.update(kwargs)
    return make_fashion_bg(**args)


def test_structure_disjointness_and_teacher_source(fake_dir):
    task = _build(fake_dir)
    assert task.class_names == ["background", "Dress", "Shirt", "Bag"]
    others = [c for c in range(10) if c not in RARE]
    assert task.teacher_class_names == [fashion_mnist.CLASS_NAMES[c] for c in others]
    assert_fashion_bg_layout(task, fake_dir, RARE)
    idx = task.metadata["source_indices"]
    (x, y), _ = fashion_mnist.load_fashion_mnist(fake_dir)
    # Data trains nothing: no teacher labels, no teacher model; the source split is returned.
    for split in (task.train, task.val, task.test):
        assert split.teacher_labels is None and split.teacher_probabilities is None
    assert task.teacher_model is None
    source = task.metadata["teacher_source"]
    np.testing.assert_array_equal(source["images"], x[idx["teacher_train"]][..., None])
    np.testing.assert_array_equal(source["labels"],
                                  np.searchsorted(others, y[idx["teacher_train"]]))
    assert source["images"].dtype == np.uint8 and source["labels"].dtype == np.int64
    assert source["seed"] == 0
    assert sorted(source["key"]) == ["data", "eval_fraction", "fraction", "nb", "rare", "seed",
                                     "teacher_classes", "teacher_size", "val_size"]
    json.dumps(source["key"])  # JSON-safe
    assert "teacher_source" not in _build(fake_dir, teacher=False).metadata

def test_seeded_and_fraction_controls_positives(fake_dir, tmp_path):
    a = _build(fake_dir, teacher=False)
    b = _build(fake_dir, teacher=False)
    c = _build(fake_dir, teacher=False, seed=3)
    np.testing.assert_array_equal(a.train.images, b.train.images)
    assert not np.array_equal(a.metadata["source_indices"]["train"],
                              c.metadata["source_indices"]["train"])
    assert a.train.teacher_labels is None
    rare = _build(fake_dir, teacher=False, background_fraction=0.99)
    assert rare.class_counts()[1:].tolist() == [1, 1, 1]
    assert rare.class_counts()[0] == a.class_counts()[0]
    evals = _build(fake_dir, teacher=False, eval_background_fraction=0.9)
    assert evals.background_fraction("test") == pytest.approx(0.9, abs=0.02)


def test_bad_input(fake_dir, tmp_path):
    with pytest.raises(ValueError, match="rare_classes"):
        _build(fake_dir, teacher=False, rare_classes=(3, 10))
    with pytest.raises(ValueError, match="background_fraction"):
        _build(fake_dir, teacher=False, background_fraction=1.0)
    with pytest.raises(ValueError, match="only .* left"):
        _build(fake_dir, teacher=False, background_fraction=0.2)
    with pytest.raises(ValueError, match="teacher_size=100000 must be in"):
        _build(fake_dir, teacher=False, teacher_size=100000)
    with pytest.raises(ValueError, match="teacher_size=0 must be in"):
        _build(fake_dir, teacher=True, teacher_size=0)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        _build(str(tmp_path / "none"), teacher=False)


@pytest.mark.skipif(not os.path.isdir(fashion_mnist.DEBIAN_DIR),
                    reason="dataset-fashion-mnist is not installed")
@pytest.mark.parametrize("fraction,per_class", [(0.9, 1053), (0.98, 193), (0.998, 19)])
def test_real_fashion_bg_structure(tmp_path, fraction, per_class):
    task = make_fashion_bg(background_fraction=fraction, teacher=False, verbose=0)
    counts = task.class_counts()
    assert counts[1:].tolist() == [per_class] * 3
    assert task.background_fraction() == pytest.approx(fraction, abs=2e-4)
    assert (len(task.val), len(task.test)) == (5000, 10000)
    assert task.class_counts("test").tolist() == [7000, 1000, 1000, 1000]


def test_cache_write_is_atomic(tmp_path, monkeypatch):
    path = os.fspath(tmp_path / "entry.npz")
    cache.save_npz(path, a=np.arange(3))

    def broken_savez(file, **arrays):
        with open(file, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(cache.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        cache.save_npz(path, a=np.arange(5))
    monkeypatch.undo()
    np.testing.assert_array_equal(cache.load_npz(path)["a"], np.arange(3))  # old entry intact
    assert os.listdir(tmp_path) == ["entry.npz"]  # no temporary file left behind
    assert cache.cache_key(a=1, b=[2]) == cache.cache_key(b=[2], a=1)
    assert cache.cache_key(a=1) != cache.cache_key(a=2)


def test_teacher_classes_bad_input(fake_dir, tmp_path):
    for bad, match in [((0, 3), r"rare class\(es\) \[3\]"), ((0, 0), "distinct"),
                       ((0, 10), "distinct"), ((), "distinct"), ("ab", "class ids")]:
        with pytest.raises(ValueError, match=match):
            _build(fake_dir, teacher=False, teacher_classes=bad)
