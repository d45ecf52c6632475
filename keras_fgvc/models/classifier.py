"""Backbone + pooling + head, as plain functional models with named dict outputs.

`build_classifier` and `build_background_splitting` are the generic
builders behind the registered model names (see `keras_fgvc.models.builders`).
The models are plain `keras.Model`s built from registered layers, so a saved
``.keras`` file loads without ``custom_objects`` (after ``import
keras_fgvc.models``) and exports as a SavedModel.
"""

import keras

from keras_fgvc.models.backbones import build_backbone
from keras_fgvc.models.heads import _dropout, _regularizer, apply_head, check_num_classes
from keras_fgvc.models.pooling import apply_pooling


def _trunk(
    input_shape,
    backbone,
    weights,
    weight_decay,
    trainable_backbone,
    reduce_channels,
    pooling,
    pooling_kwargs,
    sample,
):
    """Images -> pooled features ``[B, D]``; returns (inputs, features)."""
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    trunk = build_backbone(
        backbone,
        input_shape,
        weights=weights,
        weight_decay=weight_decay,
        trainable=trainable_backbone,
    )
    features = trunk(inputs)
    if reduce_channels:
        # 1x1 conv to fewer channels before (kernel / bilinear) pooling.
        reducer = keras.Sequential(
            [
                keras.layers.Conv2D(
                    reduce_channels,
                    1,
                    use_bias=False,
                    kernel_regularizer=_regularizer(weight_decay),
                    name="reduce_conv",
                ),
                keras.layers.BatchNormalization(name="reduce_bn"),
                keras.layers.ReLU(name="reduce_relu"),
            ],
            name="reduce",
        )
        features = reducer(features)

    def feature_fn(images):
        out = trunk(images, training=False)
        return reducer(out, training=False) if reduce_channels else out

    pooled = apply_pooling(features, pooling, pooling_kwargs, feature_fn=feature_fn, sample=sample)
    return inputs, pooled


def build_classifier(
    num_classes,
    input_shape=(28, 28, 1),
    backbone="small_cnn",
    pooling="gap",
    head="softmax",
    weights=None,
    weight_decay=0.0,
    dropout=0.0,
    pooling_kwargs=None,
    head_kwargs=None,
    reduce_channels=None,
    trainable_backbone=True,
    sample=None,
    name="classifier",
):
    """A classifier: backbone -> pooling -> head.

    Args:
        num_classes: number of classes, background included where there is one.
        input_shape: ``(H, W, C)`` of float32 images in [0, 255].
        backbone: a name from `keras_fgvc.models.backbones.BACKBONES`.
        pooling: ``"gap"``, ``"kernel"``, ``"compact_bilinear"`` or ``"bilinear"``.
        head: ``"softmax"``, ``"sigmoid"``, ``"fixed_background"``, ``"cosine"`` or
            ``"anchors"``.
        weights: None or a local weights file for the backbone (never downloaded).
        weight_decay: L2 factor on every kernel (trunk and head); never on
            biases, BatchNorm or the sigmoid prior bias.
        dropout: dropout rate before the last Dense layer.
        pooling_kwargs: dict of pooling layer arguments (e.g.
            ``{"order": 4, "dims": 4096}`` for kernel pooling).
        head_kwargs: dict of head arguments (``prior_probability``,
            ``background_logit``, ``embedding_dim``, ``anchors_per_class``,
            ``gamma``).
        reduce_channels: if set, a 1x1 conv + BN + ReLU to this many channels
            before pooling (keeps bilinear / kernel pooling features small).
        trainable_backbone: False freezes the trunk.
        sample: optional NumPy batch of training images ([0, 255]); kernel
            pooling without an explicit gamma adapts to its features.
        name: the model name.

    Returns:
        A `keras.Model` with dict outputs ``"logits"``, ``"probabilities"``
        (and ``"embedding"`` for the anchor head).
    """
    num_classes = check_num_classes(num_classes)
    inputs, features = _trunk(
        input_shape,
        backbone,
        weights,
        weight_decay,
        trainable_backbone,
        reduce_channels,
        pooling,
        pooling_kwargs,
        sample,
    )
    outputs = apply_head(
        head,
        features,
        num_classes,
        weight_decay=weight_decay,
        dropout=dropout,
        **(head_kwargs or {}),
    )
    return keras.Model(inputs, outputs, name=name)


def build_background_splitting(
    num_classes,
    num_teacher_classes,
    input_shape=(28, 28, 1),
    backbone="small_cnn",
    pooling="gap",
    fixed_background=False,
    background_logit=0.0,
    weights=None,
    weight_decay=0.0,
    dropout=0.0,
    pooling_kwargs=None,
    reduce_channels=None,
    trainable_backbone=True,
    sample=None,
    name="bg_split",
):
    """Background splitting (Mullapudi et al., CVPR 2021, Sec. 3 and Fig. 2).

    A shared trunk feeds two heads: the main head over the N + 1 task classes
    (index 0 = background; optionally with the fixed background logit of
    appendix B) and an auxiliary head over the teacher's classes, trained to
    mimic a pretrained model's predictions (`BackgroundSplittingLoss` on
    ``"aux_logits"``), which splits the background into many visual classes.

    Args:
        num_classes: N + 1, the task's classes including background.
        num_teacher_classes: number of classes of the teacher (auxiliary head).
        fixed_background: use `FixedBackgroundLogit` for the main head's
            background logit (Dense(N) + constant ``background_logit``).
        Other arguments: as in `build_classifier`.

    Returns:
        A `keras.Model` with dict outputs ``"logits"`` and ``"probabilities"``
        (N + 1, main head) and ``"aux_logits"`` (teacher classes).
    """
    num_classes = check_num_classes(num_classes)
    num_teacher_classes = check_num_classes(num_teacher_classes, "num_teacher_classes")
    inputs, features = _trunk(
        input_shape,
        backbone,
        weights,
        weight_decay,
        trainable_backbone,
        reduce_channels,
        pooling,
        pooling_kwargs,
        sample,
    )
    head, head_kwargs = "softmax", {}
    if fixed_background:
        head, head_kwargs = "fixed_background", {"background_logit": background_logit}
    outputs = apply_head(
        head, features, num_classes, weight_decay=weight_decay, dropout=dropout, **head_kwargs
    )
    aux = _dropout(features, dropout, name="aux_dropout")
    aux = keras.layers.Dense(
        num_teacher_classes, kernel_regularizer=_regularizer(weight_decay), name="aux_classifier"
    )(aux)
    outputs["aux_logits"] = keras.layers.Activation("linear", dtype="float32", name="aux_logits")(
        aux
    )
    return keras.Model(inputs, outputs, name=name)
