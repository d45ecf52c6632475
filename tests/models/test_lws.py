"""LWS: frozen classifier, learned per-class scale of the logits."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.models import LearnableWeightScaling, build_lws_model, create_model
from tests.test_case import run_layer_test


def _images(batch=4, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, 28, 28, 1)).astype("float32")


def _np(x):
    return keras.ops.convert_to_numpy(x).astype(np.float64)


def test_learnable_weight_scaling_layer():
    run_layer_test(LearnableWeightScaling, {"initial_scale": 2.0}, input_shape=(3, 5))
    layer = LearnableWeightScaling()
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    np.testing.assert_allclose(_np(layer(x)), x)
    layer.scale.assign(np.array([1.0, 2.0, 0.5, -1.0], "float32"))
    np.testing.assert_allclose(_np(layer(x)), x * [1.0, 2.0, 0.5, -1.0], rtol=1e-6)


def test_only_the_scales_train():
    base = create_model("small_cnn", num_classes=4)
    x = _images()
    base_logits = _np(base(x, training=False)["logits"])
    model = build_lws_model(base)
    assert [w.path for w in model.trainable_weights] == ["lws/scale"]
    assert model.trainable_weights[0].shape == (4,)
    out = model(x)
    np.testing.assert_allclose(_np(out["logits"]), base_logits, rtol=1e-5, atol=1e-6)

    frozen = [_np(w) for w in base.weights]  # BN moving statistics included
    with tf.GradientTape() as tape:
        loss = keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(
                np.arange(4), model(x, training=True)["logits"], from_logits=True
            )
        )
    grads = tape.gradient(loss, model.trainable_weights)
    keras.optimizers.SGD(0.5).apply_gradients(zip(grads, model.trainable_weights))
    for before, after in zip(frozen, base.weights):
        np.testing.assert_array_equal(before, _np(after))
    scale = _np(model.get_layer("lws").scale)
    assert not np.allclose(scale, 1.0)
    out = model(x)
    np.testing.assert_allclose(_np(out["logits"]), base_logits * scale, rtol=1e-5, atol=1e-6)
    logits = base_logits * scale
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(_np(out["probabilities"]), expected, rtol=1e-5)


def test_round_trip_keeps_the_base_frozen(tmp_path):
    model = build_lws_model(create_model("bg_split", num_classes=3, num_teacher_classes=5))
    assert set(model.output) == {"logits", "probabilities", "aux_logits"}
    path = os.fspath(tmp_path / "lws.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert [w.path for w in reloaded.trainable_weights] == ["lws/scale"]


def test_sigmoid_base_keeps_sigmoid_probabilities():
    model = build_lws_model(create_model("small_cnn_sigmoid", num_classes=3))
    assert model.get_layer("probabilities").get_config()["activation"] == "sigmoid"
    out = model(_images(2))
    np.testing.assert_allclose(
        _np(out["probabilities"]), 1 / (1 + np.exp(-_np(out["logits"]))), rtol=1e-5
    )


def test_registered_lws_loads_a_trained_base(tmp_path):
    base = create_model("small_cnn", num_classes=3)
    x = _images(2)
    expected = _np(base(x)["logits"])
    weights = os.fspath(tmp_path / "base.weights.h5")
    base.save_weights(weights)
    model = create_model("lws", num_classes=3, base_weights=weights)
    np.testing.assert_allclose(_np(model(x)["logits"]), expected, rtol=1e-5, atol=1e-6)
    saved = os.fspath(tmp_path / "base.keras")
    base.save(saved)
    model = create_model("lws", num_classes=3, base_weights=saved)
    np.testing.assert_allclose(_np(model(x)["logits"]), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="has 3 classes but num_classes=5"):
        create_model("lws", num_classes=5, base_weights=saved)
    with pytest.raises(ValueError, match="does not exist"):
        create_model("lws", num_classes=3, base_weights=os.fspath(tmp_path / "none.keras"))
