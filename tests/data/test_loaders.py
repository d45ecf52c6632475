"""Local-file loaders on small fake trees: iNat 2017 JSON, Places365 lists, image folder, CUB."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.data import (
    load_cub,
    load_image_folder,
    load_inaturalist,
    load_places365,
    read_file_list,
)
from keras_fgvc.data.splits import carve_validation
from keras_fgvc.data.task import Split


def _png(path, value=0, shape=(6, 5, 3)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(path, tf.io.encode_png(np.full(shape, value, np.uint8)))


def _inat_json(path, root, images, categories):
    anns = [{"id": i, "image_id": i, "category_id": c} for i, (_, c) in enumerate(images)]
    data = {"images": [{"id": i, "file_name": f} for i, (f, _) in enumerate(images)],
            "annotations": anns,
            "categories": [{"id": c, "name": n, "supercategory": "Plantae"}
                           for c, n in categories]}
    for f, _ in images:
        _png(os.path.join(root, f))
    with open(path, "w") as fh:
        json.dump(data, fh)


def test_inaturalist(tmp_path):
    root = str(tmp_path)
    cats = [(2, "c2"), (0, "c0"), (1, "c1")]
    _inat_json(f"{root}/train2017.json", root,
               [(f"train_val_images/a/{i}.jpg", i % 3) for i in range(9)], cats)
    _inat_json(f"{root}/val2017.json", root, [("val/x.jpg", 2), ("val/y.jpg", 0)], cats)
    task = load_inaturalist(f"{root}/train2017.json", f"{root}/val2017.json", val_fraction=0)
    assert task.class_names == ["c0", "c1", "c2"] and not task.has_background
    assert task.train.labels.tolist() == [0, 1, 2] * 3
    assert task.test.labels.tolist() == [2, 0] and task.val is task.test
    assert task.train.paths[4] == os.path.join(root, "train_val_images/a/4.jpg")
    assert all(os.path.exists(p) for p in task.train.paths)
    # By default val is carved from train (one of each class's three images), not the test.
    carved = load_inaturalist(f"{root}/train2017.json", f"{root}/val2017.json")
    assert sorted(carved.val.labels.tolist()) == [0, 1, 2] and len(carved.train) == 6
    assert set(carved.val.paths) <= set(task.train.paths)
    assert set(carved.val.paths).isdisjoint(carved.train.paths)
    assert set(carved.val.paths).isdisjoint(carved.test.paths)
    half = load_inaturalist(f"{root}/train2017.json", f"{root}/val2017.json",
                            val_fraction=0.5, seed=1)
    assert sorted(half.val.labels.tolist()) == [0, 0, 1, 1, 2, 2] and len(half.train) == 3


def test_inaturalist_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_inaturalist(str(tmp_path / "nope.json"), str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"id": 0, "file_name": "a.jpg"}],
                               "annotations": [{"id": 0, "image_id": 0, "category_id": 9}],
                               "categories": [{"id": 0, "name": "x"}]}))
    with pytest.raises(ValueError, match="unknown category id 9"):
        load_inaturalist(str(bad), str(bad))


def test_places365(tmp_path):
    root = tmp_path / "places"
    (root / "data_256").mkdir(parents=True)
    (root / "categories_places365.txt").write_text("/a/airfield 0\n/b/bar 1\n/c/cave 2\n")
    (root / "places365_train_standard.txt").write_text(
        "/a/airfield/00000001.jpg 0\n/b/bar/00000001.jpg 1\n/c/cave/00000002.jpg 2\n"
        "/c/cave/00000003.jpg 2\n")
    (root / "val_256").mkdir()
    (root / "places365_val.txt").write_text("Places365_val_00000001.jpg 1\n")
    task = load_places365(str(root), val_fraction=0)
    assert task.class_names == ["/a/airfield", "/b/bar", "/c/cave"]
    assert task.train.labels.tolist() == [0, 1, 2, 2] and task.val is task.test
    # By default the two-image class gives one to val; the singletons stay in train.
    carved = load_places365(str(root))
    assert carved.train.labels.tolist() == [0, 1, 2] and carved.val.labels.tolist() == [2]
    assert carved.val.paths[0] in task.train.paths[2:]
    assert len(carved.test) == 1 and carved.val.paths[0] != carved.test.paths[0]
    assert task.train.paths[0] == os.path.join(str(root), "data_256", "a/airfield/00000001.jpg")
    assert task.test.paths[0].endswith(os.path.join("val_256", "Places365_val_00000001.jpg"))
    (root / "bad.txt").write_text("x.jpg 7\n")
    with pytest.raises(ValueError, match="label 7 is outside"):
        read_file_list(str(root / "bad.txt"), str(root), num_classes=3)
    (root / "bad.txt").write_text("just-a-path\n")
    with pytest.raises(ValueError, match="expected 'path label'"):
        read_file_list(str(root / "bad.txt"), str(root))
    with pytest.raises(FileNotFoundError, match="missing_root"):
        load_places365(str(tmp_path / "missing_root"))


def test_image_folder(tmp_path):
    for split, n in (("train", 3), ("test", 1)):
        for c, name in enumerate(["cat", "dog"]):
            for i in range(n):
                _png(str(tmp_path / split / name / f"{i}.png"), value=10 * c)
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")
    task = load_image_folder(str(tmp_path / "train"), str(tmp_path / "test"))
    assert task.class_names == ["cat", "dog"] and task.name == "train"
    assert task.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert task.test.labels.tolist() == [0, 1] and task.val is task.test
    assert not any(p.endswith(".txt") for p in task.train.paths)
    carved = load_image_folder(str(tmp_path / "train"), val_fraction=0.34)
    assert sorted(carved.val.labels.tolist()) == [0, 1] and len(carved.train) == 4
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(ValueError, match="class 2 .'empty'. has no examples"):
        load_image_folder(str(tmp_path / "train"))
    (tmp_path / "train" / "empty").rmdir()
    (tmp_path / "test" / "bird").mkdir()
    with pytest.raises(ValueError, match="folder 'bird' is not one of the classes"):
        load_image_folder(str(tmp_path / "train"), str(tmp_path / "test"))
    with pytest.raises(FileNotFoundError, match="image folder not found: .*nothing"):
        load_image_folder(str(tmp_path / "nothing"))


def _cub_tree(root, n_classes=3, per_class=4):
    lines = {"images": [], "labels": [], "split": [], "classes": []}
    k = 1
    for c in range(1, n_classes + 1):
        name = f"{c:03d}.Bird_{c}"
        lines["classes"].append(f"{c} {name}")
        for i in range(per_class):
            rel = f"{name}/Bird_{c}_{i}.jpg"
            _png(os.path.join(root, "images", rel), value=c)
            lines["images"].append(f"{k} {rel}")
            lines["labels"].append(f"{k} {c}")
            lines["split"].append(f"{k} {int(i % 2 == 0)}")
            k += 1
    for key, fname in (("images", "images.txt"), ("labels", "image_class_labels.txt"),
                       ("split", "train_test_split.txt"), ("classes", "classes.txt")):
        with open(os.path.join(root, fname), "w") as f:
            f.write("\n".join(lines[key]) + "\n")


def test_cub(tmp_path):
    root = str(tmp_path / "CUB_200_2011")
    _cub_tree(root)
    task = load_cub(root, val_fraction=0)
    assert task.class_names == ["001.Bird_1", "002.Bird_2", "003.Bird_3"]
    assert task.train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert task.test.labels.tolist() == [0, 0, 1, 1, 2, 2] and task.val is task.test
    assert task.train.paths[0].endswith("images/001.Bird_1/Bird_1_0.jpg")
    assert task.test.paths[0].endswith("Bird_1_1.jpg")
    assert all(os.path.exists(p) for p in task.train.paths)
    # By default one of each class's two training images is val; the test split is untouched.
    carved = load_cub(root)
    assert carved.train.labels.tolist() == [0, 1, 2] and carved.val.labels.tolist() == [0, 1, 2]
    assert sorted(carved.train.paths.tolist() + carved.val.paths.tolist()) == sorted(
        task.train.paths.tolist())
    np.testing.assert_array_equal(carved.test.paths, task.test.paths)


def test_cub_bad_input(tmp_path):
    root = str(tmp_path / "cub")
    _cub_tree(root)
    with open(os.path.join(root, "image_class_labels.txt"), "a") as f:
        f.write("13 1\n")
    with open(os.path.join(root, "images.txt"), "a") as f:
        f.write("13 x/y.jpg\n")
    with pytest.raises(ValueError, match="train_test_split.txt has no entry for image id 13"):
        load_cub(root)
    with open(os.path.join(root, "train_test_split.txt"), "a") as f:
        f.write("13 1\n")
    with open(os.path.join(root, "image_class_labels.txt"), "w") as f:
        f.write("\n".join(f"{k} {9 if k == 2 else 1}" for k in range(1, 14)) + "\n")
    with pytest.raises(ValueError, match="class id 9 is outside the class range 1..3"):
        load_cub(root)
    os.remove(os.path.join(root, "images.txt"))
    with pytest.raises(FileNotFoundError, match="images.txt"):
        load_cub(root)


def test_carve_validation_is_stratified_and_seeded():
    split = Split(labels=np.repeat([0, 1, 2], [10, 20, 1]), images=np.zeros((31, 2, 2, 1)))
    train, val = carve_validation(split, 0.2, seed=3)
    np.testing.assert_array_equal(np.bincount(val.labels, minlength=3), [2, 4, 0])
    np.testing.assert_array_equal(np.bincount(train.labels, minlength=3), [8, 16, 1])
    again = carve_validation(split, 0.2, seed=3)[1]
    np.testing.assert_array_equal(val.labels, again.labels)
    with pytest.raises(ValueError, match="val_fraction"):
        carve_validation(split, 1.0)


def test_carve_validation_small_classes_and_rounding():
    counts = [1, 2, 3, 4, 5, 15, 25, 35]
    labels = np.repeat(np.arange(len(counts)), counts)
    split = Split(labels=labels, paths=np.array([f"img_{i}.jpg" for i in range(len(labels))]))
    train, val = carve_validation(split, 0.1, seed=0)
    # round(0.1 * n) rounded half up (2.5 -> 3), at least one once n >= 2, a singleton none.
    np.testing.assert_array_equal(np.bincount(val.labels, minlength=8), [0, 1, 1, 1, 1, 2, 3, 4])
    np.testing.assert_array_equal(np.bincount(train.labels, minlength=8),
                                  [1, 1, 2, 3, 4, 13, 22, 31])
    assert set(train.paths).isdisjoint(val.paths)
    assert sorted(train.paths.tolist() + val.paths.tolist()) == sorted(split.paths.tolist())
    # The seed picks which images: another seed, another val set of the same sizes.
    other = carve_validation(split, 0.1, seed=1)[1]
    assert set(other.paths) != set(val.paths)
    np.testing.assert_array_equal(np.sort(other.labels), np.sort(val.labels))
    assert len(carve_validation(split, 0.0)[1]) == 0


def _write_json(path, data):
    with open(path, "w") as fh:
        json.dump(data, fh)
    return str(path)


def test_inaturalist_schema_errors_name_the_problem(tmp_path):
    cats = [{"id": 0, "name": "x"}]
    images = [{"id": 5, "file_name": "a.jpg"}, {"id": 9, "file_name": "b.jpg"}]
    anns = [{"id": 0, "image_id": 9, "category_id": 0}]
    # Image ids are not row numbers: the annotation for id 9 labels the second image.
    ok = _write_json(tmp_path / "ok.json", {"images": images, "annotations": anns,
                                            "categories": cats})
    from keras_fgvc.data.inaturalist import read_inaturalist_json
    paths, ids, _ = read_inaturalist_json(ok)
    assert ids.tolist() == [-1, 0] and paths[1] == os.path.join(str(tmp_path), "b.jpg")
    cases = [
        ({"images": images, "annotations": anns}, "missing the 'categories' list"),
        ({"images": [{"id": 5}], "annotations": [], "categories": cats},
         r"images\[0\] has no 'file_name' field"),
        ({"images": images, "annotations": [{"image_id": 5}], "categories": cats},
         r"annotations\[0\] has no 'category_id' field"),
        ({"images": images * 2, "annotations": anns, "categories": cats}, "image ids repeat"),
        ({"images": images, "annotations": [{"image_id": 7, "category_id": 0}],
          "categories": cats}, "unknown image id 7"),
    ]
    for n, (data, match) in enumerate(cases):
        with pytest.raises(ValueError, match=match):
            read_inaturalist_json(_write_json(tmp_path / f"bad{n}.json", data))
    # A labelled split without annotations (e.g. the test JSON by mistake) is an error,
    # not a silently empty training set.
    unlabeled = _write_json(tmp_path / "test2017.json", {"images": images, "categories": cats})
    with pytest.raises(ValueError, match="test2017.json: no image has an annotation"):
        load_inaturalist(unlabeled, ok)
    with pytest.raises(FileNotFoundError, match="iNaturalist image root"):
        read_inaturalist_json(ok, image_root=str(tmp_path / "no_root"))


def test_cub_is_training_image_flags_and_class_ids(tmp_path):
    root = str(tmp_path / "cub")
    _cub_tree(root)
    with open(os.path.join(root, "train_test_split.txt")) as f:
        lines = f.read().splitlines()
    lines[2] = "3 yes"
    with open(os.path.join(root, "train_test_split.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="image id 3 has is_training_image 'yes'"):
        load_cub(root)
    _cub_tree(root)
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.write("0 zero\n1 one\n2 two\n")
    with pytest.raises(ValueError, match=r"class ids are not 1..3"):
        load_cub(root)


def test_places365_bad_categories_file(tmp_path):
    from keras_fgvc.data.places365 import read_categories

    path = tmp_path / "categories_places365.txt"
    path.write_text("/a/airfield 0\n/b/bar\n")
    with pytest.raises(ValueError, match=r":2: expected 'name index'"):
        read_categories(str(path))
    path.write_text("/a/airfield 0\n/b/bar 2\n")
    with pytest.raises(ValueError, match=r"not 0..1"):
        read_categories(str(path))
