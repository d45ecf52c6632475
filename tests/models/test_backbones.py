"""Backbones: in-model normalisation, feature maps, local weights files, weight decay."""

import os

import keras
import numpy as np
import pytest

from keras_fgvc.models import ImageNormalization, build_backbone, list_backbones
from keras_fgvc.models.backbones import _APPLICATIONS
from keras_fgvc.models.preprocessing import MODES
from tests.test_case import run_layer_test, run_serialization_test

IMAGENET_BGR_MEAN = np.array([103.939, 116.779, 123.68])


def _images(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=shape).astype("float32")


def _reference(x, mode):
    """The keras.applications preprocess_input modes, written out in NumPy."""
    x = x.astype(np.float64)
    if mode == "caffe":
        return x[..., ::-1] - IMAGENET_BGR_MEAN
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "torch":
        return (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    if mode == "unit":
        return x / 255.0
    return x


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch", "unit", "none"])
def test_normalization_matches_numpy_reference(mode):
    x = _images((2, 5, 4, 3))
    got = keras.ops.convert_to_numpy(ImageNormalization(mode)(x))
    np.testing.assert_allclose(got, _reference(x, mode), rtol=1e-5, atol=1e-4)
    if mode in ("caffe", "tf", "torch"):
        # Same as keras.applications' own preprocessing.
        expected = keras.applications.imagenet_utils.preprocess_input(x.copy(), mode=mode)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_normalization_endpoints_and_grayscale():
    layer = ImageNormalization("tf", grayscale_to_rgb=True)
    x = np.array([0.0, 127.5, 255.0], "float32").reshape(1, 1, 3, 1)
    got = keras.ops.convert_to_numpy(layer(x))
    assert got.shape == (1, 1, 3, 3)
    np.testing.assert_allclose(got[0, 0], [[-1, -1, -1], [0, 0, 0], [1, 1, 1]], atol=1e-6)
    with pytest.raises(ValueError, match="needs 3-channel"):
        ImageNormalization("caffe")(np.zeros((1, 2, 2, 1), "float32"))
    with pytest.raises(ValueError, match="'bogus'"):
        ImageNormalization("bogus")


def test_normalization_layer_contract():
    run_serialization_test(ImageNormalization("caffe", grayscale_to_rgb=True))
    run_layer_test(
        ImageNormalization,
        {"mode": "caffe", "grayscale_to_rgb": True},
        input_shape=(2, 4, 4, 1),
        input_data=_images((2, 4, 4, 1)),
        expected_output_shape=(2, 4, 4, 3),
    )


def test_small_cnn_trunk_feature_map():
    backbone = build_backbone("small_cnn", (28, 28, 1))
    assert backbone.output_shape == (None, 7, 7, 128)
    assert 100_000 <= backbone.count_params() <= 300_000
    assert backbone.get_layer("normalization").mode == "unit"


_PREPROCESS = {
    "resnet50": keras.applications.resnet.preprocess_input,
    "resnet50_v2": keras.applications.resnet_v2.preprocess_input,
    "inception_v3": keras.applications.inception_v3.preprocess_input,
    "vgg16": keras.applications.vgg16.preprocess_input,
    "efficientnetv2_b0": keras.applications.efficientnet_v2.preprocess_input,
    "resnet101": keras.applications.resnet.preprocess_input,
    "resnet152_v2": keras.applications.resnet_v2.preprocess_input,
    "efficientnetv2_s": keras.applications.efficientnet_v2.preprocess_input,
}


@pytest.mark.parametrize(
    "name, input_shape, mode, channels",
    [
        ("resnet50", (32, 32, 3), "caffe", 2048),
        ("resnet50_v2", (32, 32, 1), "tf", 2048),
        ("inception_v3", (75, 75, 3), "tf", 2048),
        ("vgg16", (32, 32, 3), "caffe", 512),
        ("efficientnetv2_b0", (32, 32, 3), "none", 1280),
    ],
)
def test_application_backbones_return_the_last_conv_map(name, input_shape, mode, channels):
    backbone = build_backbone(name, input_shape)
    assert backbone.get_layer("normalization").mode == mode
    x = _images((1, *input_shape))
    features = keras.ops.convert_to_numpy(backbone(x))
    assert features.ndim == 4 and features.shape[-1] == channels
    assert np.all(np.isfinite(features))
    if name == "vgg16":  # conv5_3 (before the last max pool): 32 / 16 = 2
        assert features.shape[1:3] == (2, 2)
    # The backbone equals the bare application fed that application's own
    # keras.applications preprocess_input: the normalisation is the one its
    # weights expect, applied exactly once (EfficientNetV2 rescales inside).
    (app,) = [layer for layer in backbone.layers if isinstance(layer, keras.Model)]
    rgb = np.repeat(x, 3, axis=-1) if input_shape[-1] == 1 else x
    expected = app(_PREPROCESS[name](rgb.copy()))
    np.testing.assert_allclose(features, keras.ops.convert_to_numpy(expected),
                               rtol=1e-4, atol=1e-4)
    if name.startswith("efficientnetv2"):
        assert any(isinstance(layer, keras.layers.Rescaling) for layer in app.layers)


def test_every_backbone_name_maps_to_an_application():
    for name, (constructor, mode, min_size, _) in _APPLICATIONS.items():
        assert constructor.__module__.startswith("keras"), name
        assert mode in MODES and min_size >= 32
    assert set(list_backbones()) == {"small_cnn", *_APPLICATIONS}
    assert {"resnet101", "resnet152", "resnet101_v2", "resnet152_v2", "efficientnetv2_l"} <= set(
        _APPLICATIONS
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet101", "resnet152_v2", "efficientnetv2_s"])
def test_more_application_backbones_build(name):
    backbone = build_backbone(name, (32, 32, 3))
    assert len(backbone.output_shape) == 4 and backbone.output_shape[1:3] == (1, 1)
    # Normalised as the application's own preprocess_input, exactly once.
    (app,) = [layer for layer in backbone.layers if isinstance(layer, keras.Model)]
    x = _images((1, 32, 32, 3))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(backbone(x)),
                               keras.ops.convert_to_numpy(app(_PREPROCESS[name](x.copy()))),
                               rtol=1e-4, atol=1e-4)


def test_bad_backbone_arguments():
    with pytest.raises(ValueError, match="'resnet9'"):
        build_backbone("resnet9", (32, 32, 3))
    with pytest.raises(ValueError, match="at least 75x75"):
        build_backbone("inception_v3", (32, 32, 3))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        build_backbone("resnet50", (32, 32, 4))


def test_imagenet_string_is_refused_without_download():
    with pytest.raises(ValueError, match="never downloads.*local path"):
        build_backbone("resnet50", (32, 32, 3), weights="imagenet")


def test_missing_weights_path_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "nope.weights.h5")
    with pytest.raises(ValueError, match="nope.weights.h5.*does not exist"):
        build_backbone("efficientnetv2_b0", (32, 32, 3), weights=missing)
    with pytest.raises(ValueError, match="does not exist"):
        build_backbone("small_cnn", (28, 28, 1), weights=missing)


