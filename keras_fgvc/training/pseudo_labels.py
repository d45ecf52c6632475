"""Teacher pseudo-labels for background splitting, from any saved classifier the user has.

Background splitting (Mullapudi et al., CVPR 2021) trains an auxiliary head to
mimic a pretrained model's predictions on the training images. Here that
model is whatever the user passes (`task_kwargs.teacher_model`): a ``.keras``
file or a SavedModel directory whose output is class logits or probabilities
(e.g. a ``keras.applications`` classifier saved with its local weights).

`teacher_probabilities` runs it once over the training images, in batches,
at the teacher's own input size (the centred square of each image, resized
bilinearly; `keras_fgvc.data.preprocessing.prepare_image`), with a progress
bar. Results are written in shards of `shard_size` images under
``$KERAS_FGVC_CACHE/pseudo_labels/<key>/``, where the key hashes the
teacher's file contents, the image list and the preprocessing: a killed run
resumes at the first missing shard, a second run reads the cache, and a
changed teacher file (or image list) computes new labels.

The teacher runs on one device (TensorFlow's default placement: the first GPU
when there is one), not under the trainer's tf.distribute strategy, on purpose:

- it runs once per teacher file and image list and is cached, so at most the
  first run pays for it, and it is a forward pass only;
- the task (hence the pseudo-labels) is built in every process before the
  trainer enters ``strategy.scope()``; under ``multi_worker`` a teacher built in
  the scope would create variables collectively, tying the workers' task
  building into lockstep and still leaving each worker needing every label;
- the task builder is given the config, not the strategy (the trainer builds
  the task before its model), so a strategy here would be a second one.

What that costs: on a host with several GPUs (``mirrored``) the one pass uses
one of them.

Workers that share the cache folder still share the work: each starts at its
own share of the missing shards (`keras_fgvc.data.cache.work_order`) and
takes a shard another worker finished from the cache instead of computing it.

Teachers whose inputs are not in [0, 255] name their preprocessing with
``task_kwargs.teacher_preprocessing``: ``raw`` (default; keras_fgvc models,
EfficientNet, ConvNeXt), or a ``keras.applications`` mode ``caffe`` (ResNet50,
VGG), ``tf`` ([-1, 1]: MobileNet, Inception) or ``torch``.
"""

import dataclasses
import hashlib
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from keras_fgvc.data.cache import default_cache_dir, load_npz, save_npz, work_order
from keras_fgvc.data.image_ops import decode_image
from keras_fgvc.data.preprocessing import make_spec, prepare_image

PREPROCESSING = ("raw", "caffe", "tf", "torch")
MODES = ("hard", "soft")


def file_digest(path):
    """SHA-256 of a file, or of every file under a directory (relative names included)."""
    digest = hashlib.sha256()
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(root, f) for root, _, names in os.walk(path) for f in names)
    for file in files:
        digest.update(os.path.relpath(file, path).encode() if file != path else b"")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class Teacher:
    """A loaded teacher: ``teacher(images float32 [B, H, W, C] in its range) -> probabilities``.

    Args:
        path: ``.keras`` file or SavedModel directory.

    Attributes:
        input_size: (H, W) the teacher takes (224 x 224 when it takes any size).
        channels: 1 or 3.
    """

    def __init__(self, path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"task_kwargs.teacher_model not found: {path}")
        import keras_fgvc.layers  # noqa: F401  (registers keras_fgvc objects)
        import keras_fgvc.models  # noqa: F401

        self.path = path
        if os.path.isdir(path):
            loaded = tf.saved_model.load(path)
            if "serving_default" not in loaded.signatures:
                raise ValueError(f"Teacher SavedModel {path} has no serving_default signature.")
            self._fn = loaded.signatures["serving_default"]
            self._loaded = loaded  # keep the variables alive
            (spec,) = self._fn.structured_input_signature[1].values()
            self._input_key = next(iter(self._fn.structured_input_signature[1]))
            shape = spec.shape
            call = lambda x: self._fn(**{self._input_key: x})
        elif path.endswith((".keras", ".h5")):
            self.model = keras.saving.load_model(path, compile=False)
            shape = tf.TensorShape(self.model.inputs[0].shape)
            call = lambda x: self.model(x, training=False)
        else:
            raise ValueError(f"task_kwargs.teacher_model={path!r}: give a .keras file or a "
                             "SavedModel directory.")
        if shape.rank != 4:
            raise ValueError(f"Teacher {path} takes inputs of shape {shape}; it must take "
                             "images [batch, height, width, channels].")
        height, width, channels = shape[1], shape[2], shape[3]
        self.input_size = (height or 224, width or 224)
        self.channels = channels or 3
        if self.channels not in (1, 3):
            raise ValueError(f"Teacher {path} takes {self.channels}-channel images; "
                             "1 or 3 are supported.")
        self._call = tf.function(call, reduce_retracing=True)
        self._from_logits = None

    @staticmethod
    def _pick(outputs):
        if isinstance(outputs, dict):
            for key in ("probabilities", "logits", "predictions"):
                if key in outputs:
                    return outputs[key]
            return outputs[sorted(outputs)[0]]
        if isinstance(outputs, (list, tuple)):
            return outputs[0]
        return outputs

    def __call__(self, images):
        out = tf.cast(self._pick(self._call(images)), tf.float32)
        if out.shape.rank != 2:
            raise ValueError(f"Teacher {self.path} gives outputs of shape {out.shape}; it "
                             "must give class logits or probabilities [batch, classes].")
        if self._from_logits is None:  # decided once, on the first batch
            sums = tf.reduce_sum(out, -1)
            is_probs = bool(tf.reduce_all(out >= 0) and tf.reduce_all(out <= 1)
                            and tf.reduce_all(tf.abs(sums - 1.0) < 1e-3))
            self._from_logits = not is_probs
        return tf.nn.softmax(out, -1) if self._from_logits else out


