"""The builders the trainer is given its task, model, loss and optimizer by."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.data.task import Split
from keras_fgvc.training import builders, stages
from keras_fgvc.training.strategy import make_strategy
from tests.training.conftest import make_toy_task, toy_config


def test_input_shape_of_in_memory_and_file_splits():
    task = make_toy_task(size=8)
    assert builders.input_shape(toy_config(), task.train) == (8, 1)
    assert builders.input_shape(toy_config(image_size=12), task.train) == (12, 1)
    files = Split(labels=np.array([0, 1]), paths=np.array(["a.jpg", "b.jpg"], dtype=object))
    assert builders.input_shape(toy_config(channels=3), files) == (224, 3)
    assert builders.input_shape(toy_config(channels=3, image_size=96), files) == (96, 3)


def test_prepare_task_checks_and_limits_the_splits():
    task = builders.prepare_task(toy_config(max_train_examples=30, max_eval_examples=9),
                                 make_toy_task())
    assert (len(task.train), len(task.val), len(task.test)) == (30, 9, 9)
    assert set(task.train.labels) == {0, 1, 2}  # every class kept
    whole = make_toy_task()
    assert builders.prepare_task(toy_config(), whole) is whole
    broken = make_toy_task()
    broken.train.labels[0] = 5
    with pytest.raises(ValueError, match="train label 5 is outside the class range"):
        builders.prepare_task(toy_config(), broken)


def test_check_strategy_refuses_a_batch_the_replicas_cannot_share():
    builders.check_strategy(toy_config(batch_size=32), make_strategy("mirrored"))
    with pytest.raises(ValueError, match="batch_size=33 is not divisible by the 2 replicas"):
        builders.check_strategy(toy_config(batch_size=33), make_strategy("mirrored"))


def test_check_strategy_says_xla_is_slow_on_a_cpu(capsys):
    builders.check_strategy(toy_config(), make_strategy("one_device"))
    assert builders.CPU_XLA_NOTE not in capsys.readouterr().out
    builders.check_strategy(toy_config(jit_compile=True), make_strategy("one_device"))
    on_cpu = not tf.config.list_logical_devices("GPU")
    assert (builders.CPU_XLA_NOTE in capsys.readouterr().out) == on_cpu


def test_model_loss_and_stage_variables():
    config, task = toy_config(), make_toy_task()
    model = builders.build_model(config, task, 8, 1)
    assert model(np.zeros((2, 8, 8, 1)))["probabilities"].shape == (2, task.num_classes)
    plan = stages.plan_stages(config, task)
    assert builders.trainable_variables(model, plan[0]) == model.trainable_variables
    head = dataclasses.replace(plan[0], trainable=("classifier",))
    assert {v.path.split("/")[0] for v in builders.trainable_variables(model, head)} == {
        "classifier"}
    with pytest.raises(ValueError, match="has no trainable variables"):
        builders.trainable_variables(model, dataclasses.replace(plan[0], trainable=("none",)))
    assert builders.build_loss(config, task).targets == ["labels"]
    named = dataclasses.replace(task, teacher_class_names=["t0", "t1"])  # but no labels
    with pytest.raises(ValueError, match="Loss 'bg_split' needs teacher labels; task 'toy' "
                                         "has none"):
        builders.build_loss(toy_config(loss="bg_split"), named)


def test_trunk_path_of_a_task_without_teacher_is_refused():
    assert builders.trunk_path(toy_config(), make_toy_task()) == ""
    assert builders.load_trunk(toy_config(), make_toy_task()) == ("", None)
    with pytest.raises(ValueError, match="has no saved teacher model"):
        builders.trunk_path(toy_config(init_trunk="teacher"), make_toy_task())


@pytest.mark.parametrize("loss, model, refused", [
    ("cb_focal", "small_cnn", True), ("sigmoid", "small_cnn", True),
    ("softmax", "small_cnn_sigmoid", True), ("cb_softmax", "small_cnn_sigmoid", True),
    ("cb_focal", "small_cnn_sigmoid", False), ("focal", "small_cnn_sigmoid", False),
    ("cb_softmax", "small_cnn", False), ("ldam", "small_cnn", True)])
def test_a_sigmoid_loss_needs_a_sigmoid_head_and_a_softmax_loss_a_softmax_head(
        loss, model, refused):
    """Eq. 5.11 / 5.13 train sigmoid probabilities (with the prior bias b = -log((1 - pi) /
    pi)); a softmax head would evaluate, threshold and serve another model than trained."""
    task = make_toy_task(size=28)
    config = toy_config(model=model, loss=loss)
    if refused:
        with pytest.raises(ValueError, match=f"loss={loss} (trains|needs cosine)"):
            builders.build_model(config, task, 28, 1)
    else:
        assert builders.build_model(config, task, 28, 1) is not None


def test_ldam_on_the_cosine_head_is_accepted():
    task = make_toy_task(size=28)
    config = toy_config(model="classifier", loss="ldam",
                        model_kwargs={"backbone": "small_cnn", "head": "cosine"})
    assert builders.build_model(config, task, 28, 1) is not None
