"""BatchNorm moving statistics re-estimated from training batches ("precise BN").

Keras `BatchNormalization` keeps moving averages with momentum 0.99, started at
mean 0 / variance 1. After S training steps the start still weighs 0.99^S in
them (2.7% at 360 steps). Where a layer's true variance is small (~0.02 for
the small CNN's first BN) that leaves the moving variance ~2x too large, and
the model evaluated in inference mode is not the model that was trained. Short
(budgeted) runs therefore re-estimate the statistics at the end of training:
`reestimate_batchnorm` sets every trainable BN layer's moving mean / variance
to the plain average of the batch statistics of K training batches, with no
weight update. The trainer does this at the end of every stage when
``Config.bn_reestimate_batches`` > 0.

Under a `tf.distribute` strategy each replica computes the statistics of its
own part of the batch (as in training, unless the layer is ``synchronized``);
they are averaged over replicas (and workers) and the result is assigned to
every replica's copy. (During training Keras 3 updates each replica's copy
from its own part only, and export reads the first replica's.)

Example:

>>> batches = ({"images": x} for x in np.split(train_images[:1280], 10))
>>> reestimate_batchnorm(model, batches, num_batches=10)
4
"""

import keras
import numpy as np
import tensorflow as tf


def batchnorm_layers(model):
    """Every `keras.layers.BatchNormalization` inside `model` (nested models and layers
    included), each once."""
    found = {}
    for layer in model._flatten_layers(include_self=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            found.setdefault(id(layer), layer)
    return list(found.values())


def reestimate_batchnorm(model, batches, num_batches, strategy=None):
    """Set each trainable BN layer's moving statistics to the mean of `num_batches` batch stats.

    Args:
        model: a Keras model; its weights are not changed.
        batches: an iterator of batch dicts with ``"images"`` (per-replica values from
            `strategy.distribute_datasets_from_function` under a strategy).
        num_batches: how many batches to average (>= 1).
        strategy: the strategy `model` was built under (default: the current one).

    Each batch runs in training mode with momentum 0, so a layer's moving mean /
    variance become that batch's (biased) statistics; they are summed over the
    batches and the average is assigned at the end. Frozen layers (``trainable``
    False) run in inference mode in Keras and keep their statistics. On error (or too
    few batches) the statistics and momenta are restored as they were. Returns the number
    of layers re-estimated.
    """
    layers = [layer for layer in batchnorm_layers(model) if layer.trainable]
    if not layers:
        return 0
    if num_batches < 1:
        raise ValueError(f"num_batches={num_batches} must be >= 1.")
    renorm = [layer.name for layer in layers if layer.renorm]
    if renorm:
        raise ValueError(f"BatchNorm layers {renorm} use batch renormalization, whose moving "
                         "statistics cannot be re-estimated this way (in the trainer: set "
                         "bn_reestimate_batches=0).")
    strategy = strategy or tf.distribute.get_strategy()
    momenta = [layer.momentum for layer in layers]
    before = [_statistics(layer) for layer in layers]
    sums = [[0.0, 0.0] for _ in layers]
    seen = 0
    done = False
    try:
        for layer in layers:
            layer.momentum = 0.0  # read when the step below is traced
            # moving * 0 + batch is NaN where moving is inf / NaN (e.g. after float16
            # overflow): start from finite values, which momentum 0 then ignores.
            layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, np.float32))
            layer.moving_variance.assign(np.ones(layer.moving_variance.shape, np.float32))

        @tf.function
        def step(batch):
            def forward(b):
                model(b["images"], training=True)
                # With momentum 0 the moving statistics now hold this replica's batch ones.
                return [(tf.convert_to_tensor(layer.moving_mean),
                         tf.convert_to_tensor(layer.moving_variance)) for layer in layers]

            per_replica = strategy.run(forward, args=(batch,))
            return tf.nest.map_structure(
                lambda v: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None),
                per_replica)

        iterator = iter(batches)
        while seen < num_batches:
            batch = next(iterator, None)
            if batch is None:
                break
            statistics = step(batch)
            seen += 1
            for total, (mean, variance) in zip(sums, statistics):
                total[0], total[1] = total[0] + mean.numpy(), total[1] + variance.numpy()
        done = seen == num_batches
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        results = [(m / seen, v / seen) for m, v in sums] if done else before
        for layer, (mean, variance) in zip(layers, results):
            layer.moving_mean.assign(np.asarray(mean, np.float32))
            layer.moving_variance.assign(np.asarray(variance, np.float32))
    if not done:
        raise ValueError(f"Only {seen} of the {num_batches} batches asked for were given; "
                         "the BatchNorm statistics were left as they were (under a strategy, "
                         "every replica now holds the first replica's).")
    return len(layers)


def reestimate_batchnorm_from_images(model, images, batch_size=256, num_batches=8, seed=0):
    """`reestimate_batchnorm` over `num_batches` random batches of an in-memory image array.

    Batch k holds ``min(batch_size, len(images))`` distinct images drawn with
    ``np.random.default_rng(seed)`` (images as the model takes them, e.g. uint8 or float
    in [0, 255]). Returns the number of BN layers re-estimated.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1.")
    if not len(images):
        raise ValueError("No images to re-estimate the BatchNorm statistics from.")
    rng = np.random.default_rng(seed)
    size = min(batch_size, len(images))
    batches = ({"images": images[rng.choice(len(images), size=size, replace=False)]}
               for _ in range(num_batches))
    return reestimate_batchnorm(model, batches, num_batches)


def _statistics(layer):
    return (keras.ops.convert_to_numpy(layer.moving_mean),
            keras.ops.convert_to_numpy(layer.moving_variance))
