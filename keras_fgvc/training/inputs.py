"""Training input: a seeded example order per epoch, fed to every strategy the same way.

The trainer decides *which* examples each step sees (`epoch_order`): a
permutation seeded by ``(seed, epoch)``, or class-balanced sampling. Resuming
at global step s therefore needs only s: the order of the current epoch is
recomputed and the first ``step_in_epoch * batch_size`` indices are
skipped. Hooks may replace the order (triplet re-mining, Sec. 2.4.1).

`distributed_dataset` turns an order into per-replica batches with
`strategy.distribute_datasets_from_function`: input pipeline p of P keeps
indices p, p + P, ... of the order, so the global batch k is exactly
``order[k * B:(k + 1) * B]`` whatever the number of workers. In-memory
splits (Fashion-MNIST) are gathered a batch at a time; file-based splits
(iNat, Places, CUB) go through `keras_fgvc.data.pipeline.make_dataset`
(decode, random-resized crop + flip when `augment`; unreadable images
skipped and counted). Evaluation prepares images with the spec of
`eval_preprocessing` (written to ``W/preprocessing.json`` and applied again
by the exported ``serving_default``). Batches are dicts
``{"images": float32 [b, H, W, C] in [0, 255], "labels": int32 [b],
"teacher_labels": int32 [b]}`` (teacher labels -1 where there are none), plus
``"hard_negative_for": int32 [b]`` for a split that carries human hard
negatives (`Split.hard_negative_for`; their label may be -1).

Splits that carry TFRecords (`Split.records`, the folder task's
``task_kwargs.records=DIR``: `keras_fgvc.data.folder_records`) are streamed
from them instead. Evaluation reads the shards in order (the same bytes,
decoder and `eval_preprocessing` spec, so the same images as from the files).
Training does not realise the order position by position: each input
pipeline takes its share of the shard files (of the examples when there are
fewer files than pipelines), shuffles them with a seed, interleaves
`RECORDS_CYCLE_LENGTH` of them and shuffles examples in a buffer of
`RECORDS_SHUFFLE_BUFFER`, repeating as needed; only the order's length (the
steps left in the epoch) is used. The seed is derived from the epoch's seed
and that length, so resuming mid-epoch draws the rest of the epoch from a
fresh seeded shuffle: reproducible, but it may repeat or miss examples the
uninterrupted epoch would have shown. Class-balanced sampling and hooks that
replace the order need positions: the folder task refuses records with them
(`keras_fgvc.training.tasks`), and a split the trainer subsets has no records.
"""

import numpy as np
import tensorflow as tf

from keras_fgvc.data.preprocessing import make_spec, prepare_image

# Inception evaluation (dissertation Ch. 4): the centred 87.5% when training augments.
AUGMENTED_EVAL_CROP = 0.875
# Streaming from TFRecords (module docstring): encoded images held for shuffling, and
# shards read at once by each input pipeline.
RECORDS_SHUFFLE_BUFFER = 4096
RECORDS_CYCLE_LENGTH = 16
# Epoch number (offset by the stage index) that seeds the order of the BN re-estimation
# batches: far from any training epoch, so they are drawn independently of training.
BN_ORDER_EPOCH = 1_000_000


