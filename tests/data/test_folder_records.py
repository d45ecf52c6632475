"""task_kwargs.records=DIR: the folder task written once as sharded TFRecords, then streamed."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.data import folder_records, tfrecords
from keras_fgvc.data.cache import work_order
from keras_fgvc.data.folder_task import load_folder_task
from keras_fgvc.training import inputs
from tests.folder_images import make_folder


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    make_folder(str(root), {"background": 20, "red_spot": 7, "blue_spot": 6})
    return load_folder_task(str(root), channels=3, seed=0,
                            cache_dir=str(tmp_path_factory.mktemp("cache")))


def _read(files):
    return list(tfrecords.read_tfrecords(list(files), cycle_length=1).as_numpy_iterator())


def test_records_hold_each_split_in_its_order_train_shuffled(task, tmp_path):
    teacher = np.arange(len(task.train)) % 4
    task = task.__class__(**{**task.__dict__, "train": task.train.__class__(
        labels=task.train.labels, paths=task.train.paths, teacher_labels=teacher)})
    out = folder_records.attach_records(task, str(tmp_path), seed=3, shard_size=5, verbose=0)
    assert sorted(out.train.paths) == sorted(task.train.paths)
    assert list(out.train.paths) != list(task.train.paths)  # seeded random order
    for name in ("train", "val", "test"):
        split = getattr(out, name)
        assert len(split.records) == -(-len(split) // 5)
        rows = _read(split.records)
        assert [r["label"] for r in rows] == split.labels.tolist()
        assert [r["image_bytes"] for r in rows] == [open(p, "rb").read() for p in split.paths]
    rows = _read(out.train.records)
    assert [r["teacher_label"] for r in rows] == out.train.teacher_labels.tolist()
    assert out.train.subset([0, 1]).records is None  # a subset reads files by path
    again = folder_records.attach_records(task, str(tmp_path), seed=3, shard_size=5, verbose=0)
    assert again.train.records == out.train.records
    other = folder_records.attach_records(task, str(tmp_path), seed=4, shard_size=5, verbose=0)
    assert other.train.records != out.train.records and other.val.records == out.val.records


def test_writing_resumes_at_the_missing_shards(task, tmp_path, monkeypatch):
    files = folder_records.write_split_records(task.train, str(tmp_path), "train", 4, 0)
    stamps = {f: os.stat(f).st_mtime_ns for f in files}
    os.remove(files[2])
    open(os.path.join(tmp_path, ".tmp-killed.tfrecord"), "wb").write(b"half")
    written = []
    real = tfrecords.write_tfrecord_shard
    monkeypatch.setattr(folder_records, "write_tfrecord_shard",
                        lambda split, path: written.append(path) or real(split, path))
    again = folder_records.write_split_records(task.train, str(tmp_path), "train", 4, 0)
    assert again == files and written == [files[2]]
    assert all(os.stat(f).st_mtime_ns == stamps[f] for f in files if f != files[2])
    assert [r["label"] for r in _read(files)] == task.train.labels.tolist()
    # Another worker's order starts elsewhere, so workers sharing DIR split the work.
    tf_config = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert work_order([0, 1, 2, 3, 4]) == [2, 3, 4, 0, 1]
    monkeypatch.delenv("TF_CONFIG")
    assert work_order([0, 1, 2]) == [0, 1, 2]


def test_key_changes_with_a_file(task, tmp_path):
    key = folder_records.records_key(task.val)
    path = str(tmp_path / "copy.png")
    with open(task.val.paths[0], "rb") as f:
        open(path, "wb").write(f.read())
    changed = task.val.__class__(labels=task.val.labels,
                                 paths=[path, *task.val.paths[1:]])
    assert folder_records.records_key(changed) != key


def test_evaluation_reads_the_same_images_as_from_files(task, tmp_path):
    out = folder_records.attach_records(task, str(tmp_path), shard_size=3, verbose=0)
    for augment in (False, True):
        by_path = list(inputs.eval_dataset(task.test, 4, 32, 3, augment))
        by_records = list(inputs.eval_dataset(out.test, 4, 32, 3, augment))
        assert len(by_path) == len(by_records)
        for a, b in zip(by_path, by_records):
            np.testing.assert_array_equal(a["labels"], b["labels"])
            np.testing.assert_array_equal(a["images"], b["images"])


def test_training_streams_shuffled_batches_for_any_order_length(task, tmp_path):
    out = folder_records.attach_records(task, str(tmp_path), shard_size=4, verbose=0)
    strategy = tf.distribute.get_strategy()
    order = inputs.epoch_order(out.train.labels, 0, 6, 8)  # longer than the split: repeats
    stream = lambda o: iter(inputs.distributed_dataset(strategy, out.train, o, 8, 32, 3, seed=5))
    it = stream(order)
    batches = [next(it) for _ in range(8)]
    assert all(b["images"].shape == (8, 32, 32, 3) for b in batches)
    seen = np.concatenate([b["labels"].numpy() for b in batches])
    assert sorted(np.unique(seen)) == [0, 1, 2]
    # The seed and the order's length (the steps left: a resume) choose the stream.
    same = next(stream(order))
    np.testing.assert_array_equal(same["labels"], batches[0]["labels"])
    np.testing.assert_array_equal(same["images"], batches[0]["images"])
    assert any(not np.array_equal(next(stream(order[8 * k:]))["images"], batches[0]["images"])
               for k in (1, 2))


def test_soft_teacher_probabilities_go_through_the_records(task, tmp_path):
    k = 3
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(k), len(task.train)).astype(np.float32)
    train = task.train.__class__(labels=task.train.labels, paths=task.train.paths,
                                 teacher_labels=probs.argmax(-1), teacher_probabilities=probs)
    soft = task.__class__(**{**task.__dict__, "train": train})
    out = folder_records.attach_records(soft, str(tmp_path), shard_size=8, verbose=0)
    rows = list(tfrecords.read_tfrecords(list(out.train.records), k, cycle_length=1)
                .as_numpy_iterator())
    np.testing.assert_allclose([r["teacher_probabilities"] for r in rows],
                               out.train.teacher_probabilities)
    order = inputs.epoch_order(out.train.labels, 0, 1, 8)
    batch = next(iter(inputs.distributed_dataset(tf.distribute.get_strategy(), out.train, order,
                                                 8, 32, 3)))
    assert batch["teacher_probabilities"].shape == (8, k)


def test_input_pipelines_share_files_or_else_examples(task, tmp_path):
    one = folder_records.write_split_records(task.train, str(tmp_path / "a"), "train", 100, 0)
    labels = task.train.labels.tolist()
    rows = tfrecords.read_tfrecords(list(one), cycle_length=1, shard=(2, 1))
    assert [r["label"] for r in rows.as_numpy_iterator()] == labels[1::2]
    four = folder_records.write_split_records(task.train, str(tmp_path / "b"), "train", 6, 0)
    rows = tfrecords.read_tfrecords(list(four), cycle_length=1, shard=(2, 0))
    expected = [labels[i] for f in range(0, len(four), 2) for i in range(6 * f, 6 * f + 6)
                if i < len(labels)]
    assert [r["label"] for r in rows.as_numpy_iterator()] == expected
