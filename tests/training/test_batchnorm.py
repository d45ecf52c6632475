"""BatchNorm statistics re-estimated from training batches (`keras_fgvc.training.batchnorm`).

First the functions themselves, then the trainer's use of them
(``Config.bn_reestimate_batches``).
"""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.models import registry
from keras_fgvc.training import inputs
from keras_fgvc.training import loop as loop_module
from keras_fgvc.training.batchnorm import (
    batchnorm_layers,
    reestimate_batchnorm,
    reestimate_batchnorm_from_images,
)
from keras_fgvc.training.config import validate_config
from keras_fgvc.training.loop import Trainer
from keras_fgvc.training.strategy import make_strategy
from tests.training.conftest import make_toy_task, toy_config

TOY_BN = "toy_bn_for_batchnorm_tests"


def _statistics(layer):
    return np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)


def _toy_bn(num_classes, input_shape=(8, 8, 1), **kwargs):
    """Rescaling -> BN "bn_input" (statistics of the pixels / 255) -> dense -> BN -> logits."""
    inputs_ = keras.Input(shape=input_shape, name="images")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs_)
    x = keras.layers.BatchNormalization(name="bn_input")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, name="hidden")(x)
    x = keras.layers.BatchNormalization(name="bn_hidden")(x)
    x = keras.layers.Activation("relu")(x)
    logits = keras.layers.Dense(num_classes, name="classifier")(x)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
    probabilities = keras.layers.Activation("softmax", dtype="float32",
                                            name="probabilities")(logits)
    return keras.Model(inputs_, {"logits": logits, "probabilities": probabilities})


@pytest.fixture(autouse=True)
def _toy_bn_model():
    registry.register_model(TOY_BN)(_toy_bn)
    yield
    registry._REGISTRY.pop(TOY_BN, None)


# === The functions ===

def _two_bn_model():
    inputs_ = keras.Input((4, 4, 2))
    x = keras.layers.BatchNormalization(name="bn1")(inputs_)
    x = keras.layers.Conv2D(3, 1, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    return keras.Model(inputs_, x)


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


# === The trainer ===

def _reference_input_statistics(trainer, stage, batch_size, count, replicas=1):
    """bn_input's statistics from the definition: pixels / 255 of the batches the trainer
    draws (its seeded order), per-replica part of each batch, averaged."""
    order = inputs.epoch_order(stage.split.labels, inputs.BN_ORDER_EPOCH + stage.index,
                               count, batch_size, trainer.config.seed, stage.sampling)
    images = stage.split.images.astype("float64") / 255.0
    part = batch_size // replicas
    groups = [images[order[i:i + part]] for i in range(0, len(order), part)]
    return (np.mean([g.mean(axis=(0, 1, 2)) for g in groups], 0),
            np.mean([g.var(axis=(0, 1, 2)) for g in groups], 0))


@pytest.mark.parametrize("strategy_name", ["one_device", "mirrored"])
def test_trainer_reestimates_before_evaluation_and_export(strategy_name, tmp_path, capsys):
    config = toy_config(model=TOY_BN, bn_reestimate_batches=4, epochs=1, steps_per_epoch=3)
    strategy = make_strategy(strategy_name)
    trainer = Trainer(config, strategy, workdir=str(tmp_path), task=make_toy_task(),
                      verbose=0)
    result = trainer.run()
    assert "BatchNorm statistics of 2 layers re-estimated from 4 training batches" in (
        capsys.readouterr().out)
    mean, variance = _reference_input_statistics(
        trainer, trainer.stages[0], config.batch_size, 4, strategy.num_replicas_in_sync)
    layer = trainer.model.get_layer("bn_input")
    np.testing.assert_allclose(_statistics(layer)[0], mean, rtol=1e-5)
    np.testing.assert_allclose(_statistics(layer)[1], variance, rtol=1e-4)
    # The exported model and the reported metrics are those of the re-estimated model.
    reloaded = keras.saving.load_model(str(tmp_path / "model.keras"))
    np.testing.assert_allclose(_statistics(reloaded.get_layer("bn_input"))[1], variance,
                               rtol=1e-4)
    probabilities = trainer.predict(trainer.task.test)
    x = trainer.task.test.images.astype("float32")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0)["probabilities"], probabilities,
                               rtol=1e-4, atol=1e-6)
    metrics = loop_module.evaluation.evaluate(trainer.task, trainer.task.test.labels,
                                              probabilities, full=True)
    assert result["test"]["mAP"] == pytest.approx(metrics["mAP"])
    # Every replica's copy holds the re-estimated statistics.
    for copy in strategy.experimental_local_results(layer.moving_variance.value):
        np.testing.assert_allclose(np.asarray(copy), variance, rtol=1e-4)
    # The last checkpoint keeps the statistics as trained (a resume re-estimates again).
    reader = tf.train.load_checkpoint(str(tmp_path / "checkpoints" / "ckpt-3"))
    # model/_operations/2 is bn_input (input, rescaling, bn_input).
    saved = reader.get_tensor("model/_operations/2/moving_variance/.ATTRIBUTES/VARIABLE_VALUE")
    assert saved.mean() > 0.9 and not np.allclose(saved, variance, rtol=0.1)


