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

from keras_fgvc.data import pipeline as pipeline_lib
from keras_fgvc.data.splits import require_path

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
    paths = [f"{output_prefix}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(p + ".tmp") for p in paths]
    try:
        for i in range(len(split)):
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
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writers[i % num_shards].write(example.SerializeToString())
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


def _files(file_pattern):
    files = sorted(tf.io.gfile.glob(os.fspath(file_pattern)))
    if not files:
        raise FileNotFoundError(f"No TFRecord files match {file_pattern}")
    return files


def read_tfrecords(file_pattern, num_teacher_classes=None, shuffle_files=False, seed=0):
    """Parsed examples: a dataset of dicts ``image_bytes``, ``label``, ``teacher_label``.

    Args:
        file_pattern: glob of shard files.
        num_teacher_classes: K, to also parse ``teacher_probabilities`` [K].
        shuffle_files: shuffle the shard order (training).
        seed: seed of that shuffle.

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
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    # deterministic=True: a seed gives the same example order on every run.
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 16),
                       num_parallel_calls=pipeline_lib.AUTOTUNE, deterministic=True)

    def parse(record):
        ex = tf.io.parse_single_example(record, features)
        out = {"image_bytes": ex[KEYS["image"]],
               "label": tf.cast(ex[KEYS["label"]], tf.int32),
               "teacher_label": tf.cast(ex[KEYS["teacher_label"]], tf.int32)}
        if num_teacher_classes:
            out["teacher_probabilities"] = ex[KEYS["teacher_probabilities"]]
        return out

    return ds.map(parse, num_parallel_calls=pipeline_lib.AUTOTUNE)


def count_records(file_pattern):
    """Number of examples in the matching shards (reads them once)."""
    return sum(1 for f in _files(file_pattern) for _ in tf.data.TFRecordDataset(f))


def make_tfrecord_pipeline(file_pattern, image_size, *, training, batch_size,
                           num_teacher_classes=None, counter=None, seed=0, **kwargs):
    """The `make_pipeline` equivalent for TFRecords: returns ``(dataset, counter)``.

    Elements are ``(images, targets)`` exactly as in `keras_fgvc.data.pipeline`;
    a corrupt record or image is skipped and counted. Keyword arguments are
    those of `pipeline.build_from_elements` (``channels``, ``scale``, ...).

    Example:
        >>> ds, counter = make_tfrecord_pipeline("/tmp/t/train-*", 28, training=True,
        ...                                      batch_size=64, channels=1)  # doctest: +SKIP
    """
    ds = read_tfrecords(file_pattern, num_teacher_classes, shuffle_files=training, seed=seed)
    ds = ds.map(lambda ex: (ex.pop("image_bytes"), ex))
    counter = counter or pipeline_lib.SkipCounter()
    ds = pipeline_lib.build_from_elements(ds, None, image_size, training=training,
                                          batch_size=batch_size, encoded=True,
                                          counter=counter, seed=seed, **kwargs)
    return ds, counter
