"""Heads: softmax, sigmoid prior bias, fixed background logit, anchor soft vote, bg split."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.models import build_background_splitting, build_classifier, create_model


def _images(batch=4, shape=(28, 28, 1), seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, *shape)).astype("float32")


def _np(x):
    return keras.ops.convert_to_numpy(x).astype(np.float64)


def _pooled(model, x):
    return _np(keras.Model(model.input, model.get_layer("pooling").output)(x))


def test_softmax_head_matches_dense_then_softmax():
    model = build_classifier(5)
    x = _images()
    out = model(x)
    kernel, bias = (_np(w) for w in model.get_layer("classifier").weights)
    logits = _pooled(model, x) @ kernel + bias
    np.testing.assert_allclose(_np(out["logits"]), logits, rtol=1e-4, atol=1e-5)
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(_np(out["probabilities"]), expected, rtol=1e-4, atol=1e-6)


def test_gap_pooling_is_the_spatial_mean():
    model = build_classifier(3)
    x = _images()
    features = _np(model.get_layer("backbone")(x))
    np.testing.assert_allclose(_pooled(model, x), features.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_classes, prior", [(5, None), (2, None), (7, 0.01)])
def test_sigmoid_head_prior_bias_and_no_bias_decay(num_classes, prior):
    head_kwargs = {} if prior is None else {"prior_probability": prior}
    model = build_classifier(
        num_classes, head="sigmoid", weight_decay=1e-3, head_kwargs=head_kwargs
    )
    pi = prior if prior is not None else 1.0 / num_classes
    dense = model.get_layer("classifier")
    np.testing.assert_allclose(_np(dense.bias), -math.log((1 - pi) / pi), rtol=1e-6)
    np.testing.assert_allclose(_np(dense.bias), math.log(pi / (1 - pi)), rtol=1e-6)
    assert dense.bias.regularizer is None and dense.get_config()["bias_regularizer"] is None
    assert dense.kernel.regularizer is not None
    # Weight decay terms: the 5 conv kernels of the small CNN + the head kernel; no bias.
    kernels = [w for w in model.trainable_weights if w.name == "kernel"]
    assert len(model.losses) == len(kernels) == 6
    expected = sum(1e-3 * np.sum(np.square(_np(k))) for k in kernels)
    np.testing.assert_allclose(float(sum(_np(v) for v in model.losses)), expected, rtol=1e-4)
    # At initialisation every sigmoid output is near pi for small features.
    out = model(np.zeros((1, 28, 28, 1), "float32"))
    probabilities = 1 / (1 + np.exp(-_np(out["logits"])))
    np.testing.assert_allclose(_np(out["probabilities"]), probabilities, rtol=1e-5)


def test_sigmoid_head_bad_prior():
    with pytest.raises(ValueError, match="explicit prior_probability"):
        build_classifier(1, head="sigmoid")
    with pytest.raises(ValueError, match="1.5"):
        build_classifier(3, head="sigmoid", head_kwargs={"prior_probability": 1.5})


@pytest.mark.parametrize("background_logit", [0.0, 1.5])
def test_fixed_background_logit_is_constant(background_logit):
    model = create_model("fixed_background", num_classes=4, background_logit=background_logit)
    assert model.get_layer("classifier").units == 3
    x = _images()
    out = model(x)
    logits = _np(out["logits"])
    assert logits.shape == (4, 4)
    np.testing.assert_array_equal(logits[:, 0], background_logit)
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(_np(out["probabilities"]), expected, rtol=1e-5)
    # No gradient reaches the background logit.
    with tf.GradientTape() as tape:
        background = tf.reduce_sum(model(x, training=True)["logits"][:, 0])
    grads = tape.gradient(background, model.trainable_weights)
    assert all(g is None or not np.any(_np(g)) for g in grads)


def test_anchor_head_embedding_and_log_probabilities():
    model = create_model("anchor_metric", num_classes=5)
    layer = model.get_layer("anchors")
    assert layer.anchors_per_class == 3 and layer.gamma == 5.0
    x = _images(6)
    out = model(x)
    embedding = _np(out["embedding"])
    assert embedding.shape == (6, 64)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=-1), 1.0, atol=1e-5)
    log_p = _np(out["logits"])
    np.testing.assert_allclose(np.log(np.exp(log_p).sum(-1)), 0.0, atol=1e-5)
    np.testing.assert_allclose(_np(out["probabilities"]), np.exp(log_p), rtol=1e-5)
    # Softmax cross-entropy on the logits is -log p_y.
    labels = np.arange(6) % 5
    ce = _np(keras.losses.sparse_categorical_crossentropy(labels, out["logits"], from_logits=True))
    np.testing.assert_allclose(
        ce, -np.log(_np(out["probabilities"])[np.arange(6), labels]), rtol=1e-4
    )
    # Anchors can be set from embeddings (k-means per class).
    layer.init_from_embeddings(embedding, labels, seed=0)
    assert np.all(np.isfinite(_np(model(x)["logits"])))


def test_anchor_head_options():
    model = create_model(
        "anchor_metric", num_classes=3, embedding_dim=16, anchors_per_class=2, gamma=2.0
    )
    assert model.output["embedding"].shape == (None, 16)
    assert model.get_layer("anchors").anchors_per_class == 2
    assert model.get_layer("anchors").gamma == 2.0


@pytest.mark.parametrize("fixed_background", [False, True])
def test_background_splitting_shares_the_trunk(fixed_background):
    model = build_background_splitting(
        5, num_teacher_classes=7, fixed_background=fixed_background, background_logit=0.5
    )
    x = _images()
    out = model(x)
    assert set(out) == {"logits", "probabilities", "aux_logits"}
    assert out["logits"].shape == (4, 5) and out["aux_logits"].shape == (4, 7)
    pooled = _pooled(model, x)
    kernel, bias = (_np(w) for w in model.get_layer("aux_classifier").weights)
    np.testing.assert_allclose(_np(out["aux_logits"]), pooled @ kernel + bias, rtol=1e-4, atol=1e-5)
    if fixed_background:
        np.testing.assert_array_equal(_np(out["logits"])[:, 0], 0.5)
    np.testing.assert_allclose(_np(out["probabilities"]).sum(-1), 1.0, atol=1e-5)


def test_dropout_and_weight_decay_options():
    model = build_classifier(3, dropout=0.5, weight_decay=1e-4)
    assert model.get_layer("dropout").rate == 0.5
    assert model.get_layer("classifier").kernel.regularizer is not None
    x = _images(2)
    np.testing.assert_allclose(_np(model(x)["logits"]), _np(model(x)["logits"]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 0}, "num_classes must be a positive integer, got 0"),
        ({"num_classes": 2.5}, "2.5"),
        ({"num_classes": 3, "head": "arcface"}, "'arcface'"),
        ({"num_classes": 3, "pooling": "max"}, "'max'"),
        ({"num_classes": 3, "dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_classifier(**kwargs)


def _official_ldam(labels, cosine, counts, max_margin=0.5, s=30.0, weights=None):
    """Cao et al.'s LDAMLoss.forward on NormedLinear outputs, in NumPy float64."""
    m = 1.0 / np.sqrt(np.sqrt(np.asarray(counts, np.float64)))
    m = m * (max_margin / m.max())
    output = cosine - np.eye(cosine.shape[1])[labels] * m[labels][:, None]
    z = s * output
    log_p = z - z.max(1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(1, keepdims=True))
    w = np.ones(cosine.shape[1]) if weights is None else np.asarray(weights)
    return -w[labels] * log_p[np.arange(len(labels)), labels]