def test_off_by_default_and_negative_refused():
    assert toy_config().bn_reestimate_batches == 0
    with pytest.raises(ValueError, match="bn_reestimate_batches=-1 must be >= 0"):
        validate_config(toy_config(bn_reestimate_batches=-1))
    trainer = Trainer(toy_config(model=TOY_BN, epochs=1, steps_per_epoch=2), verbose=0,
                      task=make_toy_task())
    trainer.run()
    # 2 steps of momentum 0.99 from variance 1: far from the pixels' variance.
    assert _statistics(trainer.model.get_layer("bn_input"))[1].mean() > 0.9


def test_resumed_run_matches_an_uninterrupted_one(tmp_path):
    config = toy_config(model=TOY_BN, bn_reestimate_batches=3, epochs=2, steps_per_epoch=3,
                        checkpoint_every_steps=2)
    whole = Trainer(config, workdir=str(tmp_path / "whole"), task=make_toy_task(), verbose=0)
    whole.run()
    cut = str(tmp_path / "cut")
    assert Trainer(config, workdir=cut, task=make_toy_task(),
                   verbose=0).run(max_steps=4)["stopped"]
    resumed = Trainer(config, workdir=cut, task=make_toy_task(), verbose=0)
    resumed.run()
    for a, b in zip(whole.model.weights, resumed.model.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    # Re-running the finished workdir re-estimates from the same checkpoint: same model.
    again = Trainer(config, workdir=cut, task=make_toy_task(), verbose=0)
    again.run()
    for a, b in zip(whole.model.weights, again.model.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_two_stage_lws_reestimates_stage_one_before_the_model_is_frozen(tmp_path):
    config = toy_config(model=TOY_BN, bn_reestimate_batches=3, epochs=1, steps_per_epoch=3,
                        finetune_epochs=1, finetune_transform="lws",
                        finetune_learning_rate=0.01)
    task = make_toy_task()
    trainer = Trainer(config, workdir=str(tmp_path), task=task, verbose=0)
    result = trainer.run()
    # LWS freezes the trained model, so its BN statistics are those re-estimated at the
    # end of the first stage (index 0, from its batches), untouched by the second.
    mean, variance = _reference_input_statistics(trainer, trainer.stages[0],
                                                 config.batch_size, 3)
    layer = [bn for bn in batchnorm_layers(trainer.model) if bn.name == "bn_input"][0]
    assert not layer.trainable
    np.testing.assert_allclose(_statistics(layer)[0], mean, rtol=1e-5)
    np.testing.assert_allclose(_statistics(layer)[1], variance, rtol=1e-4)
    assert result["stages"][0]["test"] is not None


def test_second_stage_statistics_from_the_first_stage_data(tmp_path):
    # bn_reestimate_data="train": a two-stage run's second stage re-estimates from the first
    # stage's split and sampling (index 1's own seeded order), not its balanced subset.
    config = toy_config(model=TOY_BN, bn_reestimate_batches=3, epochs=1, steps_per_epoch=3,
                        finetune_epochs=1, finetune_max_per_class=40,
                        finetune_learning_rate=0.01, bn_reestimate_data="train")
    trainer = Trainer(config, workdir=str(tmp_path), task=make_toy_task(), verbose=0)
    trainer.run()
    first, second = trainer.stages
    assert len(second.split) == 120 < len(first.split)
    order = inputs.epoch_order(first.split.labels, inputs.BN_ORDER_EPOCH + 1, 3,
                               config.batch_size, config.seed, first.sampling)
    images = first.split.images.astype("float64") / 255.0
    groups = [images[order[i:i + config.batch_size]] for i in range(0, len(order),
                                                                     config.batch_size)]
    layer = trainer.model.get_layer("bn_input")
    np.testing.assert_allclose(_statistics(layer)[0],
                               np.mean([g.mean((0, 1, 2)) for g in groups], 0), rtol=1e-5)
    with pytest.raises(ValueError, match="bn_reestimate_data='val' is not one of stage, train"):
        validate_config(toy_config(bn_reestimate_data="val"))


@pytest.mark.parametrize("cut", [3, 4])
def test_two_stage_resumed_at_or_after_the_stage_boundary_matches(tmp_path, cut):
    # Stage 2 (LWS) trains on stage 1's re-estimated, frozen statistics: a run cut at the
    # boundary (step 3) or inside stage 2 must re-estimate exactly once, as an uninterrupted
    # run does; re-running the finished workdir must not change the model either.
    config = toy_config(model=TOY_BN, bn_reestimate_batches=3, epochs=1, steps_per_epoch=3,
                        finetune_epochs=1, finetune_transform="lws",
                        finetune_learning_rate=0.5, checkpoint_every_steps=1)
    whole = Trainer(config, workdir=str(tmp_path / "whole"), task=make_toy_task(), verbose=0)
    whole.run()
    workdir = str(tmp_path / "cut")
    assert Trainer(config, workdir=workdir, task=make_toy_task(),
                   verbose=0).run(max_steps=cut)["stopped"]
    for _ in range(2):  # resume, then re-run the finished workdir
        resumed = Trainer(config, workdir=workdir, task=make_toy_task(), verbose=0)
        resumed.run()
        for a, b in zip(whole.model.weights, resumed.model.weights):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_a_config_json_without_the_field_means_off():
    # A config without the field (an old config.json) takes the default, 0 = off.
    values = dataclasses.asdict(toy_config())
    values.pop("bn_reestimate_batches")
    assert type(toy_config()).from_dict(values).bn_reestimate_batches == 0
