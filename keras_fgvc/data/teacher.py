"""The background-splitting teacher: a classifier over a label space without the rare classes.

Background splitting (Mullapudi et al., CVPR 2021) adds an auxiliary head that
mimics a pretrained model's predictions (its argmax pseudo-labels, cross-entropy,
weight 0.1). Here the "pretrained model" is trained on a disjoint source split
whose labels exclude the rare categories (our stand-in for ImageNet).
"""

import keras
import numpy as np
import tensorflow as tf


def default_teacher_builder(num_classes, input_shape):
    """``keras_fgvc.models.create_model("small_cnn", ...)`` (imported lazily)."""
    from keras_fgvc.models import create_model

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
    random batches (`keras_fgvc.models.batchnorm`, what the trainer runs with
    ``bn_reestimate_batches``).

    Args:
        model: a Keras model (nested models are searched).
        images: uint8 or float images in [0, 255].
        batch_size, num_batches: how many images to average over.
        seed: which images.

    Returns:
        the number of BatchNormalization layers recalibrated.
    """
    from keras_fgvc.models.batchnorm import reestimate_batchnorm_from_images

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
