"""The trainer re-estimates BatchNorm statistics (``Config.bn_reestimate_batches``).

The function itself: tests/models/test_batchnorm.py.
"""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.models import registry
from keras_fgvc.models.batchnorm import batchnorm_layers
from keras_fgvc.training import inputs
from keras_fgvc.training import loop as loop_module
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


# === The trainer ===

def _reference_input_statistics(trainer, stage, batch_size, count, replicas=1):
    """bn_input's statistics from the definition: pixels / 255 of the batches the trainer
    draws (its seeded order), per-replica part of each batch, averaged."""
    order = inputs.epoch_order(stage.split.labels, loop_module._BN_ORDER_EPOCH + stage.index,
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
    order = inputs.epoch_order(first.split.labels, loop_module._BN_ORDER_EPOCH + 1, 3,
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
