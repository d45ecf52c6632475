"""The "head" stage (Ch. 3.4): the classifier is first fit alone on the pretrained network's
fixed features, as a logistic regression; then the whole network trains."""

import numpy as np
import pytest

from keras_fgvc.training import stages
from keras_fgvc.training.config import validate_config
from keras_fgvc.training.experiments import get_config
from keras_fgvc.training.loop import Trainer
from tests.training.conftest import make_toy_task, toy_config


def _values(model):
    return {v.path: np.array(v) for v in model.variables}


def test_plan_puts_the_head_stage_first():
    task = make_toy_task(n_train=96)
    config = toy_config(head_epochs=2, head_learning_rate=0.5, epochs=1, steps_per_epoch=3,
                        finetune_epochs=1, finetune_learning_rate=1e-3)
    plan = stages.plan_stages(config, task)
    assert [s.name for s in plan] == ["head", "train", "finetune"]
    assert [(s.start_step, s.end_step, s.start_epoch) for s in plan] == [
        (0, 6, 0), (6, 9, 2), (9, 12, 3)]
    head = plan[0]
    assert (head.trainable, head.training, head.learning_rate, head.schedule) == (
        ("classifier",), False, 0.5, "constant")
    assert plan[1].training and not plan[1].trainable and plan[1].learning_rate == 0.1
    assert [s.name for s in stages.plan_stages(toy_config(), task)] == ["train"]


def test_head_stage_trains_only_the_classifier_on_fixed_features(tmp_path):
    """After the head stage only the classifier has moved: the trunk's kernels and its
    BatchNorm moving statistics are as initialised (inference mode). The next stage trains
    the whole network, resumed from the head stage's checkpoint."""
    task = make_toy_task(size=28)
    config = toy_config(model="small_cnn", head_epochs=1, epochs=1, steps_per_epoch=2,
                        checkpoint_every_steps=2, learning_rate=0.05, head_learning_rate=0.5)
    start = Trainer(config, task=task, verbose=0)
    start.setup()
    start._build(0)
    initial = _values(start.model)
    workdir = str(tmp_path / "run")
    head = Trainer(config, task=task, workdir=workdir, verbose=0)
    head.run(max_steps=2)  # the head stage's last step
    after_head = _values(head.model)
    moved = {path for path in initial if not np.allclose(initial[path], after_head[path])}
    assert moved and all(path.startswith("classifier/") for path in moved), moved
    assert any("moving_mean" in path for path in initial)  # the trunk has BatchNorm
    full = Trainer(config, task=task, workdir=workdir, verbose=0)
    full.run()
    final = _values(full.model)
    trunk = [p for p in initial if not p.startswith("classifier/")
             and not np.allclose(initial[p], final[p])]
    assert any("moving_mean" in p for p in trunk) and any(p.endswith("kernel") for p in trunk)


def test_head_stage_settings_are_checked_and_set_for_the_cub_configs():
    with pytest.raises(ValueError, match="head_epochs"):
        validate_config(toy_config(head_epochs=-1))
    with pytest.raises(ValueError, match="head_learning_rate"):
        validate_config(toy_config(head_epochs=1, head_learning_rate=0.0))
    for name in ("cub_kernel_pooling_resnet50", "cub_kernel_pooling_vgg16",
                 "cub_compact_bilinear_vgg16"):
        config = get_config(name)
        # "We start the fine-tuning with 10x smaller learning rate" than the head's.
        assert config.head_epochs > 0, name
        assert config.head_learning_rate == pytest.approx(10 * config.learning_rate), name


def test_dry_run_exercises_the_train_stage_not_the_head(tmp_path):
    """A dry run checks that a full training step fits: with a head stage first it must still
    run the "train" stage's step (every variable, training mode)."""
    task = make_toy_task(size=28)
    config = toy_config(model="small_cnn", head_epochs=1, epochs=1, steps_per_epoch=2)
    trainer = Trainer(config, task=task, verbose=0)
    trainer.setup()
    trainer._build(0)
    before = _values(trainer.model)
    trainer = Trainer(config, task=task, verbose=0)
    trainer.dry_run(steps=1, forward=False)
    assert trainer.stage.name == "train"
    after = _values(trainer.model)
    moved = {p for p in before if not np.allclose(before[p], after[p])}
    assert any("moving_mean" in p for p in moved) and any(
        p.endswith("kernel") and not p.startswith("classifier/") for p in moved)