def test_cosine_head_logits_and_ldam_on_them_match_the_official_formula():
    from keras_fgvc.losses import LDAMLoss

    counts = [900, 60, 30, 10]
    model = build_classifier(4, head="cosine", head_kwargs={"scale": 30.0})
    x = _images(6)
    out = model(x)
    kernel = _np(model.get_layer("classifier").kernel)
    features = _pooled(model, x)
    cosine = (features / np.linalg.norm(features, axis=1, keepdims=True)) @ (
        kernel / np.linalg.norm(kernel, axis=0, keepdims=True))
    logits = _np(out["logits"])
    np.testing.assert_allclose(logits, cosine, rtol=1e-4, atol=1e-5)
    assert np.all(np.abs(logits) <= 1.0 + 1e-6)
    # probabilities: softmax(s * cosine), the distribution the LDAM loss trains.
    z = 30.0 * cosine
    expected = np.exp(z - z.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(_np(out["probabilities"]), expected, rtol=1e-3, atol=1e-6)
    labels = np.array([0, 1, 2, 3, 0, 3])
    weights = [0.2, 1.0, 1.5, 3.0]
    loss = LDAMLoss(counts, class_weights=weights, reduction=None)
    np.testing.assert_allclose(_np(loss(labels, out["logits"])),
                               _official_ldam(labels, cosine, counts, weights=weights),
                               rtol=1e-3, atol=1e-4)


def test_cosine_head_round_trips_and_exports(tmp_path):
    from tests.test_case import run_saved_model_test

    model = build_classifier(3, head="cosine", weight_decay=1e-4)
    x = _images(5)
    path = str(tmp_path / "cosine.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    for key in ("logits", "probabilities"):
        np.testing.assert_allclose(_np(reloaded(x)[key]), _np(model(x)[key]), rtol=1e-6)
    run_saved_model_test(model, x, batch_sizes=[1, 5])
    jit = tf.function(lambda t: model(t)["logits"], jit_compile=True)
    np.testing.assert_allclose(_np(jit(tf.constant(x))), _np(model(x)["logits"]), atol=1e-5)


def test_every_ldam_config_uses_the_cosine_head():
    from keras_fgvc.training.experiments import get_config, list_configs

    ldam = [get_config(n) for n in list_configs() if get_config(n).loss == "ldam"]
    assert len(ldam) >= 5
    for config in ldam:
        assert config.model_kwargs.get("head") == "cosine", config.name
        scale = config.loss_kwargs.get("scale", 30.0)
        assert config.model_kwargs.get("head_kwargs", {}).get("scale", 30.0) == scale
