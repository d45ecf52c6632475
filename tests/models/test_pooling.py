"""Pooling choices in a classifier: output sizes, kernel pooling gamma initialisation."""

import keras
import numpy as np
import pytest

from keras_fgvc.models import build_classifier
from keras_fgvc.models.pooling import POOLINGS, apply_pooling, make_pooling


def _images(batch=4, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, 28, 28, 1)).astype("float32")


def _mean_inner_product(features):
    """Mean <x, y> over pairs of distinct spatial feature vectors (Sec. 3.3.2)."""
    x = np.asarray(features, np.float64).reshape(-1, features.shape[-1])
    gram = x @ x.T
    m = len(x)
    return (gram.sum() - np.trace(gram)) / (m * (m - 1))


@pytest.mark.parametrize(
    "pooling, pooling_kwargs, reduce_channels, dims",
    [
        ("gap", None, None, 128),
        ("kernel", {"order": 3, "dims": 256}, None, 1 + 128 + 2 * 256),
        ("compact_bilinear", {"dims": 512}, None, 512),
        ("bilinear", None, 16, 16 * 16),
    ],
)
def test_pooling_output_sizes(pooling, pooling_kwargs, reduce_channels, dims):
    model = build_classifier(
        3, pooling=pooling, pooling_kwargs=pooling_kwargs, reduce_channels=reduce_channels
    )
    assert model.get_layer("pooling").output.shape == (None, dims)
    out = model(_images(2))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out["probabilities"]).sum(-1), 1, 1e-5)


def test_kernel_pooling_gamma_default_is_one_over_channels():
    model = build_classifier(3, pooling="kernel", pooling_kwargs={"order": 2, "dims": 64})
    assert model.get_layer("pooling").gamma == pytest.approx(1.0 / 128)


def test_kernel_pooling_explicit_gamma_is_kept():
    kwargs = {"order": 2, "dims": 64, "gamma": 0.25}
    model = build_classifier(3, pooling="kernel", pooling_kwargs=kwargs, sample=_images(2))
    assert model.get_layer("pooling").gamma == 0.25


def test_kernel_pooling_adapts_to_a_sample():
    keras.utils.set_random_seed(0)
    sample = _images(3, seed=1)
    model = build_classifier(
        3, pooling="kernel", pooling_kwargs={"order": 3, "dims": 64}, sample=sample
    )
    layer = model.get_layer("pooling")
    features = keras.ops.convert_to_numpy(model.get_layer("backbone")(sample, training=False))
    gamma = 1.0 / _mean_inner_product(features)
    assert layer.gamma == pytest.approx(gamma, rel=1e-5)
    # RBF coefficients alpha_i = sqrt((2 gamma)^i / i!) (Eq. 3.11).
    expected = [np.sqrt((2 * gamma) ** i / np.prod(np.arange(1, i + 1))) for i in range(4)]
    np.testing.assert_allclose(layer.coefficients, expected, rtol=1e-5)


def test_adapt_with_reduced_channels_uses_the_reduced_features():
    sample = _images(2)
    model = build_classifier(
        3,
        pooling="kernel",
        pooling_kwargs={"order": 2, "dims": 32},
        reduce_channels=8,
        sample=sample,
    )
    assert model.get_layer("pooling").output.shape == (None, 1 + 8 + 32)
    trunk = model.get_layer("backbone")(sample, training=False)
    reduced = keras.ops.convert_to_numpy(model.get_layer("reduce")(trunk, training=False))
    assert reduced.shape[-1] == 8
    gamma = 1.0 / _mean_inner_product(reduced)  # of the 8 reduced channels, not the 128
    assert model.get_layer("pooling").gamma == pytest.approx(gamma, rel=1e-4)


def test_bad_pooling_arguments():
    with pytest.raises(ValueError, match="'avg'"):
        make_pooling("avg")
    with pytest.raises(ValueError, match="takes no arguments"):
        make_pooling("gap", dims=3)
    features = keras.Input((4, 4, 8))
    with pytest.raises(ValueError, match="feature_fn"):
        apply_pooling(features, "kernel", sample=np.zeros((1, 4, 4, 8)))
    assert set(POOLINGS) == {"gap", "kernel", "compact_bilinear", "bilinear"}
