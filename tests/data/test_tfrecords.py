"""Sharded TFRecords: writer, reader and the pipeline on top."""

import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.data import Split, make_tfrecord_pipeline, read_tfrecords, write_tfrecords
from keras_fgvc.data.tfrecords import count_records


def _split(n=7, w=4):
    images = (np.arange(n * 5 * w) % 256).reshape(n, 5, w, 1).astype(np.uint8)
    probs = np.eye(3, dtype=np.float32)[np.arange(n) % 3]
    return Split(labels=np.arange(n) % 2, images=images, teacher_labels=np.arange(n) % 3,
                 teacher_probabilities=probs)


def test_round_trip_in_memory_images(tmp_path):
    split = _split()
    shards = write_tfrecords(split, str(tmp_path / "out" / "train"), num_shards=3)
    assert [s.rsplit("/", 1)[1] for s in shards] == [
        f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert not list((tmp_path / "out").glob("*.tmp"))
    assert count_records(str(tmp_path / "out" / "train-*")) == 7
    records = list(read_tfrecords(str(tmp_path / "out" / "train-*"), num_teacher_classes=3))
    by_label = sorted(records, key=lambda r: tf.io.decode_png(r["image_bytes"]).numpy().sum())
    order = np.argsort(split.images.reshape(7, -1).sum(1), kind="stable")
    for r, i in zip(by_label, order):
        np.testing.assert_array_equal(tf.io.decode_png(r["image_bytes"]).numpy(), split.images[i])
        assert int(r["label"]) == split.labels[i]
        assert int(r["teacher_label"]) == split.teacher_labels[i]
        np.testing.assert_array_equal(r["teacher_probabilities"].numpy(),
                                      split.teacher_probabilities[i])


def test_round_trip_files_keeps_their_bytes(tmp_path):
    paths = []
    for i in range(3):
        p = str(tmp_path / f"{i}.jpg")
        tf.io.write_file(p, tf.io.encode_jpeg(np.full((6, 6, 3), 40 * i, np.uint8)))
        paths.append(p)
    split = Split(labels=[2, 0, 1], paths=paths)
    write_tfrecords(split, str(tmp_path / "rec"), num_shards=1)
    records = list(read_tfrecords(str(tmp_path / "rec-*")))
    for r, p in zip(records, paths):
        assert r["image_bytes"].numpy() == open(p, "rb").read()
        assert int(r["teacher_label"]) == -1
    assert [int(r["label"]) for r in records] == [2, 0, 1]


def test_pipeline_from_tfrecords_skips_corrupt_images(tmp_path, capfd):
    split = _split(6, w=5)
    write_tfrecords(split, str(tmp_path / "a"), num_shards=2)
    bad = Split(labels=[1], paths=[str(tmp_path / "bad.png")])
    (tmp_path / "bad.png").write_bytes(b"not a png")
    write_tfrecords(bad, str(tmp_path / "b"), num_shards=1)
    ds, counter = make_tfrecord_pipeline(str(tmp_path / "[ab]-*"), 5, training=False,
                                         batch_size=4, channels=1, crop_fraction=1.0)
    xs = [x.numpy() for x, _ in ds]
    assert sum(len(x) for x in xs) == 6 and counter.skipped == 1
    assert "skipped 1 unreadable image(s)" in capfd.readouterr().err
    got = sorted(np.concatenate(xs).reshape(6, -1).sum(1).tolist())
    want = sorted(split.images.reshape(6, -1).sum(1).astype(np.float32).tolist())
    np.testing.assert_allclose(got, want)
    train, _ = make_tfrecord_pipeline(str(tmp_path / "a-*"), 8, training=True, batch_size=3,
                                      num_teacher_classes=3)
    x, t = next(iter(train))
    assert x.shape == (3, 8, 8, 3) and t["teacher_probabilities"].shape == (3, 3)


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="No TFRecord files match"):
        read_tfrecords(str(tmp_path / "none-*"))
    with pytest.raises(ValueError, match="num_shards"):
        write_tfrecords(_split(), str(tmp_path / "x"), num_shards=0)
    with pytest.raises(FileNotFoundError, match="image file not found"):
        write_tfrecords(Split(labels=[0], paths=[str(tmp_path / "gone.png")]),
                        str(tmp_path / "y"))


def test_failed_write_leaves_no_partial_files_and_keeps_old_shards(tmp_path):
    good = tmp_path / "ok.png"
    tf.io.write_file(str(good), tf.io.encode_png(np.zeros((2, 2, 1), np.uint8)))
    old = write_tfrecords(Split(labels=[0], paths=[str(good)]), str(tmp_path / "t"),
                          num_shards=2)
    before = [open(p, "rb").read() for p in old]
    split = Split(labels=[0, 1, 0], paths=[str(good), str(good), str(tmp_path / "gone.png")])
    with pytest.raises(FileNotFoundError, match="gone.png"):
        write_tfrecords(split, str(tmp_path / "t"), num_shards=2)
    assert not list(tmp_path.glob("*.tmp"))  # the half-written shards are removed
    assert [open(p, "rb").read() for p in old] == before  # the old complete set survives


def test_training_order_is_reproducible(tmp_path):
    write_tfrecords(_split(12), str(tmp_path / "r"), num_shards=4)

    def labels():
        ds, _ = make_tfrecord_pipeline(str(tmp_path / "r-*"), 4, training=True, batch_size=4,
                                       channels=1, seed=5)
        return [(t["teacher_label"].numpy().tolist(), x.numpy().sum()) for x, t in ds]

    assert labels() == labels()
