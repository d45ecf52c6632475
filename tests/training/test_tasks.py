"""Paper-scale tasks carve validation from their training split by default.

Small iNat 2017 / Places365 / CUB trees (metadata only: the loaders read no pixels) with
unequal classes: a singleton, tiny classes and larger ones. Every check maps the task's
paths back to the source class the tree wrote, so background tasks are checked too.
"""

import json
import logging
import os

import numpy as np
import pytest

from keras_fgvc.training import tasks
from keras_fgvc.training.config import Config

# Training images per source class, and the val share of each at the default 0.1:
# round(0.1 * n) rounded half up, at least 1 once n >= 2, never the last one.
TRAIN_COUNTS = [1, 2, 3, 5, 12, 25]
EXPECTED_VAL = [0, 1, 1, 1, 1, 3]
TEST_PER_CLASS = 2


def _rows(counts, per_class_test):
    train = [(c, k) for c, n in enumerate(counts) for k in range(n)]
    test = [(c, k) for c in range(len(counts)) for k in range(per_class_test)]
    return train, test


def _write_inat(root):
    categories = [{"id": 100 + c, "name": f"species_{c}"} for c in range(len(TRAIN_COUNTS))]
    out = {}
    for split, rows in zip(("train", "val"), _rows(TRAIN_COUNTS, TEST_PER_CLASS)):
        images = [{"id": i + 1, "file_name": f"{split}/{c}/{k}.jpg"}
                  for i, (c, k) in enumerate(rows)]
        annotations = [{"image_id": i + 1, "category_id": 100 + c}
                       for i, (c, _) in enumerate(rows)]
        with open(os.path.join(root, f"{split}2017.json"), "w") as f:
            json.dump({"images": images, "annotations": annotations,
                       "categories": categories}, f)
        out[split] = {os.path.join(root, img["file_name"]): c
                      for img, (c, _) in zip(images, rows)}
    return out["train"], out["val"]


def _write_places(root):
    with open(os.path.join(root, "categories_places365.txt"), "w") as f:
        f.writelines(f"/s/scene_{c} {c}\n" for c in range(len(TRAIN_COUNTS)))
    train_rows, test_rows = _rows(TRAIN_COUNTS, TEST_PER_CLASS)
    out = []
    for folder, name, rows, fmt in (
            ("data_256", "places365_train_standard.txt", train_rows, "/s/scene_{c}/{k:08d}.jpg"),
            ("val_256", "places365_val.txt", test_rows, "Places365_val_{c}_{k}.jpg")):
        os.makedirs(os.path.join(root, folder))
        listed = [(fmt.format(c=c, k=k), c) for c, k in rows]
        with open(os.path.join(root, name), "w") as f:
            f.writelines(f"{p} {c}\n" for p, c in listed)
        out.append({os.path.join(root, folder, p.lstrip("/")): c for p, c in listed})
    return tuple(out)


def _write_cub(root):
    train_rows, test_rows = _rows(TRAIN_COUNTS, TEST_PER_CLASS)
    rows = [(c, f"{c + 1:03d}.bird/train_{k}.jpg", 1) for c, k in train_rows]
    rows += [(c, f"{c + 1:03d}.bird/test_{k}.jpg", 0) for c, k in test_rows]
    for name, value in (("images.txt", lambda c, p, t: p),
                        ("image_class_labels.txt", lambda c, p, t: c + 1),  # ids 1..K
                        ("train_test_split.txt", lambda c, p, t: t)):
        with open(os.path.join(root, name), "w") as f:
            f.writelines(f"{i + 1} {value(*row)}\n" for i, row in enumerate(rows))
    paths = [(os.path.join(root, "images", p), c, t) for c, p, t in rows]
    return ({p: c for p, c, t in paths if t}, {p: c for p, c, t in paths if not t})


