"""Convolutional trunks: keras.applications backbones and a small CNN for 28x28 inputs.

`build_backbone(name, input_shape, weights)` returns a `keras.Model` named
``"backbone"`` that maps float32 images in [0, 255] to the last convolutional
feature map ``[B, H', W', C]`` (no global pooling, so kernel / bilinear
pooling see spatial maps). The backbone-specific normalisation is the model's
first layer (`ImageNormalization`), so nothing outside the model normalises.

Pretrained weights are only ever read from a local file: ``weights=None``
(random initialisation) or a path to a Keras weights file of the
``include_top=False`` application (e.g. the ``*_notop.h5`` files Keras
distributes, or a ``.weights.h5`` saved from `keras_application(...)`).
Nothing is downloaded.
"""

import os

import keras

from keras_fgvc.models.preprocessing import ImageNormalization

_APPS = keras.applications

# name -> (constructor, normalisation mode, minimum input side, layer to cut at or None)
_APPLICATIONS = {
    "resnet50": (_APPS.ResNet50, "caffe", 32, None),
    "resnet101": (_APPS.ResNet101, "caffe", 32, None),
    "resnet152": (_APPS.ResNet152, "caffe", 32, None),
    "resnet50_v2": (_APPS.ResNet50V2, "tf", 32, None),
    "resnet101_v2": (_APPS.ResNet101V2, "tf", 32, None),
    "resnet152_v2": (_APPS.ResNet152V2, "tf", 32, None),
    "inception_v3": (_APPS.InceptionV3, "tf", 75, None),
    # Bilinear / kernel pooling on VGG16 use the conv5_3 map, before the last max pool.
    "vgg16": (_APPS.VGG16, "caffe", 32, "block5_conv3"),
    # EfficientNetV2 normalises inside its own graph (include_preprocessing=True).
    "efficientnetv2_b0": (_APPS.EfficientNetV2B0, "none", 32, None),
    "efficientnetv2_b1": (_APPS.EfficientNetV2B1, "none", 32, None),
    "efficientnetv2_b2": (_APPS.EfficientNetV2B2, "none", 32, None),
    "efficientnetv2_b3": (_APPS.EfficientNetV2B3, "none", 32, None),
    "efficientnetv2_s": (_APPS.EfficientNetV2S, "none", 32, None),
    "efficientnetv2_m": (_APPS.EfficientNetV2M, "none", 32, None),
    "efficientnetv2_l": (_APPS.EfficientNetV2L, "none", 32, None),
}

BACKBONES = ("small_cnn", *_APPLICATIONS)


def list_backbones():
    """Names accepted by `build_backbone`."""
    return list(BACKBONES)


def check_weights(weights):
    """Validate a `weights` argument: None or an existing local file path.

    Raises:
        ValueError: for ``"imagenet"`` (no downloads) or a path that does not exist.
    """
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be None or a local file path, got {weights!r}.")
    weights = os.fspath(weights)
    if weights == "imagenet":
        raise ValueError(
            "weights='imagenet' would download pretrained weights; keras_fgvc never downloads. "
            "Download the include_top=False weights file yourself and pass its local path "
            "(weights='/path/to/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5'), "
            "or weights=None for random initialisation."
        )
    if not os.path.isfile(weights):
        raise ValueError(f"Backbone weights file {weights!r} does not exist.")
    return weights


def _check_input_shape(name, input_shape, min_size):
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}.")
    height, width, channels = input_shape
    if channels not in (1, 3):
        raise ValueError(f"Backbone {name!r} takes 1 or 3 channels, got input_shape={input_shape}.")
    if height is not None and height < min_size or width is not None and width < min_size:
        raise ValueError(
            f"Backbone {name!r} needs inputs of at least {min_size}x{min_size}, "
            f"got input_shape={input_shape}."
        )


def keras_application(name, input_shape, weights=None):
    """The bare ``include_top=False`` keras.applications model (3-channel input).

    Args:
        name: a backbone name other than ``"small_cnn"``.
        input_shape: ``(H, W, C)``; C may be 1 (the trunk still takes 3 channels).
        weights: None or a local weights file for the application.

    Returns:
        The application model, cut at its last convolutional feature map.
    """
    if name not in _APPLICATIONS:
        raise ValueError(f"Unknown backbone {name!r}. Known backbones: {', '.join(BACKBONES)}.")
    constructor, _, min_size, cut_at = _APPLICATIONS[name]
    input_shape = tuple(input_shape)
    _check_input_shape(name, input_shape, min_size)
    weights = check_weights(weights)
    app = constructor(
        include_top=False, weights=weights, input_shape=(*input_shape[:2], 3), pooling=None
    )
    if cut_at is not None:
        app = keras.Model(app.input, app.get_layer(cut_at).output, name=app.name)
    return app