def epoch_order(labels, epoch, num_steps, batch_size, seed=0, sampling="instance"):
    """Example indices for one epoch: ``num_steps * batch_size`` of them.

    Args:
        labels: int [n] training labels.
        epoch: epoch number (seeds the order with `seed`).
        num_steps, batch_size: the epoch's steps and global batch size.
        seed: base seed.
        sampling: "instance" (permutations, concatenated if the epoch is
            longer than the data) or "class_balanced" (a class uniformly at
            random, then an example of it uniformly at random).
    """
    labels = np.asarray(labels)
    total = int(num_steps) * int(batch_size)
    rng = np.random.default_rng([int(seed), int(epoch)])
    if sampling == "class_balanced":
        classes = np.unique(labels)
        members = {c: np.flatnonzero(labels == c) for c in classes}
        picked = rng.choice(classes, size=total)
        out = np.empty(total, np.int64)
        for c in classes:
            where = np.flatnonzero(picked == c)
            out[where] = rng.choice(members[c], size=len(where))
        return out
    if sampling != "instance":
        raise ValueError(f"Unknown sampling {sampling!r}; use 'instance' or 'class_balanced'.")
    reps = -(-total // max(len(labels), 1))
    return np.concatenate([rng.permutation(len(labels)) for _ in range(reps)])[:total]


def eval_preprocessing(split, image_size, channels, augment=False):
    """The preprocessing spec evaluation applies to `split` (`keras_fgvc.data.preprocessing`).

    File-based splits: decoded to `channels`, the centred square of
    `AUGMENTED_EVAL_CROP` (0.875) of the shorter side when training augments
    (else the largest centred square), resized bilinearly to `image_size`
    (default 224). In-memory splits: the whole image, in its own channels,
    resized to `image_size` (kept at its own size when `image_size` is unset
    or equals its height). The trainer writes this spec to
    ``W/preprocessing.json``; the exported ``serving_default`` applies it.
    """
    if split.images is None:
        return make_spec(image_size or 224, channels,
                         crop_fraction=AUGMENTED_EVAL_CROP if augment else 1.0,
                         aspect="center_square")
    native = list(split.images.shape[1:3])
    size = native if not image_size or image_size == native[0] else image_size
    native_channels = split.images.shape[3] if split.images.ndim == 4 else 1
    return make_spec(size, native_channels, crop_fraction=1.0, aspect="stretch")


def _in_memory_loader(split, image_size):
    """``fn(indices int64 [b]) -> batch dict``: a vectorised gather from in-memory images."""
    labels = tf.constant(split.labels.astype(np.int32))
    teacher = hard = None
    if split.teacher_labels is not None:
        teacher = tf.constant(split.teacher_labels.astype(np.int32))
    if split.hard_negative_for is not None:
        hard = tf.constant(split.hard_negative_for.astype(np.int32))
    images = split.images if split.images.ndim == 4 else split.images[..., None]
    spec = eval_preprocessing(split, image_size, None)
    images = tf.constant(images)

    @tf.autograph.experimental.do_not_convert  # pure TF ops: converting it only costs time
    def load(idx):
        x = prepare_image(tf.gather(images, idx), spec)
        batch = {"images": x, "labels": tf.gather(labels, idx)}
        if teacher is not None:
            batch["teacher_labels"] = tf.gather(teacher, idx)
        if hard is not None:
            batch["hard_negative_for"] = tf.gather(hard, idx)
        return batch

    return load


def _as_batch(images, targets):
    """`keras_fgvc.data.pipeline` elements -> the trainer's batch dict."""
    batch = {"images": images, "labels": targets["label"],
             "teacher_labels": targets["teacher_label"]}
    for key in ("teacher_probabilities", "hard_negative_for"):  # soft bg splitting, bootstrap
        if key in targets:
            batch[key] = targets[key]
    return batch


def _file_dataset(split, image_size, channels, training, batch_size, augment, seed=0,
                  order=None, shard=None, counter=None):
    """File-based splits go through `keras_fgvc.data.pipeline` (decode, crop, flip; an
    unreadable image is skipped and counted in `counter`)."""
    from keras_fgvc.data.pipeline import make_dataset

    ds = make_dataset(
        split, image_size, training=training, batch_size=batch_size, channels=channels,
        seed=seed, order=order, shard=shard, random_crop=augment, flip=augment,
        preprocessing=eval_preprocessing(split, image_size, channels, augment),
        drop_remainder=training, counter=counter,
        teacher_probabilities=split.teacher_probabilities is not None,
    )
    return ds.map(_as_batch)


def _records_dataset(split, image_size, channels, training, batch_size, augment, seed=0,
                     shard=None, counter=None):
    """`split.records` through `keras_fgvc.data.tfrecords` (module docstring)."""
    from keras_fgvc.data.tfrecords import make_tfrecord_pipeline

    probabilities = split.teacher_probabilities
    ds, _ = make_tfrecord_pipeline(
        list(split.records), image_size, training=training, batch_size=batch_size,
        num_teacher_classes=None if probabilities is None else probabilities.shape[1],
        counter=counter, seed=seed, channels=channels, shard=shard,
        cycle_length=RECORDS_CYCLE_LENGTH if training else 1,
        shuffle_buffer=RECORDS_SHUFFLE_BUFFER, random_crop=augment, flip=augment,
        preprocessing=eval_preprocessing(split, image_size, channels, augment),
        drop_remainder=training, repeat=training)
    return ds.map(_as_batch)


def _local_cpu(strategy):
    """True for a `OneDeviceStrategy` on this host's CPU."""
    if not isinstance(strategy, tf.distribute.OneDeviceStrategy):
        return False
    devices = strategy.extended.worker_devices
    return len(devices) == 1 and "CPU" in devices[0].upper()


def _distribute(strategy, dataset_fn):
    """`strategy.distribute_datasets_from_function`, or the plain dataset on one local CPU.

    One replica on the CPU needs no distributed iterator, and `OneDeviceStrategy`'s
    one keeps background threads busy while the step runs: whole trainer runs of
    ``small_cnn`` at batch 128 on 2 cores spent 39.5 s of system time in 150 steps
    with it and 8.0 s without (benchmarks/results/trainer_speed_before.json,
    trainer_speed.json). The batches are the same.
    """
    if _local_cpu(strategy):
        return dataset_fn(tf.distribute.InputContext())
    return strategy.distribute_datasets_from_function(dataset_fn)


def distributed_dataset(strategy, split, order, batch_size, image_size, channels, augment=True,
                        seed=0, counter=None):
    """Per-replica batches of ``split[order]`` for `strategy` (global batch `batch_size`).

    `order` must hold a multiple of `batch_size` indices; the dataset yields
    ``len(order) // batch_size`` global batches (file-based splits get one
    extra batch of slack, in case an unreadable image is skipped). A split
    with `records` streams them without end, shuffled with a seed of `seed`
    and ``len(order)`` (module docstring).
    """
    order = np.asarray(order, np.int64)
    if len(order) % batch_size:
        raise ValueError(f"order has {len(order)} indices, not a multiple of {batch_size}.")
    if split.records:
        stream_seed = int(np.random.SeedSequence([int(seed), len(order)]).generate_state(1)[0])

        def records_fn(context):
            return _records_dataset(
                split, image_size or 224, channels, True,
                context.get_per_replica_batch_size(batch_size), augment, seed=stream_seed,
                shard=(context.num_input_pipelines, context.input_pipeline_id), counter=counter)

        return _distribute(strategy, records_fn)
    in_memory = split.images is not None
    if not in_memory:
        order = np.concatenate([order, np.resize(order, batch_size)])
    load = _in_memory_loader(split, image_size) if in_memory else None

    def dataset_fn(context):
        per_replica = context.get_per_replica_batch_size(batch_size)
        shard = (context.num_input_pipelines, context.input_pipeline_id)
        if not in_memory:
            return _file_dataset(split, image_size or 224, channels, True, per_replica, augment,
                                 seed=seed, order=order, shard=shard, counter=counter)
        ds = tf.data.Dataset.from_tensor_slices(order).shard(*shard)
        ds = ds.batch(per_replica, drop_remainder=True)
        return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    return _distribute(strategy, dataset_fn)


def batchnorm_batches(strategy, stage, data, count, batch_size, image_size, channels,
                      augment=True, seed=0):
    """An iterator over the `count` batches `stage`'s BatchNorm statistics are re-estimated
    from: the split and sampling of `data` (that stage or the first one), in an order of
    their own (seeded by `seed` and `BN_ORDER_EPOCH` + the stage's index)."""
    order = epoch_order(data.split.labels, BN_ORDER_EPOCH + stage.index, count, batch_size,
                        seed, data.sampling)
    return iter(distributed_dataset(strategy, data.split, order, batch_size, image_size,
                                    channels, augment=augment, seed=seed + BN_ORDER_EPOCH))


def eval_dataset(split, batch_size, image_size, channels, augment=False):
    """Batches of `split` in order (last batch smaller), for evaluation on one device.

    Images are prepared with `eval_preprocessing` (file-based splits: centre
    crop, 0.875 when training augments, and resize); an unreadable file is
    skipped, so read labels from the batches. A split with `records` reads them
    in order.
    """
    if split.records:
        return _records_dataset(split, image_size or 224, channels, False, batch_size, augment)
    if split.images is None:
        return _file_dataset(split, image_size or 224, channels, False, batch_size, augment)
    load = _in_memory_loader(split, image_size)
    ds = tf.data.Dataset.range(len(split)).batch(batch_size).map(
        load, num_parallel_calls=tf.data.AUTOTUNE
    )
    return ds.prefetch(tf.data.AUTOTUNE)
