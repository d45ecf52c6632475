"""The folder task: layout / manifest listing, every format, skipped files, clear errors."""

import os

import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.data import folder_task, image_ops
from keras_fgvc.data.folder_task import describe, find_unreadable, load_folder_task
from tests.folder_images import FORMATS, make_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return str(root), make_folder(str(root))


def test_layout_lists_nested_files_of_every_format_and_skips_the_corrupt_one(folder, tmp_path):
    root, made = folder
    task = load_folder_task(root, channels=3, seed=0, cache_dir=str(tmp_path))
    assert task.class_names == ["background", "blue_spot", "red_spot"]
    assert task.has_background and task.metadata["carved"] == ["test", "val"]
    assert task.metadata["skipped"] == [(made["corrupt"], folder_task.UNREADABLE)]
    listed = np.concatenate([s.paths for s in (task.train, task.val, task.test)]).tolist()
    expected = sorted(p for files in made["paths"].values() for p in files)
    assert sorted(listed) == expected  # nested sub-folders found, corrupt file left out
    assert {p.rsplit(".", 1)[1] for p in task.train.paths} == set(FORMATS)
    for name, files in made["paths"].items():  # each file carries its folder's label
        c = task.class_names.index(name)
        for split in (task.train, task.val, task.test):
            assert all(split.labels[list(split.paths).index(p)] == c
                       for p in files if p in set(split.paths))
    for c in (1, 2):  # carving never empties a rare class
        assert all((s.labels == c).sum() >= 1 for s in (task.train, task.val, task.test))
    again = load_folder_task(root, channels=3, seed=0, cache_dir=str(tmp_path))
    np.testing.assert_array_equal(again.test.paths, task.test.paths)
    text = describe(task)
    assert "red_spot" in text and "skipped files: 1" in text and "background" in text


def test_grey_decoding_reads_gif_bmp_and_webp_too(folder, tmp_path):
    root, made = folder
    task = load_folder_task(root, channels=1, cache_dir=str(tmp_path))
    assert len(task.metadata["skipped"]) == 1
    gif = next(p for p in made["paths"]["background"] if p.endswith(".gif"))
    eager = image_ops.decode_image(tf.io.read_file(gif), 1)
    mapped = next(iter(tf.data.Dataset.from_tensors(gif).map(
        lambda p: image_ops.decode_image(tf.io.read_file(p), 1))))
    rgb = image_ops.decode_image(tf.io.read_file(gif), 3)
    assert eager.shape[-1] == 1 and eager.shape[:2] == rgb.shape[:2]
    np.testing.assert_array_equal(eager.numpy(), mapped.numpy())
    np.testing.assert_array_equal(eager.numpy(), image_ops.ensure_channels(rgb, 1).numpy())


def test_scan_is_cached(folder, tmp_path, monkeypatch):
    root, made = folder
    files = made["paths"]["red_spot"] + [made["corrupt"]]
    assert find_unreadable(files, 3, str(tmp_path)) == [len(files) - 1]

    def fail(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(folder_task.tf.data.Dataset, "from_tensor_slices", fail)
    assert find_unreadable(files, 3, str(tmp_path)) == [len(files) - 1]


def test_val_and_test_folders_are_used_as_given(tmp_path):
    made = make_folder(str(tmp_path), {"background": 6, "a": 3}, parts=("", "val", "test"),
                       corrupt=False)
    task = load_folder_task(str(tmp_path), cache_dir=str(tmp_path / "cache"))
    assert task.metadata["carved"] == [] and task.metadata["skipped"] == []
    assert (len(task.train), len(task.val), len(task.test)) == (9, 9, 9)
    assert all(os.sep + "val" + os.sep in p for p in task.val.paths)
    assert sorted(task.test.paths) == sorted(p for p in made["paths"]["a"] +
                                             made["paths"]["background"]
                                             if os.sep + "test" + os.sep in p)


def _manifest(tmp_path, rows):
    path = tmp_path / "list.csv"
    path.write_text("path,label,split\n" + "".join(",".join(r) + "\n" for r in rows))
    return str(path)


def test_manifest_with_relative_paths_and_splits(folder, tmp_path):
    root, made = folder
    rel = lambda p: os.path.relpath(p, tmp_path)
    rows = [(rel(p), "background", "") for p in made["paths"]["background"][:10]]
    rows += [(rel(p), "red_spot", "train") for p in made["paths"]["red_spot"][:6]]
    rows += [(rel(p), "red_spot", "test") for p in made["paths"]["red_spot"][6:]]
    rows += [(rel(made["corrupt"]), "background", "test")]
    task = load_folder_task(manifest=_manifest(tmp_path, rows), cache_dir=str(tmp_path))
    assert task.class_names == ["background", "red_spot"] and task.name == "list"
    assert sorted(task.test.paths) == sorted(made["paths"]["red_spot"][6:])
    assert task.metadata["skipped"][0][0] == made["corrupt"] and task.metadata["carved"] == ["val"]
    assert len(task.train) + len(task.val) == 16


@pytest.mark.parametrize("case, message", [
    ("no_rare", "no 'rare' folder"),
    ("empty_class", "rare class 'b' has no image"),
    ("no_background", "no 'background' folder"),
    ("unknown_label", "unknown label 'zebra'"),
    ("missing_file", "file not found"),
    ("all_corrupt", "rare class 'b' has no readable training image"),
])
def test_bad_layouts_give_one_clear_error(tmp_path, case, message):
    root = tmp_path / "d"
    make_folder(str(root), {"background": 4, "a": 2}, corrupt=False)
    kwargs = {"data_dir": str(root)}
    if case == "no_rare":
        os.rename(root / "rare", root / "rares")
    elif case == "empty_class":
        os.makedirs(root / "rare" / "b" / "sub")
    elif case == "no_background":
        os.rename(root / "background", root / "bg")
    elif case == "all_corrupt":
        os.makedirs(root / "rare" / "b")
        (root / "rare" / "b" / "x.png").write_bytes(b"\x89PNG broken")
    else:
        first = sorted(os.listdir(root / "rare" / "a" / "group0"))[0]
        path = os.path.join("d", "rare", "a", "group0", first)
        label, file = ("zebra", path) if case == "unknown_label" else ("a", "d/nope.png")
        rows = [(path, "a", "train"), (file, label, "test")]
        kwargs = {"manifest": _manifest(tmp_path, rows)}
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_folder_task(cache_dir=str(tmp_path / "cache"), **kwargs)
