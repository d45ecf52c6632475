"""The tf.data input pipeline: Split (or TFRecords) -> batches of (images, targets).

Each element is ``(images, targets)``:

- ``images``: float32 [B, H, W, C] in [0, 255] (models normalise inside);
- ``targets``: dict with ``"label"`` int32 [B], ``"teacher_label"`` int32 [B]
  (-1 where the split has no teacher label), with
  ``teacher_probabilities=True``, ``"teacher_probabilities"`` float32 [B, K],
  and, for a split with `Split.hard_negative_for`, ``"hard_negative_for"``
  int32 [B] (-1 = not a hard negative; the label of a hard negative may be -1).

Training: shuffle, random-resized crop (``scale``, ``ratio``), horizontal
flip. Evaluation: `keras_fgvc.data.preprocessing.prepare_image` with a
preprocessing spec (default: the centred square of ``crop_fraction`` of the
shorter side, resized bilinearly), the function exported models serve with.
Decoding and augmentation run in a parallel map (AUTOTUNE); batches are
prefetched.

A file that is missing, unreadable or not a decodable image is dropped and
counted (never fatal): `SkipCounter` holds the counts, and at the end of
every pass over the data the number skipped in that pass is printed to
stderr. Randomness is seeded per element (stateless ops), so a seed gives the
same crops for the same epoch.
"""

import numpy as np
import tensorflow as tf

from keras_fgvc.data.image_ops import (
    INCEPTION_RATIO,
    INCEPTION_SCALE,
    decode_image,
    ensure_channels,
    random_flip,
    random_resized_crop,
    resize,
)
from keras_fgvc.data.preprocessing import make_spec, prepare_image, spec_from_json

AUTOTUNE = tf.data.AUTOTUNE


class SkipCounter:
    """Counts images the pipeline could not read (variables on the CPU).

    Attributes:
        seen: images the pipeline tried to load.
        loaded: images loaded successfully.
    """

    def __init__(self):
        with tf.device("/CPU:0"):
            self._seen = tf.Variable(0, dtype=tf.int64, trainable=False, name="seen")
            self._loaded = tf.Variable(0, dtype=tf.int64, trainable=False, name="loaded")
            self._reported = tf.Variable(0, dtype=tf.int64, trainable=False, name="reported")

    @property
    def seen(self):
        return int(self._seen.numpy())

    @property
    def loaded(self):
        return int(self._loaded.numpy())

    @property
    def skipped(self):
        """Images dropped so far (missing, unreadable or corrupt)."""
        return self.seen - self.loaded

    def _report(self):
        """Graph op: prints the images skipped since the last report (if any)."""
        skipped = self._seen.read_value() - self._loaded.read_value()
        delta = skipped - self._reported.read_value()

        def log():
            tf.print("keras_fgvc.data: skipped", delta,
                     "unreadable image(s) in this pass; total skipped:", skipped)
            return tf.constant(0)

        with tf.control_dependencies([tf.cond(delta > 0, log, lambda: tf.constant(0))]):
            return self._reported.assign(skipped)


def _targets(labels, teacher_labels, teacher_probabilities, hard_negative_for=None):
    out = {"label": labels.astype(np.int32),
           "teacher_label": (np.full(len(labels), -1, np.int32) if teacher_labels is None
                             else teacher_labels.astype(np.int32))}
    if teacher_probabilities is not None:
        out["teacher_probabilities"] = teacher_probabilities.astype(np.float32)
    if hard_negative_for is not None:
        out["hard_negative_for"] = hard_negative_for.astype(np.int32)
    return out


def _check_split(split, num_classes):
    if len(split) == 0:
        raise ValueError("Cannot build a pipeline from an empty split.")
    if num_classes is not None:
        lowest = 0 if split.hard_negative_for is None else -1  # -1: a hard negative
        bad = split.labels[(split.labels < lowest) | (split.labels >= num_classes)]
        if len(bad):
            raise ValueError(
                f"label {int(bad[0])} is outside the class range [0, {num_classes - 1}]."
            )


