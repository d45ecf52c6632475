"""The background-splitting teacher: a classifier over a label space without the rare classes.

Background splitting (Mullapudi et al., CVPR 2021) adds an auxiliary head that
mimics a pretrained model's predictions (its argmax pseudo-labels, cross-entropy,
weight 0.1). Here the "pretrained model" is trained on a disjoint source split
whose labels exclude the rare categories (our stand-in for ImageNet): for
Fashion-BG, `keras_fgvc.data.make_fashion_bg` returns that split's images and
labels in ``task.metadata["teacher_source"]``, and `attach_fashion_bg_teacher`
trains the teacher on them and gives every requested split its pseudo-labels.

The teacher's predictions and the teacher itself (``.keras``, beside them) are
cached under `cache_dir` (default ``$KERAS_FGVC_CACHE`` or ``~/.cache/keras_fgvc``)
as ``fashion_bg_teacher-<key>``, the key hashing the data's facts (the task's
settings and a digest of the images) and the teacher's (epochs, builder, splits).

Example:

>>> task = make_fashion_bg_with_teacher(background_fraction=0.98)  # doctest: +SKIP
>>> task.train.teacher_labels  # doctest: +SKIP
array([4, 0, 6, ...])
"""

import dataclasses
import functools
import hashlib
import logging
import os

import keras
import numpy as np
import tensorflow as tf

from keras_fgvc.data.cache import cache_key, cache_path, load_npz, save_model, save_npz
from keras_fgvc.data.fashion_bg import make_fashion_bg
from keras_fgvc.models import create_model
from keras_fgvc.training.batchnorm import reestimate_batchnorm_from_images

logger = logging.getLogger(__name__)

CACHE_PREFIX = "fashion_bg_teacher"
# 2: the key hashes the images too, and names lambdas apart; 3: teacher classes.
CACHE_VERSION = 3
SPLITS = ("train", "val", "test")


def default_teacher_builder(num_classes, input_shape):
    """``keras_fgvc.models.create_model("small_cnn", ...)``."""
    return create_model("small_cnn", num_classes=num_classes, input_shape=input_shape)


def _logits(outputs):
    """The logits of a model output: ``outputs["logits"]`` for dict outputs."""
    if isinstance(outputs, dict):
        return outputs["logits"]
    return outputs


def _as_float_images(images):
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    return images.astype(np.float32)


def train_teacher(images, labels, num_classes, builder=None, epochs=2, batch_size=128,
                  learning_rate=1e-3, seed=0, verbose=1):
    """Trains a teacher classifier with softmax cross-entropy (Adam).

    Args:
        images: uint8 [n, H, W] or [n, H, W, C], values in [0, 255] (the model
            normalises inside, as every keras_fgvc model).
        labels: int [n] in [0, num_classes).
        num_classes: K, the teacher's classes.
        builder: ``builder(num_classes, input_shape) -> keras.Model`` whose
            output is logits or a dict with ``"logits"``; default
            `default_teacher_builder` (``create_model("small_cnn")``).
        epochs, batch_size, learning_rate: the short schedule.
        seed: seeds weights and shuffling.
        verbose: 1 shows a progress bar per epoch, 0 is silent.

    Returns:
        the trained `keras.Model`, its BatchNormalization statistics
        re-estimated (`recalibrate_batch_norm`) for inference.

    Raises:
        ValueError: a label outside [0, num_classes) or no images.

    Example:
        >>> teacher = train_teacher(x, y, num_classes=7)  # doctest: +SKIP
    """
    x = _as_float_images(images)
    y = np.asarray(labels, np.int64)
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"train_teacher needs images and labels of equal, non-zero length; "
                         f"got {len(x)} and {len(y)}.")
    bad = y[(y < 0) | (y >= num_classes)]
    if len(bad):
        raise ValueError(f"teacher label {int(bad[0])} is outside [0, {num_classes - 1}].")
    keras.utils.set_random_seed(seed)
    model = (builder or default_teacher_builder)(num_classes, x.shape[1:])
    optimizer = keras.optimizers.Adam(learning_rate)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            logits = tf.cast(_logits(model(xb, training=True)), tf.float32)
            loss = loss_fn(yb, logits)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1), yb), tf.float32))
        return loss, accuracy

    rng = np.random.default_rng(seed)
    steps = int(np.ceil(len(x) / batch_size))
    for epoch in range(epochs):
        if verbose:
            print(f"Teacher epoch {epoch + 1}/{epochs} ({len(x)} images, {num_classes} classes)")
            bar = keras.utils.Progbar(steps, stateful_metrics=["loss", "accuracy"])
        order = rng.permutation(len(x))
        for s in range(steps):
            idx = order[s * batch_size:(s + 1) * batch_size]
            loss, acc = step(tf.constant(x[idx]), tf.constant(y[idx]))
            if verbose:
                bar.update(s + 1, [("loss", float(loss)), ("accuracy", float(acc))])
    recalibrate_batch_norm(model, x, seed=seed)
    return model


