"""Training-test helpers: a tiny in-memory task and a tiny registered model."""

import keras
import numpy as np
import pytest

from keras_fgvc.data.task import Split, Task
from keras_fgvc.models import list_models, register_model
from keras_fgvc.training.config import Config

TOY_MODEL = "toy_mlp_for_training_tests"


def _toy_mlp(num_classes, input_shape=(8, 8, 1), weight_decay=0.0, **kwargs):
    inputs = keras.Input(shape=input_shape, name="images")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    logits = keras.layers.Dense(num_classes, name="classifier")(x)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
    probabilities = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(
        logits
    )
    return keras.Model(inputs, {"logits": logits, "probabilities": probabilities})




def make_toy_task(n_train=256, n_eval=64, num_classes=3, size=8, background=True, seed=0):
    """Class-dependent mean images plus noise: easy to learn in a few steps."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(30, 225, size=(num_classes, size, size, 1))

    def split(n):
        labels = np.arange(n) % num_classes
        images = means[labels] + rng.normal(0, 25, size=(n, size, size, 1))
        return Split(labels=labels, images=np.clip(images, 0, 255).astype(np.uint8))

    if background:
        names = ["background"] + [f"rare{i}" for i in range(1, num_classes)]
    else:
        names = [f"class{i}" for i in range(num_classes)]
    return Task("toy", names, split(n_train), split(n_eval), split(n_eval),
                has_background=background)


def toy_config(**changes):
    base = Config(
        name="toy", task="toy", model=TOY_MODEL, loss="softmax", optimizer="sgd",
        learning_rate=0.1, momentum=0.9, batch_size=32, epochs=2, steps_per_epoch=4,
        eval_batch_size=64, checkpoint_every_steps=2, log_every_steps=1, seed=0,
    )
    import dataclasses

    return dataclasses.replace(base, **changes)


@pytest.fixture
def toy_task():
    return make_toy_task()


TOY_LINEAR = "toy_linear_for_training_tests"


def _toy_linear(num_classes, input_shape=(8, 8, 1), **kwargs):
    """Zero-initialised linear softmax classifier on raw pixels (large gradients)."""
    inputs = keras.Input(shape=input_shape, name="images")
    x = keras.layers.Flatten()(inputs)
    logits = keras.layers.Dense(num_classes, kernel_initializer="zeros", name="classifier")(x)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
    probabilities = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(
        logits
    )
    return keras.Model(inputs, {"logits": logits, "probabilities": probabilities})


@pytest.fixture(autouse=True)
def _toy_models():
    """Register the toy models for one training test only, so that other areas' tests that
    parametrize over `list_models()` never see them."""
    from keras_fgvc.models import registry

    added = [name for name in (TOY_MODEL, TOY_LINEAR) if name not in list_models()]
    for name, builder in ((TOY_MODEL, _toy_mlp), (TOY_LINEAR, _toy_linear)):
        if name in added:
            register_model(name)(builder)
    yield
    for name in added:
        registry._REGISTRY.pop(name, None)