def make_dataset(split, image_size, *, training, batch_size, channels=3, seed=0,
                 shuffle=None, shuffle_buffer=10000, scale=INCEPTION_SCALE,
                 ratio=INCEPTION_RATIO, random_crop=True, flip=True,
                 crop_fraction=0.875, preprocessing=None, teacher_probabilities=False,
                 repeat=False, drop_remainder=None, num_classes=None, counter=None, order=None,
                 shard=None, num_parallel_calls=AUTOTUNE, deterministic=None):
    """A batched, prefetched `tf.data.Dataset` for a `Split`.

    Args:
        split: a `Split` with in-memory ``images`` (uint8 [n, H, W(, C)]) or
            ``paths`` to JPEG/PNG files.
        image_size: output resolution, int (224, 299, 448, 560; 28 for
            Fashion-MNIST) or (H, W).
        training: augment and shuffle (True) or centre-crop (False).
        batch_size: examples per batch.
        channels: output channels (1 or 3); gray and RGB are converted.
        seed: seeds the shuffle and the per-element augmentation.
        shuffle: default `training`.
        shuffle_buffer: shuffle buffer size (capped at the split size).
        scale, ratio: random-resized-crop area and aspect-ratio ranges.
        random_crop: use the random-resized crop in training (else resize).
        flip: random horizontal flip in training.
        crop_fraction: centre-square crop fraction at evaluation (1.0: the
            largest centred square).
        preprocessing: the evaluation preprocessing spec
            (`keras_fgvc.data.preprocessing.make_spec`; its ``image_size`` and
            ``channels`` must be those given); default
            ``make_spec(image_size, channels, crop_fraction=crop_fraction)``.
        teacher_probabilities: add ``targets["teacher_probabilities"]``
            (the split must carry them).
        repeat: repeat forever (steps per epoch are then the caller's).
        drop_remainder: default `training`.
        num_classes: when given, labels are checked against it up front.
        counter: a `SkipCounter` to count unreadable images into (a new one
            is made if None; `make_pipeline` returns it with the dataset).
        order: optional int [m] example indices to read, in this order
            (repeats allowed), e.g. a trainer's seeded epoch order. No shuffle
            is applied, and example k of `order` is augmented with the
            stateless seed ``(seed, k)``: the same order gives the same batches
            (exact resume after a restart).
        shard: optional ``(num_shards, index)``: keep positions
            ``index, index + num_shards, ...`` of the (ordered) examples, e.g.
            ``(context.num_input_pipelines, context.input_pipeline_id)``.
        num_parallel_calls, deterministic: passed to `Dataset.map`.

    Returns:
        `tf.data.Dataset` of ``(images, targets)`` (module docstring).

    Raises:
        ValueError: empty split, label out of range, or teacher probabilities
            requested but absent.
        FileNotFoundError: every listed file is missing.

    Example:
        >>> ds = make_dataset(task.train, 28, training=True, batch_size=128,
        ...                   channels=1)  # doctest: +SKIP
    """
    return make_pipeline(**{k: v for k, v in locals().items()})[0]


def make_pipeline(split, image_size, *, training, batch_size, counter=None, **kwargs):
    """Like `make_dataset`, but returns ``(dataset, counter)`` (the `SkipCounter`)."""
    num_classes = kwargs.pop("num_classes", None)
    _check_split(split, num_classes)
    want_probs = kwargs.pop("teacher_probabilities", False)
    if want_probs and split.teacher_probabilities is None:
        raise ValueError("teacher_probabilities=True but the split has no teacher_probabilities.")
    targets = _targets(split.labels, split.teacher_labels,
                       split.teacher_probabilities if want_probs else None,
                       split.hard_negative_for)
    if split.images is not None:
        source, encoded = np.asarray(split.images), False
    else:
        paths = [str(p) for p in split.paths]
        if not any(tf.io.gfile.exists(p) for p in paths[:1000]):
            raise FileNotFoundError(f"None of the split's image files exist (first: {paths[0]}).")
        source, encoded = np.asarray(paths, dtype=object).astype(str), True
    order, shard = kwargs.pop("order", None), kwargs.pop("shard", None)
    if order is None:
        ds = tf.data.Dataset.from_tensor_slices((source, targets))
        if shard is not None:
            ds = ds.shard(*shard)
    else:
        ds = _ordered_elements(source, targets, order, len(split), shard, kwargs.get("seed", 0))
        kwargs["shuffle"] = False
    counter = counter or SkipCounter()
    ds = build_from_elements(ds, len(split), image_size, training=training,
                             batch_size=batch_size, encoded=encoded, counter=counter,
                             read_files=encoded, seeded=order is not None, **kwargs)
    return ds, counter