def _conv_bn_relu(x, filters, name, regularizer):
    x = keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        use_bias=False,
        kernel_regularizer=regularizer,
        name=f"{name}_conv",
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def small_cnn_trunk(input_shape=(28, 28, 1), filters=(32, 64, 128), weight_decay=0.0):
    """A small CNN for 28x28 inputs: conv-BN-ReLU blocks, ~140k parameters.

    Two conv layers per stage and a 2x2 max pool between stages; 28x28 inputs
    give a 7x7x128 feature map. Normalises [0, 255] inputs to [0, 1].

    Args:
        input_shape: ``(H, W, C)``.
        filters: channels of each stage.
        weight_decay: L2 factor on the conv kernels (0 = none).

    Returns:
        A `keras.Model` named ``"backbone"``.
    """
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = ImageNormalization("unit", name="normalization")(inputs)
    for stage, width in enumerate(filters):
        if stage:
            x = keras.layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
        x = _conv_bn_relu(x, width, f"stage{stage}_a", regularizer)
        if stage < len(filters) - 1:
            x = _conv_bn_relu(x, width, f"stage{stage}_b", regularizer)
    return keras.Model(inputs, x, name="backbone")


def add_kernel_weight_decay(model, weight_decay):
    """Put an L2 regularizer on every conv / dense kernel of `model` (biases untouched).

    Sets both the layer's ``kernel_regularizer`` (so the config, and hence a
    reloaded ``.keras`` model, keeps it) and the kernel variable's regularizer
    (so it counts now).
    """
    if not weight_decay:
        return model
    for layer in model._flatten_layers(include_self=False, recursive=True):
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        # Depthwise convolutions (EfficientNetV2) call theirs depthwise_regularizer.
        for attribute in ("kernel_regularizer", "depthwise_regularizer"):
            if hasattr(layer, attribute):
                regularizer = keras.regularizers.L2(weight_decay)
                setattr(layer, attribute, regularizer)
                kernel.regularizer = regularizer
                break
    return model


def build_backbone(name, input_shape, weights=None, weight_decay=0.0, trainable=True):
    """Normalisation + convolutional trunk, as one `keras.Model` named ``"backbone"``.

    Args:
        name: ``"small_cnn"``, ``"resnet50"``, ``"resnet101"``, ``"resnet152"``,
            ``"resnet50_v2"``, ``"resnet101_v2"``, ``"resnet152_v2"``,
            ``"inception_v3"``, ``"vgg16"``, ``"efficientnetv2_b0"`` ..
            ``"efficientnetv2_b3"``, ``"efficientnetv2_s"`` / ``_m`` / ``_l``.
        input_shape: ``(H, W, C)`` with C = 1 or 3; grayscale is repeated to
            3 channels for the keras.applications trunks.
        weights: None (random) or a local weights file: for keras.applications
            trunks the ``include_top=False`` application's weights, for
            ``"small_cnn"`` the backbone model's own weights.
        weight_decay: L2 factor on the trunk's kernels (biases and BN untouched).
        trainable: False freezes the trunk (BatchNorm then runs in inference mode).

    Returns:
        A `keras.Model` mapping ``[B, H, W, C]`` images in [0, 255] to the last
        convolutional feature map ``[B, H', W', C']``.
    """
    input_shape = tuple(input_shape)
    if name == "small_cnn":
        weights = check_weights(weights)
        backbone = small_cnn_trunk(input_shape, weight_decay=weight_decay)
        if weights is not None:
            backbone.load_weights(weights)
    elif name in _APPLICATIONS:
        app = keras_application(name, input_shape, weights)
        add_kernel_weight_decay(app, weight_decay)
        mode = _APPLICATIONS[name][1]
        inputs = keras.Input(shape=input_shape, name="images")
        x = ImageNormalization(mode, grayscale_to_rgb=True, name="normalization")(inputs)
        backbone = keras.Model(inputs, app(x), name="backbone")
    else:
        raise ValueError(f"Unknown backbone {name!r}. Known backbones: {', '.join(BACKBONES)}.")
    backbone.trainable = bool(trainable)
    return backbone