def recalibrate_batch_norm(model, images, batch_size=256, num_batches=8, seed=0):
    """Sets every BatchNormalization's moving statistics to the training-mode averages.

    A short schedule (a few hundred steps) leaves moving averages with momentum
    0.99 far from the batch statistics the network was trained with, and the
    inference-mode predictions collapse. This re-estimates them: the statistics
    become the mean of the per-batch statistics over `num_batches`
    random batches (`keras_fgvc.training.batchnorm`, what the trainer runs with
    ``bn_reestimate_batches``).

    Args:
        model: a Keras model (nested models are searched).
        images: uint8 or float images in [0, 255].
        batch_size, num_batches: how many images to average over.
        seed: which images.

    Returns:
        the number of BatchNormalization layers recalibrated.
    """
    return reestimate_batchnorm_from_images(model, _as_float_images(images), batch_size,
                                            num_batches, seed)


def teacher_predictions(model, images, batch_size=1024, verbose=0):
    """Pseudo-labels and probabilities of a teacher.

    Args:
        model: a teacher from `train_teacher` (logits or dict with ``"logits"``).
        images: uint8 [n, H, W(, C)].
        batch_size: inference batch size.
        verbose: 1 shows a progress bar.

    Returns:
        (labels, probabilities): int64 [n] argmax over the teacher's classes
        and float32 [n, K] softmax probabilities.
    """
    x = _as_float_images(images)
    probs = []
    bar = keras.utils.Progbar(len(x), unit_name="image") if verbose and len(x) else None
    for s in range(0, len(x), batch_size):
        logits = _logits(model(tf.constant(x[s:s + batch_size]), training=False))
        probs.append(keras.ops.convert_to_numpy(
            keras.ops.softmax(keras.ops.cast(logits, "float32"), axis=-1)))
        if bar is not None:
            bar.update(min(s + batch_size, len(x)))
    if not probs:
        k = int(model.output["logits"].shape[-1] if isinstance(model.output, dict)
                else model.output.shape[-1])
        return np.zeros(0, np.int64), np.zeros((0, k), np.float32)
    probs = np.concatenate(probs).astype(np.float32)
    return probs.argmax(-1).astype(np.int64), probs


# === Fashion-BG: the teacher of a task, trained once and cached ===


def _check_splits(splits):
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"teacher_splits names unknown split {unknown[0]!r}; "
                         "use 'train', 'val' and/or 'test'.")


def _code_digest(code):
    """Hash of a code object's bytecode and constants (nested code hashed the same way)."""
    digest = hashlib.sha256(code.co_code)
    for const in code.co_consts:
        text = _code_digest(const) if hasattr(const, "co_code") else repr(const)
        digest.update(text.encode())
    return digest.hexdigest()


def _builder_name(builder):
    """A stable cache-key name for a teacher builder: "small_cnn" for the default.

    Functions are named by module and qualified name plus a hash of their code,
    constants and closure values, so two different lambdas (or closures) in one
    module never share a cache entry; ``functools.partial`` objects add their bound
    arguments; other callables are named by their class.
    """
    if builder is None:
        return "small_cnn"
    if isinstance(builder, functools.partial):
        return (f"partial({_builder_name(builder.func)}, args={builder.args!r}, "
                f"kwargs={sorted(builder.keywords.items())!r})")
    code = getattr(builder, "__code__", None)
    if code is not None:
        closure = [c.cell_contents for c in (getattr(builder, "__closure__", None) or ())]
        body = hashlib.sha256((_code_digest(code) + repr(closure)).encode()).hexdigest()
        return f"{builder.__module__}.{builder.__qualname__}#{body[:12]}"
    named = builder if hasattr(builder, "__qualname__") else type(builder)
    return f"{named.__module__}.{named.__qualname__}"


def _teacher_source(task):
    source = (task.metadata or {}).get("teacher_source")
    if source is None:
        raise ValueError(f"Task {task.name!r} carries no teacher source split "
                         "(metadata['teacher_source']): build it with "
                         "keras_fgvc.data.make_fashion_bg(teacher=True).")
    return source


def teacher_cache_path(task, epochs=2, builder=None, splits=("train",), cache_dir=None):
    """``<cache_dir>/fashion_bg_teacher-<key>.npz``: the cache entry of `task`'s teacher.

    The key hashes the data's facts (``task.metadata["teacher_source"]["key"]``) and
    the teacher's: `epochs`, the builder's name (`_builder_name`) and the sorted
    `splits`. The teacher model is saved beside it (same name, ``.keras``).
    """
    args = dict(_teacher_source(task)["key"], version=CACHE_VERSION, epochs=epochs,
                builder=_builder_name(builder), splits=sorted(splits))
    return cache_path(CACHE_PREFIX, cache_key(**args), cache_dir)