def _ordered_elements(source, targets, order, size, shard, seed):
    """``((x, targets), seed)`` elements for the examples at `order`, position-seeded."""
    order = np.asarray(order, np.int64)
    if order.ndim != 1:
        raise ValueError(f"order must be 1-D, got shape {order.shape}.")
    bad = order[(order < 0) | (order >= size)]
    if len(bad):
        raise ValueError(f"order index {int(bad[0])} is outside [0, {size - 1}].")
    source = tf.constant(source)
    targets = tf.nest.map_structure(tf.constant, targets)
    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(order), dtype=np.int64), order))
    if shard is not None:
        ds = ds.shard(*shard)

    def gather(position, index):
        element = (tf.gather(source, index),
                   tf.nest.map_structure(lambda t: tf.gather(t, index), targets))
        return element, tf.stack([tf.constant(seed, tf.int64), 2 * position])

    return ds.map(gather)


def build_from_elements(ds, size, image_size, *, training, batch_size, encoded, counter,
                        read_files=False, channels=3, seed=0, shuffle=None,
                        shuffle_buffer=10000, scale=INCEPTION_SCALE,
                        ratio=INCEPTION_RATIO, random_crop=True, flip=True,
                        crop_fraction=0.875, preprocessing=None, repeat=False,
                        drop_remainder=None, num_parallel_calls=AUTOTUNE, deterministic=None,
                        seeded=False):
    """The shared back half: (image source, targets) elements -> batches.

    `ds` yields ``(x, targets)`` where x is a file path (``read_files``),
    encoded image bytes (``encoded``) or a uint8 image; with ``seeded`` it
    yields ``((x, targets), seed)`` with an int64 [2] augmentation seed.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}.")
    default_spec = make_spec(image_size, channels, crop_fraction=crop_fraction)
    preprocessing = default_spec if preprocessing is None else spec_from_json(preprocessing)
    if [preprocessing[k] for k in ("image_size", "channels")] != [
            default_spec[k] for k in ("image_size", "channels")]:
        raise ValueError(f"preprocessing has image_size {preprocessing['image_size']} and "
                         f"channels {preprocessing['channels']}, but the pipeline was given "
                         f"{default_spec['image_size']} and {channels}.")
    shuffle = training if shuffle is None else shuffle
    drop_remainder = training if drop_remainder is None else drop_remainder
    if shuffle:
        ds = ds.shuffle(max(1, min(shuffle_buffer, size or shuffle_buffer)), seed=seed,
                        reshuffle_each_iteration=True)
    if seeded:
        pass
    elif training:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds))
    else:
        ds = ds.map(lambda x, t: ((x, t), tf.zeros([2], tf.int64)))

    def load(element, element_seed):
        x, targets = element
        with tf.control_dependencies([counter._seen.assign_add(1)]):
            if read_files:
                x = tf.io.read_file(x)
            image = decode_image(x, channels) if encoded else ensure_channels(x, channels)
        crop_seed, flip_seed = element_seed, element_seed + 1
        if training:
            if random_crop:
                image = random_resized_crop(image, image_size, crop_seed, scale, ratio)
            else:
                image = resize(image, image_size)
            if flip:
                image = random_flip(image, flip_seed)
        else:
            image = prepare_image(image, preprocessing)
        with tf.control_dependencies([image]):
            loaded = counter._loaded.assign_add(1)
        with tf.control_dependencies([loaded]):
            image = tf.identity(image)
        return image, targets

    ds = ds.map(load, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    if encoded:
        ds = ds.ignore_errors()
        ds = ds.concatenate(_report_sentinel(ds.element_spec, counter))
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(AUTOTUNE)


def _report_sentinel(element_spec, counter):
    """A dataset that, when reached (end of a pass), logs the skip count and yields nothing."""

    def dummy(_):
        with tf.control_dependencies([counter._report()]):
            return tf.nest.map_structure(
                lambda s: tf.zeros([d if d is not None else 0 for d in s.shape], s.dtype),
                element_spec)

    return tf.data.Dataset.from_tensors(0).map(dummy).filter(lambda *_: False)
