"""Learning-rate schedules of the papers, as functions of the global step.

- Step decay with linear warm-up (Goyal et al., used for CB loss, Ch. 5.4:
  "linear warm-up of learning rate in the first 5 epochs", then x0.1 at
  fixed epochs; kernel pooling Ch. 3: /10 every 30 epochs).
- Exponential staircase decay (Ch. 4.4: initial 0.045, "exponential decay of
  0.94 after every 2 epochs").
- `StagedSchedule`: one schedule per training stage (two-stage fine-tuning,
  Ch. 4.2.2: the second stage uses a small constant learning rate).

Example:

>>> s = StepDecay(0.1, steps_per_epoch=10, boundaries=(30, 60), rate=0.1, warmup_epochs=5)
>>> float(s(0)), float(s(49)), float(s(300))  # (1/50, 1, 0.1) * 0.1
"""

import keras
from keras import ops


def _warmup_factor(step, warmup_steps):
    """(step + 1) / warmup_steps during warm-up, 1 afterwards."""
    if warmup_steps <= 0:
        return 1.0
    return ops.minimum(1.0, (step + 1.0) / float(warmup_steps))


@keras.saving.register_keras_serializable(package="keras_fgvc")
class ConstantSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A constant learning rate with an optional linear warm-up.

    Args:
        learning_rate: base rate.
        steps_per_epoch: steps in one epoch.
        warmup_epochs: linear warm-up length in epochs (0 = none).
    """

    def __init__(self, learning_rate, steps_per_epoch=1, warmup_epochs=0.0):
        self.learning_rate = float(learning_rate)
        self.steps_per_epoch = int(steps_per_epoch)
        self.warmup_epochs = float(warmup_epochs)

    def _warmup_steps(self):
        return int(round(self.warmup_epochs * self.steps_per_epoch))

    def __call__(self, step):
        step = ops.cast(step, "float32")
        return self.learning_rate * _warmup_factor(step, self._warmup_steps()) * ops.ones(())

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "steps_per_epoch": self.steps_per_epoch,
            "warmup_epochs": self.warmup_epochs,
        }


@keras.saving.register_keras_serializable(package="keras_fgvc")
class StepDecay(ConstantSchedule):
    """lr = base * rate^(number of boundaries passed) after a linear warm-up.

    Args:
        learning_rate: base rate.
        steps_per_epoch: steps in one epoch.
        boundaries: epochs at which the rate is multiplied by `rate`.
        rate: the multiplier (0.1 in Ch. 3 and Ch. 5).
        warmup_epochs: linear warm-up length in epochs.
    """

    def __init__(self, learning_rate, steps_per_epoch=1, boundaries=(), rate=0.1,
                 warmup_epochs=0.0):
        super().__init__(learning_rate, steps_per_epoch, warmup_epochs)
        self.boundaries = [float(b) for b in boundaries]
        self.rate = float(rate)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        passed = ops.zeros(())
        for boundary in self.boundaries:
            passed = passed + ops.cast(step >= boundary * self.steps_per_epoch, "float32")
        decay = ops.power(self.rate, passed)
        return self.learning_rate * decay * _warmup_factor(step, self._warmup_steps())

    def get_config(self):
        return {**super().get_config(), "boundaries": self.boundaries, "rate": self.rate}


@keras.saving.register_keras_serializable(package="keras_fgvc")
class ExponentialStaircase(ConstantSchedule):
    """lr = base * rate^floor(step / (every_epochs * steps_per_epoch)) (Ch. 4: 0.94 every 2).

    Args:
        learning_rate: base rate (0.045 in Ch. 4).
        steps_per_epoch: steps in one epoch.
        rate: the multiplier (0.94).
        every_epochs: epochs between multiplications (2; 4 when fine-tuning).
        warmup_epochs: linear warm-up length in epochs.
    """

    def __init__(self, learning_rate, steps_per_epoch=1, rate=0.94, every_epochs=2.0,
                 warmup_epochs=0.0):
        super().__init__(learning_rate, steps_per_epoch, warmup_epochs)
        self.rate = float(rate)
        self.every_epochs = float(every_epochs)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        period = max(self.every_epochs * self.steps_per_epoch, 1.0)
        decay = ops.power(self.rate, ops.floor(step / period))
        return self.learning_rate * decay * _warmup_factor(step, self._warmup_steps())

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "every_epochs": self.every_epochs}


@keras.saving.register_keras_serializable(package="keras_fgvc")
class StagedSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Schedule i runs from global step `boundaries[i-1]` (its own step 0) to `boundaries[i]`.

    Args:
        boundaries: global steps where stage 1, 2, ... begin (len = stages - 1).
        schedules: one `LearningRateSchedule` per stage.
    """

    def __init__(self, boundaries, schedules):
        if len(schedules) != len(boundaries) + 1:
            raise ValueError(
                f"StagedSchedule needs len(boundaries) + 1 schedules, got "
                f"{len(boundaries)} boundaries and {len(schedules)} schedules."
            )
        self.boundaries = [int(b) for b in boundaries]
        self.schedules = [
            keras.optimizers.schedules.deserialize(s) if isinstance(s, dict) else s
            for s in schedules
        ]

    def __call__(self, step):
        step = ops.cast(step, "float32")
        lr = self.schedules[0](step)
        for boundary, schedule in zip(self.boundaries, self.schedules[1:]):
            lr = ops.where(step >= boundary, schedule(step - boundary), lr)
        return lr

    def get_config(self):
        return {
            "boundaries": self.boundaries,
            "schedules": [keras.optimizers.schedules.serialize(s) for s in self.schedules],
        }
