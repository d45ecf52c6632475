"""BatchNorm statistics re-estimated from training batches (`keras_fgvc.models.batchnorm`).

The trainer's use of it (``Config.bn_reestimate_batches``): tests/training/test_batchnorm.py.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.models.batchnorm import (
    batchnorm_layers,
    reestimate_batchnorm,
    reestimate_batchnorm_from_images,
)
from keras_fgvc.training.strategy import make_strategy


def _two_bn_model():
    inputs_ = keras.Input((4, 4, 2))
    x = keras.layers.BatchNormalization(name="bn1")(inputs_)
    x = keras.layers.Conv2D(3, 1, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    return keras.Model(inputs_, x)


def _statistics(layer):
    return np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)


def test_statistics_are_the_mean_of_the_batch_statistics():
    rng = np.random.default_rng(1)
    batches = [rng.normal(3.0, 0.1 * (k + 1), size=(8, 4, 4, 2)).astype("float32")
               for k in range(3)]
    model = _two_bn_model()
    assert reestimate_batchnorm(model, ({"images": b} for b in batches), 3) == 2
    # NumPy reference from the definition: per-channel batch mean and biased batch
    # variance, averaged over the batches (the initial 0 / 1 leave no trace).
    mean, variance = _statistics(model.get_layer("bn1"))
    np.testing.assert_allclose(mean, np.mean([b.mean(axis=(0, 1, 2)) for b in batches], 0),
                               rtol=1e-5)
    np.testing.assert_allclose(variance, np.mean([b.var(axis=(0, 1, 2)) for b in batches], 0),
                               rtol=1e-4)
    # bn2 sees conv(bn1(x)) with bn1 in training mode (batch statistics).
    conv = model.get_layer("conv")
    kernel, bias = (np.asarray(w) for w in conv.weights)
    bn1 = model.get_layer("bn1")
    gamma, beta, eps = np.asarray(bn1.gamma), np.asarray(bn1.beta), bn1.epsilon
    hidden = [((b - b.mean((0, 1, 2))) / np.sqrt(b.var((0, 1, 2)) + eps) * gamma + beta)
              @ kernel[0, 0] + bias for b in batches]
    mean2, variance2 = _statistics(model.get_layer("bn2"))
    np.testing.assert_allclose(mean2, np.mean([h.mean((0, 1, 2)) for h in hidden], 0),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(variance2, np.mean([h.var((0, 1, 2)) for h in hidden], 0),
                               rtol=1e-3)
    assert [layer.momentum for layer in batchnorm_layers(model)] == [0.99, 0.99]


def test_frozen_layers_keep_their_statistics_and_weights_are_untouched():
    model = _two_bn_model()
    model.get_layer("bn2").trainable = False
    weights = [np.asarray(w) for w in model.trainable_weights]
    frozen = _statistics(model.get_layer("bn2"))
    images = np.full((6, 4, 4, 2), 2.0, "float32")
    assert reestimate_batchnorm(model, iter([{"images": images}] * 2), 2) == 1
    np.testing.assert_array_equal(_statistics(model.get_layer("bn2"))[1], frozen[1])
    np.testing.assert_allclose(_statistics(model.get_layer("bn1"))[0], [2.0, 2.0])
    for before, after in zip(weights, model.trainable_weights):
        np.testing.assert_array_equal(before, np.asarray(after))


def test_non_finite_statistics_are_repaired_and_bn_inside_a_custom_layer_is_found():
    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.bn = keras.layers.BatchNormalization(name="inner_bn")

        def call(self, x, training=None):
            return self.bn(x, training=training)

    inputs_ = keras.Input((3,))
    model = keras.Model(inputs_, Block()(inputs_))
    (bn,) = batchnorm_layers(model)
    bn.moving_variance.assign(np.full(3, np.inf, np.float32))
    bn.moving_mean.assign(np.full(3, np.nan, np.float32))
    data = np.arange(12, dtype="float32").reshape(4, 3)
    assert reestimate_batchnorm(model, iter([{"images": data}]), 1) == 1
    np.testing.assert_allclose(_statistics(bn)[0], data.mean(0))
    np.testing.assert_allclose(_statistics(bn)[1], data.var(0), rtol=1e-6)


def test_degenerate_and_bad_input():
    plain = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Flatten()])
    assert reestimate_batchnorm(plain, iter([]), 3) == 0  # no BN layer: nothing to do
    with pytest.raises(ValueError, match="num_batches=0 must be >= 1"):
        reestimate_batchnorm(_two_bn_model(), iter([]), 0)
    # Fewer batches than asked: a clear error, statistics and momenta as they were.
    model = _two_bn_model()
    before = _statistics(model.get_layer("bn1"))
    images = np.full((6, 4, 4, 2), 5.0, "float32")
    with pytest.raises(ValueError, match="Only 1 of the 3 batches"):
        reestimate_batchnorm(model, iter([{"images": images}]), 3)
    np.testing.assert_array_equal(_statistics(model.get_layer("bn1"))[0], before[0])
    np.testing.assert_array_equal(_statistics(model.get_layer("bn1"))[1], before[1])
    assert model.get_layer("bn1").momentum == 0.99
    # A single image per batch: variance 0 per channel is a valid statistic.
    model = _two_bn_model()
    reestimate_batchnorm(model, iter([{"images": images[:1]}]), 1)
    np.testing.assert_allclose(_statistics(model.get_layer("bn1"))[1], [0.0, 0.0], atol=1e-7)
    renorm = keras.Sequential([keras.Input((3,)),
                               keras.layers.BatchNormalization(renorm=True, name="rn")])
    with pytest.raises(ValueError, match="batch renormalization"):
        reestimate_batchnorm(renorm, iter([]), 1)


def test_from_images_draws_seeded_batches_of_distinct_images():
    rng = np.random.default_rng(1)
    images = rng.normal(3.0, 0.1, size=(40, 4, 4, 2)).astype("float32")
    model = _two_bn_model()
    assert reestimate_batchnorm_from_images(model, images, batch_size=8, num_batches=3,
                                            seed=5) == 2
    pick = np.random.default_rng(5)
    batches = [images[pick.choice(40, 8, replace=False)] for _ in range(3)]
    mean, variance = _statistics(model.get_layer("bn1"))
    np.testing.assert_allclose(mean, np.mean([b.mean((0, 1, 2)) for b in batches], 0),
                               rtol=1e-5)
    np.testing.assert_allclose(variance, np.mean([b.var((0, 1, 2)) for b in batches], 0),
                               rtol=1e-4)
    # A batch larger than the data: the whole set, once per batch.
    model = _two_bn_model()
    reestimate_batchnorm_from_images(model, np.ones((4, 4, 4, 2), "float32"), batch_size=10,
                                     num_batches=2)
    np.testing.assert_allclose(_statistics(model.get_layer("bn1"))[0], [1.0, 1.0])
    with pytest.raises(ValueError, match="batch_size=0 must be >= 1"):
        reestimate_batchnorm_from_images(model, images, batch_size=0)
    with pytest.raises(ValueError, match="No images"):
        reestimate_batchnorm_from_images(model, images[:0])


def test_under_mirrored_each_replica_contributes_its_half_batch_statistics():
    strategy = make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    rng = np.random.default_rng(3)
    data = rng.normal(1.0, 0.5, size=(16, 4, 4, 2)).astype("float32")
    data[8:] *= 3.0  # batch 2 differs from batch 1
    with strategy.scope():
        model = _two_bn_model()
    dataset = tf.data.Dataset.from_tensor_slices({"images": data}).batch(8)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    reestimate_batchnorm(model, iterator, 2, strategy)
    # Replica r of batch k holds rows [8k + 4r, 8k + 4r + 4); the update averages replicas.
    halves = [data[i:i + 4] for i in range(0, 16, 4)]
    mean, variance = _statistics(model.get_layer("bn1"))
    copies = strategy.experimental_local_results(model.get_layer("bn1").moving_mean.value)
    assert len(copies) == 2
    for copy in copies:
        np.testing.assert_array_equal(np.asarray(copy), mean)
    np.testing.assert_allclose(mean, np.mean([h.mean((0, 1, 2)) for h in halves], 0),
                               rtol=1e-5)
    np.testing.assert_allclose(variance, np.mean([h.var((0, 1, 2)) for h in halves], 0),
                               rtol=1e-4)
