"""steps_per_execution (K steps per call) and jit_compile: same results, hooks see every step."""

import dataclasses
import os

import numpy as np
import pytest

from keras_fgvc.training import evaluation, hooks, inputs
from keras_fgvc.training.loop import Trainer
from keras_fgvc.training.strategy import make_strategy
from tests.training.conftest import make_toy_task, toy_config


class StepSpy(hooks.Hook):
    def __init__(self):
        self.steps, self.losses = [], []

    def on_step_end(self, trainer, step, logs):
        self.steps.append(step)
        self.losses.append(logs["loss"])


def _run(config, workdir=None, strategy="one_device", extra_hooks=()):
    spy = StepSpy()
    trainer = Trainer(config, strategy=make_strategy(strategy), workdir=workdir,
                      task=make_toy_task(), hooks=[spy, *extra_hooks], verbose=0)
    result = trainer.run()
    return trainer, result, spy


def _weights(trainer):
    return [np.array(w) for w in trainer.model.weights]


@pytest.mark.parametrize("strategy", ["one_device", "mirrored"])
def test_k8_equals_k1(tmp_path, strategy):
    config = toy_config(epochs=2, steps_per_epoch=10, checkpoint_every_steps=4)
    one, r1, s1 = _run(config, str(tmp_path / "k1"), strategy)
    eight, r8, s8 = _run(dataclasses.replace(config, steps_per_execution=8),
                         str(tmp_path / "k8"), strategy)
    assert s1.steps == s8.steps == list(range(1, 21))  # every hook sees every step
    np.testing.assert_allclose(s8.losses, s1.losses, rtol=1e-5, atol=1e-6)
    for a, b in zip(_weights(eight), _weights(one)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert r8["test"]["mAP"] == pytest.approx(r1["test"]["mAP"], abs=1e-5)
    # Checkpoints land on the same steps: a block never runs across one.
    listing = lambda d: sorted(f for f in os.listdir(d / "checkpoints") if f.endswith(".index"))
    assert listing(tmp_path / "k8") == listing(tmp_path / "k1")


def test_blocks_stop_at_hook_periods_and_epoch_ends():
    seen = []

    class Every3(hooks.Hook):
        step_period = 3

        def on_step_end(self, trainer, step, logs):
            if step % 3 == 0:
                seen.append(step)

    calls = []
    config = toy_config(epochs=2, steps_per_epoch=7, steps_per_execution=5)
    trainer = Trainer(config, task=make_toy_task(), hooks=[Every3()], verbose=0)
    original = trainer._block_size

    def spy(stage, max_steps):
        count = original(stage, max_steps)
        calls.append((trainer.global_step, count))
        return count

    trainer._block_size = spy
    trainer.run()
    # From step s, a block ends at the next multiple of 3 or the epoch end (7, 14), K <= 5.
    assert calls == [(0, 3), (3, 3), (6, 1), (7, 2), (9, 3), (12, 2), (14, 1), (15, 3),
                     (18, 3)][:len(calls)]
    assert sum(c for _, c in calls) == 14 and all(c <= 5 for _, c in calls)
    assert seen == [3, 6, 9, 12]


def test_jit_compile_trains_like_the_plain_step(tmp_path):
    config = toy_config(epochs=1, steps_per_epoch=6)
    plain, r_plain, s_plain = _run(config)
    xla, r_xla, s_xla = _run(dataclasses.replace(config, jit_compile=True,
                                                 steps_per_execution=3))
    assert s_xla.steps == list(range(1, 7))
    np.testing.assert_allclose(s_xla.losses, s_plain.losses, rtol=1e-4, atol=1e-5)
    for a, b in zip(_weights(xla), _weights(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_resume_with_another_k(tmp_path):
    config = toy_config(epochs=2, steps_per_epoch=5, checkpoint_every_steps=3)
    straight, r_straight, _ = _run(config)
    first = Trainer(dataclasses.replace(config, steps_per_execution=4),
                    workdir=str(tmp_path), task=make_toy_task(), verbose=0)
    assert first.run(max_steps=6)["stopped"]
    resumed, r_resumed, spy = _run(dataclasses.replace(config, steps_per_execution=2),
                                   str(tmp_path))
    assert spy.steps == list(range(7, 11))
    for a, b in zip(_weights(resumed), _weights(straight)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_jit_compile_under_several_replicas_is_refused_clearly():
    config = toy_config(jit_compile=True)
    trainer = Trainer(config, strategy=make_strategy("mirrored"), task=make_toy_task(), verbose=0)
    with pytest.raises(ValueError, match="jit_compile=true needs one replica"):
        trainer.setup()


class _CountVal(Trainer):
    """Counts predictions over the validation split."""

    val_predictions = 0

    def predict_with_labels(self, split, output="probabilities"):
        if split is self.task.val:
            self.val_predictions += 1
        return super().predict_with_labels(split, output)


class _Nudge(hooks.Hook):
    """Changes a weight after the last epoch's evaluation."""

    def on_epoch_end(self, trainer, epoch, logs):
        variable = trainer.model.trainable_variables[0]
        variable.assign(variable + 1.0)


@pytest.mark.parametrize("nudge", [False, True])
def test_final_evaluation_reuses_the_last_val_prediction_only_for_the_same_weights(nudge):
    config = toy_config(epochs=1, steps_per_epoch=6, bn_reestimate_batches=0)
    plain = _CountVal(config, task=make_toy_task(), verbose=0,
                      hooks=[_Nudge()] if nudge else [])
    result = plain.run()
    assert plain.val_predictions == (2 if nudge else 1)
    # What it reports is what a fresh prediction of the final model gives.
    probabilities, labels = Trainer.predict_with_labels(plain, plain.task.val)
    np.testing.assert_array_equal(plain.final_predictions["val"][0], probabilities)
    fresh = evaluation.evaluate(plain.task, labels, probabilities, full=True)
    assert result["val"]["mAP"] == pytest.approx(fresh["mAP"], abs=1e-12)


def test_one_cpu_device_iterates_the_plain_dataset_with_the_same_batches():
    import tensorflow as tf

    task = make_toy_task()
    order = inputs.epoch_order(task.train.labels, 0, 4, 32, 0, "instance")
    one = inputs.distributed_dataset(make_strategy("one_device"), task.train, order, 32, 8, 1,
                                     augment=False)
    assert isinstance(one, tf.data.Dataset)  # not a distributed dataset
    mirrored = make_strategy("mirrored")
    spread = inputs.distributed_dataset(mirrored, task.train, order, 32, 8, 1, augment=False)
    assert not isinstance(spread, tf.data.Dataset)
    first = [b["labels"].numpy() for b in one]
    gathered = [np.concatenate([t.numpy() for t in mirrored.experimental_local_results(
        b["labels"])]) for b in spread]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(gathered))
    np.testing.assert_array_equal(np.concatenate(first), task.train.labels[order])
