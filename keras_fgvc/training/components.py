"""Optimizers and learning-rate schedules, looked up by name from a `Config`.

Each registry maps a config value to a small builder; the trainer never
branches on names (STYLE.md: "look components up by name in a registry").

Example:

>>> schedule = build_schedule(config, steps_per_epoch=100)
>>> optimizer = build_optimizer(config, schedule)
"""

import keras

import keras_fgvc.training.schedules as schedules  # not via the package: config imports this

_SCHEDULES = {
    "constant": lambda c, lr, spe: schedules.ConstantSchedule(lr, spe, c.warmup_epochs),
    "warmup_step": lambda c, lr, spe: schedules.StepDecay(
        lr, spe, boundaries=c.decay_epochs, rate=c.decay_rate, warmup_epochs=c.warmup_epochs
    ),
    "exponential": lambda c, lr, spe: schedules.ExponentialStaircase(
        lr, spe, rate=c.decay_rate, every_epochs=c.decay_every_epochs,
        warmup_epochs=c.warmup_epochs,
    ),
}

_OPTIMIZERS = {
    "sgd": lambda c, lr, clip: keras.optimizers.SGD(
        learning_rate=lr, momentum=c.momentum, clipvalue=clip
    ),
    "rmsprop": lambda c, lr, clip: keras.optimizers.RMSprop(
        learning_rate=lr, rho=c.rmsprop_rho, momentum=c.momentum, epsilon=c.rmsprop_epsilon,
        clipvalue=clip,
    ),
}


def list_schedules():
    """Names `Config.schedule` accepts."""
    return sorted(_SCHEDULES)


def list_optimizers():
    """Names `Config.optimizer` accepts."""
    return sorted(_OPTIMIZERS)


def _lookup(registry, kind, name):
    if name not in registry:
        raise ValueError(f"Unknown {kind} {name!r}; choose one of {', '.join(sorted(registry))}.")
    return registry[name]


def build_schedule(config, steps_per_epoch, learning_rate=None, name=None):
    """The `LearningRateSchedule` `config.schedule` (or `name`) names.

    Args:
        config: a `Config`.
        steps_per_epoch: steps of one epoch of the current stage.
        learning_rate: base rate (default `config.learning_rate`).
        name: schedule name (default `config.schedule`).
    """
    lr = config.learning_rate if learning_rate is None else learning_rate
    return _lookup(_SCHEDULES, "schedule", name or config.schedule)(config, lr, steps_per_epoch)


def build_optimizer(config, learning_rate, precision="float32", clip_in_optimizer=True):
    """The optimizer `config.optimizer` names, loss-scaled for ``mixed_float16``.

    Gradient clipping to ``[-clip_value, clip_value]`` (Ch. 3) is done by the
    trainer on the all-reduced gradient when there are several replicas
    (Keras clips each replica's part before the sum); `clip_in_optimizer`
    says whether the optimizer should clip instead (one replica).
    """
    clip = config.clip_value if (config.clip_value and clip_in_optimizer) else None
    optimizer = _lookup(_OPTIMIZERS, "optimizer", config.optimizer)(config, learning_rate, clip)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
