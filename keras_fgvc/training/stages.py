"""Training stages: what data, learning rate and trainable variables each phase uses.

Most experiments have one stage. A "head" stage can come first (Ch. 3.4:
the classifier is first fit as a logistic regression on the pretrained
network's features, ``Config.head_epochs``): only the classifier trains and
the model runs in inference mode. Two-stage long-tail fine-tuning
(dissertation Ch. 4.2.2: "in the second stage, we fine-tune the network on a
subset containing more balanced data with a small learning rate") and the
decoupled LWS baseline (train, then freeze everything but a per-class logit
scale and re-train with class-balanced sampling) add a second stage
(`Config.finetune_*`).

Global steps are laid end to end over the stages; a step's stage, epoch and
position in the epoch follow from the plan, so resuming needs only the
global step. Convention: the step that ends a stage belongs to that stage
(a checkpoint saved there has that stage's structure).

Example:

>>> stages = plan_stages(config, task)
>>> stage_for_step(stages, stages[0].end_step).index  # the boundary belongs to stage 0
0
"""

import dataclasses

from keras_fgvc.data.task import Split


@dataclasses.dataclass
class Stage:
    """One training phase.

    Args:
        index, name: position and label ("head", "train", "finetune").
        split: the training `Split` of the stage.
        epochs, steps_per_epoch: its length.
        learning_rate, schedule: the stage's optimizer schedule (a fresh
            optimizer starts every stage).
        sampling: "instance" or "class_balanced".
        trainable: variable-path substrings trained (empty = all trainable).
        transform: model transform applied when the stage begins ("" or "lws").
        start_step, start_epoch: global step / epoch where it begins.
        training: whether the model runs in training mode (BatchNorm batch statistics
            and moving averages, dropout); False in the "head" stage.
    """

    index: int
    name: str
    split: Split
    epochs: int
    steps_per_epoch: int
    learning_rate: float
    schedule: str
    sampling: str = "instance"
    trainable: tuple = ()
    transform: str = ""
    start_step: int = 0
    start_epoch: int = 0
    training: bool = True

    @property
    def end_step(self):
        return self.start_step + self.epochs * self.steps_per_epoch

    def position(self, step):
        """``(global epoch, step in epoch)`` of global `step` inside this stage."""
        epoch, in_epoch = divmod(step - self.start_step, self.steps_per_epoch)
        return self.start_epoch + epoch, in_epoch


def _steps(config, split):
    if config.steps_per_epoch:
        return config.steps_per_epoch
    steps = len(split) // config.batch_size
    if steps < 1:
        raise ValueError(
            f"The training split has {len(split)} examples, fewer than batch_size="
            f"{config.batch_size}; lower batch_size or set steps_per_epoch."
        )
    return steps


def _balanced_split(task, config):
    if not config.finetune_max_per_class:
        return task.train
    from keras_fgvc.data.long_tail import balanced_subset

    return balanced_subset(task, config.finetune_max_per_class, seed=config.seed).train


def plan_stages(config, task, train_split=None):
    """The list of `Stage`s for `config` on `task` (train split override: `train_split`)."""
    split = train_split if train_split is not None else task.train
    stages = []

    def add(name, split, epochs, learning_rate, schedule, sampling, trainable=(), transform="",
            training=True):
        last = stages[-1] if stages else None
        stages.append(Stage(
            len(stages), name, split, epochs, _steps(config, split), learning_rate, schedule,
            sampling, tuple(trainable), transform,
            start_step=last.end_step if last else 0,
            start_epoch=last.start_epoch + last.epochs if last else 0, training=training))

    if config.head_epochs:
        add("head", split, config.head_epochs, config.head_learning_rate, "constant",
            config.sampling, trainable=("classifier",), training=False)
    add("train", split, config.epochs, config.learning_rate, config.schedule, config.sampling)
    if config.finetune_epochs:
        tune = _balanced_split(task, config) if train_split is None else split
        add("finetune", tune, config.finetune_epochs, config.finetune_learning_rate, "constant",
            config.finetune_sampling, config.finetune_trainable, config.finetune_transform)
    return stages


def _lws(model):
    from keras_fgvc.models.lws import build_lws_model

    return build_lws_model(model)


_TRANSFORMS = {"": lambda model: model, "lws": _lws}


def transform_model(stage, model):
    """The model `stage` trains, made from the previous stage's (`Stage.transform`);
    call inside ``strategy.scope()``."""
    return _TRANSFORMS[stage.transform](model)


def stage_for_step(stages, step):
    """The stage global `step` belongs to (a stage's last step belongs to it)."""
    for stage in stages:
        if step <= stage.end_step:
            return stage
    return stages[-1]


def stage_results(stages, stage_metrics, final):
    """``metrics["stages"]``: each stage's index, name, end step and the ``val`` / ``test``
    metrics of the model at its end (`final` for the last stage, None where lost)."""
    return [{"index": s.index, "name": s.name, "end_step": s.end_step,
             **(final if s is stages[-1]
                else stage_metrics.get(s.index, {"val": None, "test": None}))}
            for s in stages]
