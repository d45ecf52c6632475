"""The tf.data pipeline: structure, values, augmentation, skipping corrupt images."""

import os

import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.data import Split, make_dataset, make_pipeline


def _images(n, h=6, w=6, c=1):
    return (np.arange(n * h * w * c) % 256).reshape(n, h, w, c).astype(np.uint8)


def _collect(ds):
    xs, ys, ts = [], [], []
    for x, t in ds:
        xs.append(x.numpy())
        ys.append(t["label"].numpy())
        ts.append(t["teacher_label"].numpy())
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ts)


def test_eval_in_memory_is_exact():
    images = _images(5)
    split = Split(labels=[0, 1, 2, 1, 0], images=images, teacher_labels=[3, -1, 0, 1, 2])
    ds = make_dataset(split, 6, training=False, batch_size=2, channels=1, crop_fraction=1.0)
    assert ds.element_spec[0].shape.as_list() == [None, 6, 6, 1]
    assert ds.element_spec[0].dtype == tf.float32
    assert set(ds.element_spec[1]) == {"label", "teacher_label"}
    x, y, t = _collect(ds)
    np.testing.assert_array_equal(x, images.astype(np.float32))  # [0, 255], in order
    assert y.tolist() == [0, 1, 2, 1, 0] and t.tolist() == [3, -1, 0, 1, 2]
    assert y.dtype == np.int32
    rgb = make_dataset(split, 3, training=False, batch_size=5, channels=3, crop_fraction=1.0)
    x3 = next(iter(rgb))[0].numpy()
    assert x3.shape == (5, 3, 3, 3)
    np.testing.assert_allclose(x3[..., 0], x3[..., 2])


def test_missing_teacher_labels_are_minus_one_and_probabilities_travel():
    probs = np.full((4, 3), 1 / 3, np.float32)
    split = Split(labels=[0, 1, 0, 1], images=_images(4), teacher_probabilities=probs)
    ds = make_dataset(split, 6, training=False, batch_size=4, teacher_probabilities=True)
    x, t = next(iter(ds))
    assert t["teacher_label"].numpy().tolist() == [-1] * 4
    np.testing.assert_allclose(t["teacher_probabilities"].numpy(), probs)
    with pytest.raises(ValueError, match="teacher_probabilities"):
        make_dataset(Split(labels=[0], images=_images(1)), 6, training=False, batch_size=1,
                     teacher_probabilities=True)


def test_training_is_seeded_shuffled_and_augmented():
    images = _images(32, 12, 12, 3)
    split = Split(labels=np.arange(32) % 4, images=images)
    kwargs = dict(training=True, batch_size=8, seed=3, scale=(0.3, 0.6))
    a = _collect(make_dataset(split, 8, **kwargs))
    b = _collect(make_dataset(split, 8, **kwargs))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape == (32, 8, 8, 3)
    assert sorted(a[1].tolist()) == sorted(split.labels.tolist())
    assert a[1].tolist() != split.labels.tolist()  # shuffled
    assert a[0].min() >= 0.0 and a[0].max() <= 255.0
    ds = make_dataset(split, 8, **kwargs)
    epoch1, epoch2 = _collect(ds)[0], _collect(ds)[0]
    assert not np.allclose(epoch1, epoch2)  # fresh crops each epoch
    dropped = make_dataset(Split(labels=np.zeros(10), images=_images(10)), 6, training=True,
                           batch_size=4)
    assert [len(x) for x, _ in dropped] == [4, 4]


def test_repeat():
    split = Split(labels=[0, 1, 2], images=_images(3))
    ds = make_dataset(split, 6, training=False, batch_size=2, repeat=True)
    labels = [t["label"].numpy().tolist() for _, t in ds.take(3)]
    assert labels == [[0, 1], [2, 0], [1, 2]]


def _write_png(path, image):
    tf.io.write_file(path, tf.io.encode_png(image))


