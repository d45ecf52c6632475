"""Sharded TFRecords: encoded image bytes + label (+ teacher label / probabilities).

Feature keys (``tf.train.Example``): ``image/encoded`` (bytes: the original
file, or PNG/JPEG for in-memory images), ``image/class/label`` (int64),
``image/teacher_label`` (int64, -1 = none) and, when present,
``image/teacher_probabilities`` (float list). Shards are named
``<prefix>-00000-of-00008.tfrecord`` and each is written atomically
(temporary name, then rename).
"""

import os

import numpy as np
import tensorflow as tf

from keras_fgvc.data.pipeline import AUTOTUNE, SkipCounter, build_from_elements
from keras_fgvc.data.splits import require_path
from keras_fgvc.files import atomic_write

KEYS = {
    "image": "image/encoded",
    "label": "image/class/label",
    "teacher_label": "image/teacher_label",
    "teacher_probabilities": "image/teacher_probabilities",
}


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def _encode(image, image_format):
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image_format == "png":
        return tf.io.encode_png(image).numpy()
    if image_format == "jpeg":
        return tf.io.encode_jpeg(image, quality=95).numpy()
    raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}.")


def _example(split, i, image_format):
    """The serialised ``tf.train.Example`` of example `i` of `split`."""
    if split.images is not None:
        data = _encode(split.images[i], image_format)
    else:
        with open(require_path(split.paths[i], "image file"), "rb") as f:
            data = f.read()
    feature = {
        KEYS["image"]: _bytes(data),
        KEYS["label"]: _int(split.labels[i]),
        KEYS["teacher_label"]: _int(
            -1 if split.teacher_labels is None else split.teacher_labels[i]),
    }
    if split.teacher_probabilities is not None:
        feature[KEYS["teacher_probabilities"]] = tf.train.Feature(
            float_list=tf.train.FloatList(value=split.teacher_probabilities[i]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def shard_name(output_prefix, index, num_shards):
    """``<prefix>-00003-of-00008.tfrecord``."""
    return f"{output_prefix}-{index:05d}-of-{num_shards:05d}.tfrecord"


def write_tfrecords(split, output_prefix, num_shards=8, image_format="png"):
    """Writes a `Split` as sharded TFRecords.

    Args:
        split: a `Split` (file paths are stored as their bytes, unchanged;
            in-memory images are encoded as `image_format`).
        output_prefix: shard path prefix; folders are created.
        num_shards: number of files (examples go round-robin, in order).
        image_format: ``"png"`` (lossless) or ``"jpeg"`` for in-memory images.

    Returns:
        list of shard paths.

    Example:
        >>> write_tfrecords(task.train, "/tmp/fashion_bg/train", num_shards=4)  # doctest: +SKIP
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}.")
    os.makedirs(os.path.dirname(os.path.abspath(output_prefix)), exist_ok=True)
    paths = [shard_name(output_prefix, i, num_shards) for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(p + ".tmp") for p in paths]
    try:
        for i in range(len(split)):
            writers[i % num_shards].write(_example(split, i, image_format))
    except BaseException:
        for w in writers:
            w.close()
        for p in paths:  # nothing half-written is left behind
            if os.path.exists(p + ".tmp"):
                os.remove(p + ".tmp")
        raise
    for w in writers:
        w.close()
    for p in paths:
        os.replace(p + ".tmp", p)
    return paths


def write_tfrecord_shard(split, path, image_format="png"):
    """Writes every example of `split`, in order, to the one shard file `path`, atomically.

    The examples go to a temporary file of this process in the same folder,
    renamed to `path` when complete: `path` exists only whole, and processes
    writing the same shard at once (workers sharing a folder) do not collide.
    """
    def write(tmp):
        with tf.io.TFRecordWriter(tmp) as writer:
            for i in range(len(split)):
                writer.write(_example(split, i, image_format))

    atomic_write(path, write, suffix=".tfrecord")
    return path


def _files(file_pattern):
    if isinstance(file_pattern, (list, tuple)):  # shard files, in the order given
        files = [os.fspath(f) for f in file_pattern]
    else:
        files = sorted(tf.io.gfile.glob(os.fspath(file_pattern)))
    if not files:
        raise FileNotFoundError(f"No TFRecord files match {file_pattern}")
    return files


def read_tfrecords(file_pattern, num_teacher_classes=None, shuffle_files=False, seed=0,
                   cycle_length=None, shard=None):
    """Parsed examples: a dataset of dicts ``image_bytes``, ``label``, ``teacher_label``.

    Args:
        file_pattern: glob of shard files, or a list of them (read in that order).
        num_teacher_classes: K, to also parse ``teacher_probabilities`` [K].
        shuffle_files: shuffle the shard order (training).
        seed: seed of that shuffle.
        cycle_length: shards read at once, an example from each in turn
            (default ``min(shards, 16)``; 1 reads them one after the other).
        shard: optional ``(num_shards, index)`` (e.g. an input pipeline of a
            tf.distribute strategy): keep files ``index, index + num_shards, ...``
            when there are at least `num_shards` files, else examples.

    Returns:
        `tf.data.Dataset` of dicts (int32 labels; -1 where no teacher label).

    Raises:
        FileNotFoundError: no file matches.
    """
    files = _files(file_pattern)
    features = {
        KEYS["image"]: tf.io.FixedLenFeature([], tf.string),
        KEYS["label"]: tf.io.FixedLenFeature([], tf.int64),
        KEYS["teacher_label"]: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    }
    if num_teacher_classes:
        features[KEYS["teacher_probabilities"]] = tf.io.FixedLenFeature(
            [num_teacher_classes], tf.float32)
    by_file = shard is not None and len(files) >= shard[0]
    if by_file:
        files = files[shard[1]::shard[0]]
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    # deterministic=True: a seed gives the same example order on every run.
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=cycle_length or min(len(files), 16),
                       num_parallel_calls=AUTOTUNE, deterministic=True)
    if shard is not None and not by_file:
        ds = ds.shard(*shard)

    def parse(record):
        ex = tf.io.parse_single_example(record, features)
        out = {"image_bytes": ex[KEYS["image"]],
               "label": tf.cast(ex[KEYS["label"]], tf.int32),
               "teacher_label": tf.cast(ex[KEYS["teacher_label"]], tf.int32)}
        if num_teacher_classes:
            out["teacher_probabilities"] = ex[KEYS["teacher_probabilities"]]
        return out

    return ds.map(parse, num_parallel_calls=AUTOTUNE)


def count_records(file_pattern):
    """Number of examples in the matching shards (reads them once)."""
    return sum(1 for f in _files(file_pattern) for _ in tf.data.TFRecordDataset(f))


def make_tfrecord_pipeline(file_pattern, image_size, *, training, batch_size,
                           num_teacher_classes=None, counter=None, seed=0, cycle_length=None,
                           shard=None, **kwargs):
    """The `make_pipeline` equivalent for TFRecords: returns ``(dataset, counter)``.

    Elements are ``(images, targets)`` exactly as in `keras_fgvc.data.pipeline`;
    a corrupt record or image is skipped and counted. `cycle_length` and
    `shard` are those of `read_tfrecords`; other keyword arguments are those of
    `pipeline.build_from_elements` (``channels``, ``scale``, ``repeat``, ...).

    Example:
        >>> ds, counter = make_tfrecord_pipeline("/tmp/t/train-*", 28, training=True,
        ...                                      batch_size=64, channels=1)  # doctest: +SKIP
    """
    ds = read_tfrecords(file_pattern, num_teacher_classes, shuffle_files=training, seed=seed,
                        cycle_length=cycle_length, shard=shard)
    ds = ds.map(lambda ex: (ex.pop("image_bytes"), ex))
    counter = counter or SkipCounter()
    ds = build_from_elements(ds, None, image_size, training=training, batch_size=batch_size,
                             encoded=True, counter=counter, seed=seed, **kwargs)
    return ds, counter