_WRITERS = {"inat": _write_inat, "places": _write_places, "cub": _write_cub}
# Every paper-scale task, with the task_kwargs that fit a 6-category tree.
_TASKS = {
    "inat2017": ("inat", {}),
    "cub": ("cub", {}),
    # N = number of categories: every category labelled (the N = 5089 setting).
    "inat_bg": ("inat", {"n": 6, "num_test_categories": 2, "num_train_categories": 3}),
    # Three of the six categories rare, the others background.
    "places_bg": ("places", {"n": 3, "group_size": 3, "num_group_models": 2,
                             "num_binary_models": 1}),
}


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    out = {}
    for kind, write in _WRITERS.items():
        root = str(tmp_path_factory.mktemp(kind))
        out[kind] = (root, *write(root))
    return out


def _build(trees, task, seed=0, **task_kwargs):
    kind, kwargs = _TASKS[task]
    root, train_rows, test_rows = trees[kind]
    config = Config(name=f"val_carving_{task}", task=task, data_dir=root, seed=seed,
                    task_kwargs={**kwargs, **task_kwargs})
    return tasks.build_task(config), train_rows, test_rows


def _source_counts(split, rows):
    return np.bincount([rows[p] for p in split.paths], minlength=len(TRAIN_COUNTS)).tolist()


@pytest.mark.parametrize("task_name", sorted(_TASKS))
def test_default_val_is_carved_from_train_stratified_and_disjoint(task_name, trees):
    task, train_rows, test_rows = _build(trees, task_name)
    train, val, test = (set(s.paths) for s in (task.train, task.val, task.test))
    # The old default made val the test split: val must now be none of it.
    assert val and val.isdisjoint(test) and val != test
    assert val <= set(train_rows) and val.isdisjoint(train)
    assert train | val == set(train_rows)  # nothing of train lost or duplicated
    assert test == set(test_rows)  # the official test split is untouched
    assert len(task.train) + len(task.val) == len(train_rows)
    # Stratified: each class gives its share; a singleton and the last image stay in train.
    assert _source_counts(task.val, train_rows) == EXPECTED_VAL
    assert _source_counts(task.train, train_rows) == [
        n - v for n, v in zip(TRAIN_COUNTS, EXPECTED_VAL)]
    if not task.has_background:  # labels are the source classes
        np.testing.assert_array_equal(task.val.labels, [train_rows[p] for p in task.val.paths])


@pytest.mark.parametrize("task_name", sorted(_TASKS))
def test_val_carving_is_seeded_by_the_config_seed(task_name, trees):
    first = _build(trees, task_name, seed=0)[0]
    again = _build(trees, task_name, seed=0)[0]
    other = _build(trees, task_name, seed=1)[0]
    np.testing.assert_array_equal(first.val.paths, again.val.paths)
    np.testing.assert_array_equal(first.train.paths, again.train.paths)
    assert set(other.val.paths) != set(first.val.paths)
    train_rows = _build(trees, task_name, seed=1)[1]
    assert _source_counts(other.val, train_rows) == EXPECTED_VAL


def test_val_fraction_is_a_task_kwarg(trees):
    task, train_rows, _ = _build(trees, "cub", val_fraction=0.2)
    # round(0.2 * n): 0.4 -> 1 (at least one), 0.6, 1.0 -> 1, 2.4 -> 2, 5.0 -> 5.
    assert _source_counts(task.val, train_rows) == [0, 1, 1, 1, 2, 5]
    with pytest.raises(ValueError, match="val_fraction must be in"):
        _build(trees, "cub", val_fraction=1.0)


@pytest.mark.parametrize("task_name", ["inat2017", "places_bg"])
def test_val_fraction_zero_is_an_explicit_opt_in_that_warns(task_name, trees, caplog):
    with caplog.at_level(logging.WARNING, logger="keras_fgvc.data.splits"):
        task, train_rows, test_rows = _build(trees, task_name, val_fraction=0)
    np.testing.assert_array_equal(task.val.paths, task.test.paths)
    assert set(task.train.paths) == set(train_rows)
    assert "validation IS the test split" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keras_fgvc.data.splits"):
        _build(trees, task_name)
    assert "test split" not in caplog.text  # the default carves quietly