def test_files_with_corrupt_images_are_skipped_and_counted(tmp_path, capfd):
    paths, labels = [], []
    for i in range(5):
        p = str(tmp_path / f"ok{i}.png")
        _write_png(p, np.full((9, 7, 1), 10 * i, np.uint8))
        paths.append(p)
        labels.append(i % 2)
    data = tf.io.encode_png(np.zeros((30, 30, 3), np.uint8)).numpy()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    jpeg = tf.io.encode_jpeg(np.full((8, 8, 3), 200, np.uint8)).numpy()
    (tmp_path / "good.jpg").write_bytes(jpeg)
    paths += [str(tmp_path / "truncated.png"), str(tmp_path / "garbage.jpg"),
              str(tmp_path / "missing.png"), str(tmp_path / "good.jpg")]
    labels += [1, 1, 1, 0]
    split = Split(labels=labels, paths=paths)
    ds, counter = make_pipeline(split, 4, training=False, batch_size=4, crop_fraction=1.0)
    x, y, _ = _collect(ds)
    assert len(x) == 6 and y.tolist() == [0, 1, 0, 1, 0, 0]
    assert x.shape == (6, 4, 4, 3)
    np.testing.assert_allclose(x[1], 10.0)  # gray PNG -> RGB, exact values
    assert abs(float(x[-1].mean()) - 200) < 3  # the JPEG
    assert (counter.seen, counter.loaded, counter.skipped) == (9, 6, 3)
    assert "skipped 3 unreadable image(s) in this pass" in capfd.readouterr().err
    _collect(ds)  # a second epoch counts again
    assert counter.skipped == 6
    train, counter = make_pipeline(split, 4, training=True, batch_size=2)
    assert sum(len(x) for x, _ in train) == 6 and counter.skipped == 3


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="None of the split's image files exist"):
        make_dataset(Split(labels=[0], paths=[str(tmp_path / "x.png")]), 4, training=False,
                     batch_size=1)
    with pytest.raises(ValueError, match="label 5 is outside the class range"):
        make_dataset(Split(labels=[0, 5], images=_images(2)), 6, training=False, batch_size=1,
                     num_classes=3)
    with pytest.raises(ValueError, match="empty split"):
        make_dataset(Split(labels=[], images=_images(0)), 6, training=False, batch_size=1)
    with pytest.raises(ValueError, match="channels"):
        make_dataset(Split(labels=[0], images=_images(1)), 6, training=False, batch_size=1,
                     channels=2)


def test_distributed_over_two_logical_cpus(tmp_path):
    paths = []
    for i in range(8):
        paths.append(str(tmp_path / f"{i}.png"))
        _write_png(paths[-1], np.full((5, 5, 1), i, np.uint8))
    (tmp_path / "bad.png").write_bytes(b"garbage")
    split = Split(labels=list(range(8)) + [0], paths=paths + [str(tmp_path / "bad.png")])
    ds, counter = make_pipeline(split, 5, training=False, batch_size=4, channels=1,
                                crop_fraction=1.0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    seen = []
    for _, t in strategy.experimental_distribute_dataset(ds):
        for part in strategy.experimental_local_results(t["label"]):
            seen += part.numpy().tolist()
    assert sorted(seen) == list(range(8)) and counter.skipped == 1


def test_keras_fit_consumes_the_dataset():
    import keras

    split = Split(labels=np.arange(16) % 2, images=_images(16))
    ds = make_dataset(split, 6, training=True, batch_size=8).map(lambda x, t: (x, t["label"]))
    inputs = keras.Input((6, 6, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(ds, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


def test_large_images_are_resized(tmp_path):
    p = os.path.join(str(tmp_path), "big.png")
    _write_png(p, np.full((300, 200, 3), 50, np.uint8))
    ds = make_dataset(Split(labels=[0], paths=[p]), 224, training=False, batch_size=1)
    x = next(iter(ds))[0].numpy()
    assert x.shape == (1, 224, 224, 3)
    np.testing.assert_allclose(x, 50.0, atol=1e-3)


def test_explicit_order_is_followed_seeded_and_sharded(tmp_path):
    images = _images(10, 8, 8, 1)
    split = Split(labels=np.arange(10), images=images)
    order = [3, 3, 9, 0, 5, 1]
    kwargs = dict(training=True, batch_size=2, channels=1, scale=(0.3, 0.6), seed=7)
    a = _collect(make_dataset(split, 4, order=order, **kwargs))
    b = _collect(make_dataset(split, 4, order=order, **kwargs))
    assert a[1].tolist() == order  # no shuffle: the given order
    np.testing.assert_array_equal(a[0], b[0])  # same order + seed: same augmentation
    assert not np.allclose(a[0][0], a[0][1])  # the same image at two positions differs
    # Resuming at position 2: the tail of the order gives the same examples.
    tail = _collect(make_dataset(split, 4, order=order, **kwargs).skip(1))
    np.testing.assert_array_equal(tail[0], a[0][2:])
    shards = [_collect(make_dataset(split, 4, order=order, shard=(2, i), training=False,
                                    batch_size=3, channels=1))[1].tolist() for i in range(2)]
    assert shards == [[3, 9, 5], [3, 0, 1]]
    with pytest.raises(ValueError, match="order index 10 is outside"):
        make_dataset(split, 4, order=[0, 10], **kwargs)
    # Files: order and the skip counter together.
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        _write_png(paths[-1], np.full((4, 4, 1), i, np.uint8))
    (tmp_path / "bad.png").write_bytes(b"garbage")
    files = Split(labels=[0, 1, 2, 3], paths=paths + [str(tmp_path / "bad.png")])
    ds, counter = make_pipeline(files, 4, order=[3, 2, 1, 0, 3], training=False, batch_size=5,
                                channels=1)
    assert _collect(ds)[1].tolist() == [2, 1, 0] and counter.skipped == 2