@pytest.mark.parametrize("name, input_shape", [("vgg16", (32, 32, 3)), ("small_cnn", (28, 28, 1))])
def test_local_weights_file_loads_identically(tmp_path, name, input_shape):
    keras.utils.set_random_seed(1)
    first = build_backbone(name, input_shape)
    path = os.fspath(tmp_path / f"{name}.weights.h5")
    if name == "small_cnn":
        first.save_weights(path)
    else:
        # The include_top=False application nested in the backbone, as Keras ships it.
        (app,) = [layer for layer in first.layers if isinstance(layer, keras.Model)]
        app.save_weights(path)
    keras.utils.set_random_seed(2)
    fresh = build_backbone(name, input_shape)
    second = build_backbone(name, input_shape, weights=path)
    x = _images((2, *input_shape))
    expected = keras.ops.convert_to_numpy(first(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(second(x)), expected, rtol=1e-6)
    assert not np.allclose(keras.ops.convert_to_numpy(fresh(x)), expected)


def test_weight_decay_goes_on_kernels_only(tmp_path):
    plain = build_backbone("vgg16", (32, 32, 3))
    assert not plain.losses
    decayed = build_backbone("vgg16", (32, 32, 3), weight_decay=1e-4)
    kernels = [w for w in decayed.trainable_weights if w.name == "kernel"]
    assert len(decayed.losses) == len(kernels) == 13
    expected = sum(1e-4 * np.sum(np.square(keras.ops.convert_to_numpy(k))) for k in kernels)
    np.testing.assert_allclose(
        float(sum(keras.ops.convert_to_numpy(loss) for loss in decayed.losses)), expected, rtol=1e-4
    )
    # The regularizers are in the layer configs, so a reloaded model keeps them.
    path = os.fspath(tmp_path / "vgg16.keras")
    decayed.save(path)
    assert len(keras.saving.load_model(path).losses) == 13
    small = build_backbone("small_cnn", (28, 28, 1), weight_decay=1e-4)
    assert len(small.losses) == 5  # five conv kernels, no BN / bias terms


def test_frozen_backbone_has_no_trainable_weights():
    backbone = build_backbone("small_cnn", (28, 28, 1), trainable=False)
    assert not backbone.trainable_weights