def _cached_teacher(path, splits, train_fn, verbose):
    """``(predictions, model_path)``: the teacher's predictions for every split and its saved
    model (``.keras``, beside them), from the cache or computed and stored.

    The model is kept because the background-splitting protocol starts every student's
    trunk from it (`Config.init_trunk="teacher"`); an entry without it is recomputed.
    """
    model_path = path[:-len(".npz")] + ".keras"
    cached = load_npz(path)
    if cached is not None and os.path.isfile(model_path) and all(
        f"{n}_labels" in cached and len(cached[f"{n}_labels"]) == len(s)
        for n, s in splits.items()
    ):
        logger.info("Teacher pseudo-labels loaded from %s", path)
        return cached, model_path
    model = train_fn()
    out = {}
    for name, split in splits.items():
        labels, probs = teacher_predictions(model, split.images, verbose=verbose)
        out[f"{name}_labels"], out[f"{name}_probabilities"] = labels, probs
    save_model(model_path, model)  # first: an npz never stands without its model
    save_npz(path, **out)
    logger.info("Teacher pseudo-labels and model cached in %s", path)
    return out, model_path


def attach_fashion_bg_teacher(task, epochs=2, builder=None, splits=("train",), cache_dir=None,
                              verbose=1):
    """`task` with its teacher's pseudo-labels and the saved teacher's path.

    The teacher (background splitting) is trained on the source split that
    `keras_fgvc.data.make_fashion_bg` returns in ``task.metadata["teacher_source"]``:
    images of the teacher classes only, so it has never seen a rare category, as a
    model pretrained on ImageNet has never seen the rare iNat species.

    Args:
        task: a Fashion-BG `Task` built with ``teacher=True``.
        epochs: the teacher's training epochs.
        builder: ``builder(num_classes, input_shape) -> keras.Model``;
            default ``create_model("small_cnn", ...)``.
        splits: splits that get teacher predictions (training needs only
            ``"train"``; add ``"val"``, ``"test"`` for analysis).
        cache_dir: where the teacher and its predictions are cached.
        verbose: 1 prints teacher progress.

    Returns:
        a new `Task`: the `splits` carry ``teacher_labels`` and
        ``teacher_probabilities`` (over ``task.teacher_class_names``), and
        ``teacher_model`` is the cached ``.keras`` file.

    Raises:
        ValueError: an unknown split name, or a task without a teacher source.
    """
    _check_splits(splits)
    source = _teacher_source(task)
    wanted = {name: getattr(task, name) for name in splits}
    predictions, model_path = _cached_teacher(
        teacher_cache_path(task, epochs, builder, splits, cache_dir), wanted,
        lambda: train_teacher(source["images"], source["labels"], len(task.teacher_class_names),
                              builder=builder, epochs=epochs, seed=source["seed"],
                              verbose=verbose),
        verbose,
    )
    labelled = {
        name: dataclasses.replace(split, teacher_labels=predictions[f"{name}_labels"],
                                  teacher_probabilities=predictions[f"{name}_probabilities"])
        for name, split in wanted.items()
    }
    return dataclasses.replace(task, teacher_model=model_path, **labelled)


def make_fashion_bg_with_teacher(teacher=True, teacher_epochs=2, teacher_builder=None,
                                 teacher_splits=("train",), cache_dir=None, verbose=1,
                                 **task_kwargs):
    """The Fashion-BG task with cached teacher pseudo-labels (what ``task="fashion_bg"`` runs).

    `keras_fgvc.data.make_fashion_bg` (`task_kwargs`: rare classes, background
    fraction, sizes, seed, ``teacher_classes``, ``data_dir``...) and then, with
    `teacher`, `attach_fashion_bg_teacher` (`teacher_epochs`, `teacher_builder`,
    `teacher_splits`, `cache_dir`). `verbose` 1 prints teacher progress and the
    task summary.

    Example:
        >>> task = make_fashion_bg_with_teacher(background_fraction=0.98)  # doctest: +SKIP
        >>> task.summary()  # doctest: +SKIP
        'fashion_bg: 4 classes (train=29015, val=5000, test=10000), N=3 rare, background 98.00%...'
    """
    _check_splits(teacher_splits)
    task = make_fashion_bg(teacher=teacher, verbose=0, **task_kwargs)
    if teacher:
        task = attach_fashion_bg_teacher(task, teacher_epochs, teacher_builder, teacher_splits,
                                         cache_dir, verbose)
    if verbose:
        print(task.summary())
    return task