def _teacher_input(preprocessing):
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"task_kwargs.teacher_preprocessing={preprocessing!r} is not one of "
                         f"{', '.join(PREPROCESSING)}.")
    if preprocessing == "raw":
        return lambda x: x
    from keras.applications import imagenet_utils

    return lambda x: imagenet_utils.preprocess_input(x, mode=preprocessing)


def teacher_dataset(paths, spec, batch_size, preprocessing="raw"):
    """Batches of teacher inputs for `paths`, in order (decode, centre square, resize)."""
    adjust = _teacher_input(preprocessing)
    ds = tf.data.Dataset.from_tensor_slices(np.asarray([str(p) for p in paths]))
    ds = ds.map(lambda p: prepare_image(decode_image(tf.io.read_file(p), spec["channels"]),
                                        spec),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).map(adjust).prefetch(tf.data.AUTOTUNE)


def _progress(total):
    # One line at the end when the output is not a terminal (logs), a live bar otherwise.
    verbose = 1 if sys.stdout.isatty() else 2
    return keras.utils.Progbar(total, unit_name="image", verbose=verbose)


def teacher_probabilities(teacher_path, paths, batch_size=64, preprocessing="raw",
                          shard_size=4096, cache_dir=None, verbose=1):
    """Teacher probabilities float32 [n, K] for the images at `paths` (cached, resumable).

    Args:
        teacher_path: ``.keras`` file or SavedModel directory.
        paths: image files (all readable: the folder task drops unreadable ones).
        batch_size: images per teacher call.
        preprocessing: see the module docstring.
        shard_size: images per cache shard (the unit of resumption).
        cache_dir: default `default_cache_dir()`.
        verbose: 1 prints what it does and a progress bar.

    Returns:
        (probabilities, cache folder).
    """
    paths = [str(p) for p in paths]
    digest = hashlib.sha256()
    for part in (file_digest(teacher_path), preprocessing, str(shard_size), *paths):
        digest.update(part.encode("utf-8") + b"\n")
    folder = os.path.join(cache_dir or default_cache_dir(), "pseudo_labels",
                          digest.hexdigest()[:20])
    num_shards = -(-len(paths) // shard_size)
    shard_file = lambda i: os.path.join(folder, f"shard-{i:05d}-of-{num_shards:05d}.npz")
    shards = [load_npz(shard_file(i)) for i in range(num_shards)]
    missing = [i for i, s in enumerate(shards) if s is None or "probabilities" not in s]
    if missing:
        teacher = Teacher(teacher_path)
        spec = make_spec(teacher.input_size, teacher.channels, crop_fraction=1.0)
        todo = sum(min(shard_size, len(paths) - i * shard_size) for i in missing)
        if verbose:
            print(f"Teacher {teacher_path}: pseudo-labelling {todo} training images at "
                  f"{spec['image_size'][0]}x{spec['image_size'][1]} "
                  f"({len(paths) - todo} cached) -> {folder}", flush=True)
        bar = _progress(todo) if verbose else None
        done = 0
        for i in work_order(missing):
            chunk = paths[i * shard_size:(i + 1) * shard_size]
            finished = load_npz(shard_file(i))  # by another worker sharing the cache
            if finished is not None and "probabilities" in finished:
                shards[i], done = finished, done + len(chunk)
                continue
            rows = []
            for images in teacher_dataset(chunk, spec, batch_size, preprocessing):
                rows.append(teacher(images).numpy())
                done += len(rows[-1])
                if bar is not None:
                    bar.update(done)
            shards[i] = {"probabilities": np.concatenate(rows).astype(np.float32)}
            save_npz(shard_file(i), **shards[i])
    elif verbose:
        print(f"Teacher pseudo-labels of {len(paths)} training images read from {folder}.",
              flush=True)
    if not shards:
        return np.zeros((0, 0), np.float32), folder
    return np.concatenate([s["probabilities"] for s in shards]).astype(np.float32), folder


def attach_teacher(task, teacher_path, mode="hard", batch_size=64, preprocessing="raw",
                   cache_dir=None, verbose=1):
    """`task` with the teacher's pseudo-labels on its training split.

    ``teacher_labels`` (argmax) always; ``teacher_probabilities`` too with
    ``mode="soft"``. Validation and test images get -1 (none): the auxiliary
    head only trains.
    """
    if mode not in MODES:
        raise ValueError(f"task_kwargs.teacher_mode={mode!r} is not one of {', '.join(MODES)}.")
    probs, folder = teacher_probabilities(teacher_path, task.train.paths, batch_size,
                                          preprocessing, cache_dir=cache_dir, verbose=verbose)
    k = probs.shape[1]
    train = dataclasses.replace(
        task.train, teacher_labels=probs.argmax(-1).astype(np.int64),
        teacher_probabilities=probs if mode == "soft" else None, records=None)
    none = lambda split: dataclasses.replace(
        split, teacher_labels=np.full(len(split), -1, np.int64), records=None,
        teacher_probabilities=(np.full((len(split), k), 1.0 / k, np.float32)
                               if mode == "soft" else None))
    metadata = {**(task.metadata or {}), "teacher_cache": folder, "teacher_mode": mode}
    return dataclasses.replace(task, train=train, val=none(task.val), test=none(task.test),
                               teacher_class_names=[f"teacher_{i}" for i in range(k)],
                               metadata=metadata)
