"""Learning-rate schedules against NumPy references written from the papers' text."""

import dataclasses

import keras
import numpy as np

from keras_fgvc.training import components, schedules
from keras_fgvc.training.experiments import get_config


def _values(schedule, steps):
    return np.array([float(schedule(s)) for s in steps])


def test_warmup_then_step_decay():
    # Ch. 5.4: linear warm-up over the first 5 epochs, then x0.1 at epochs 160 and 180
    # (here 0.01 as for long-tailed CIFAR) -- 10 steps per epoch.
    spe, base = 10, 0.1
    steps = np.arange(0, 2000, 7)
    got = _values(schedules.StepDecay(base, spe, boundaries=(160, 180), rate=0.01,
                                      warmup_epochs=5), steps)
    warm = np.minimum(1.0, (steps + 1.0) / (5 * spe))
    decay = 0.01 ** ((steps >= 1600).astype(float) + (steps >= 1800).astype(float))
    np.testing.assert_allclose(got, base * warm * decay, rtol=1e-5)
    assert got[0] == np.float32(base / 50)


def test_exponential_094_every_two_epochs():
    # Ch. 4.4: initial 0.045, exponential decay of 0.94 after every 2 epochs (staircase).
    spe = 25
    steps = np.arange(0, 1000, 3)
    got = _values(schedules.ExponentialStaircase(0.045, spe, rate=0.94, every_epochs=2), steps)
    np.testing.assert_allclose(got, 0.045 * 0.94 ** np.floor(steps / (2 * spe)), rtol=1e-5)
    # Constant inside each 2-epoch period, x0.94 at its end.
    assert got[list(steps).index(48)] == got[0]
    np.testing.assert_allclose(float(schedules.ExponentialStaircase(0.045, spe)(50)),
                               0.045 * 0.94, rtol=1e-6)


def test_constant_and_staged():
    staged = schedules.StagedSchedule(
        [100], [schedules.ConstantSchedule(0.1), schedules.ConstantSchedule(1e-6)]
    )
    np.testing.assert_allclose(_values(staged, [0, 99, 100, 500]), [0.1, 0.1, 1e-6, 1e-6],
                               rtol=1e-6)


def test_schedules_serialize():
    schedule = schedules.StepDecay(0.1, 10, boundaries=(3, 6), rate=0.1, warmup_epochs=1)
    revived = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule))
    steps = range(0, 80, 5)
    np.testing.assert_allclose(_values(revived, steps), _values(schedule, steps))


def test_components_by_name():
    config = get_config("inat2017_inception_v3_299")
    schedule = components.build_schedule(config, steps_per_epoch=10)
    assert isinstance(schedule, schedules.ExponentialStaircase)
    optimizer = components.build_optimizer(config, schedule)
    assert isinstance(optimizer, keras.optimizers.RMSprop)
    assert optimizer.momentum == 0.9 and optimizer.epsilon == 1.0
    sgd = components.build_optimizer(
        dataclasses.replace(get_config("cub_kernel_pooling_resnet50")), 0.01, "mixed_float16")
    assert isinstance(sgd, keras.optimizers.LossScaleOptimizer)
    assert sgd.inner_optimizer.clipvalue == 1.0
    assert set(components.list_schedules()) == {"constant", "warmup_step", "exponential"}
