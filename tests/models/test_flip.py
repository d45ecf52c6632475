"""Test-time flip averaging (Ch. 3.4): the wrapper's outputs against a NumPy mirror."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.models import create_model
from keras_fgvc.models.flip import HorizontalFlip, flip_averaged
from tests.test_case import run_saved_model_test, run_serialization_test


def _images(n=5, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, 28, 28, 1)).astype("float32")


def _model():
    keras.utils.set_random_seed(0)
    return create_model("small_cnn", num_classes=4, input_shape=(28, 28, 1))


def test_every_output_is_the_mean_over_the_image_and_its_mirror():
    model, x = _model(), _images()
    averaged = flip_averaged(model)
    got = averaged(x)
    assert set(got) == {"logits", "probabilities"}
    mirror = x[:, :, ::-1, :]  # reverse the width axis
    for key in got:
        want = (np.asarray(model(x)[key]) + np.asarray(model(mirror)[key])) / 2
        np.testing.assert_allclose(np.asarray(got[key]), want, rtol=1e-6, atol=1e-7)
    # The mirror matters: a trained-looking (random) model is not left-right symmetric.
    assert not np.allclose(np.asarray(got["probabilities"]),
                           np.asarray(model(x)["probabilities"]), atol=1e-4)
    # Weights are shared: training the inner model changes the wrapper.
    assert {id(w) for w in averaged.weights} == {id(w) for w in model.weights}


def test_round_trips_exports_and_compiles(tmp_path):
    averaged, x = flip_averaged(_model()), _images()
    path = str(tmp_path / "flip.keras")
    averaged.save(path)
    reloaded = keras.saving.load_model(path)
    for key in ("logits", "probabilities"):
        np.testing.assert_allclose(np.asarray(reloaded(x)[key]), np.asarray(averaged(x)[key]),
                                   rtol=1e-6)
    run_saved_model_test(averaged, x, batch_sizes=[1, 5])
    jit = tf.function(lambda t: averaged(t)["probabilities"], jit_compile=True)
    np.testing.assert_allclose(jit(tf.constant(x)).numpy(),
                               np.asarray(averaged(x)["probabilities"]), atol=1e-6)
    run_serialization_test(HorizontalFlip())
    np.testing.assert_array_equal(np.asarray(HorizontalFlip()(x)), x[:, :, ::-1, :])


def test_bad_models_are_refused():
    inputs = keras.Input((8,))
    flat = keras.Model(inputs, {"logits": keras.layers.Dense(2)(inputs)})
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        flip_averaged(flat)
    images = keras.Input((8, 8, 1))
    plain = keras.Model(images, keras.layers.Flatten()(images))
    with pytest.raises(ValueError, match="dict"):
        flip_averaged(plain)
