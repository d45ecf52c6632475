"""Registered model builders: ``create_model(name, num_classes=..., input_shape=..., **kwargs)``.

Every builder takes ``(num_classes, input_shape=..., **kwargs)``; the
defaults build quickly (small inputs), configs pass their own resolution
(224 / 299 / 448 / 560). ``num_classes`` counts the background class for
background tasks. All models take float32 images in [0, 255].

| name | backbone | pooling | head / outputs |
| --- | --- | --- | --- |
| ``small_cnn`` | small CNN, 28x28x1 | GAP | softmax |
| ``small_cnn_sigmoid`` | small CNN | GAP | sigmoid, prior bias init |
| ``classifier`` | any (``backbone=``) | any (``pooling=``) | any (``head=``) |
| ``fixed_background`` | small CNN (any) | GAP (any) | Dense(N) + fixed background logit |
| ``anchor_metric`` | small CNN (any) | GAP (any) | 64-d embedding + anchor soft vote |
| ``bg_split`` | small CNN (any) | GAP (any) | N+1 head + ``aux_logits`` |
| ``bg_split_fixed_background`` | small CNN (any) | GAP (any) | as bg_split, fixed bg logit |
| ``lws`` | a frozen base model | | learned per-class logit scale |
| ``resnet50_gap`` | ResNet50 | GAP | softmax |
| ``resnet50_kernel_pooling`` | ResNet50 | kernel, p=4, d=4096 | softmax |
| ``vgg16_compact_bilinear`` | VGG16 conv5_3 | compact bilinear, d=12801 | softmax |
| ``vgg16_kernel_pooling`` | VGG16 conv5_3 | kernel, p=4, d=4096 | softmax |
| ``inception_v3`` | InceptionV3 | GAP | softmax |
"""

import os

import keras

from keras_fgvc.models.classifier import build_background_splitting, build_classifier
from keras_fgvc.models.lws import build_lws_model
from keras_fgvc.models.registry import create_model, register_model

_KERNEL_POOLING = {"order": 4, "dims": 4096}


def _merge(defaults, overrides):
    merged = dict(defaults)
    merged.update(overrides or {})
    return merged


@register_model("small_cnn")
def small_cnn(num_classes, input_shape=(28, 28, 1), **kwargs):
    """Softmax classifier on the small CNN trunk (Fashion-MNIST, 28x28x1)."""
    kwargs.setdefault("name", "small_cnn")
    return build_classifier(num_classes, input_shape, backbone="small_cnn", **kwargs)


@register_model("small_cnn_sigmoid")
def small_cnn_sigmoid(num_classes, input_shape=(28, 28, 1), **kwargs):
    """Sigmoid classifier (bias prior pi = 1 / C) on the small CNN trunk."""
    kwargs.setdefault("name", "small_cnn_sigmoid")
    return build_classifier(
        num_classes, input_shape, backbone="small_cnn", head="sigmoid", **kwargs
    )


@register_model("classifier")
def classifier(num_classes, input_shape=(28, 28, 1), **kwargs):
    """Generic ``backbone= / pooling= / head=`` classifier (see `build_classifier`)."""
    return build_classifier(num_classes, input_shape, **kwargs)


@register_model("fixed_background")
def fixed_background(num_classes, input_shape=(28, 28, 1), background_logit=0.0, **kwargs):
    """Softmax over N+1 logits with a constant background logit at index 0."""
    kwargs.setdefault("name", "fixed_background")
    head_kwargs = _merge({"background_logit": background_logit}, kwargs.pop("head_kwargs", None))
    return build_classifier(
        num_classes, input_shape, head="fixed_background", head_kwargs=head_kwargs, **kwargs
    )


@register_model("anchor_metric")
def anchor_metric(
    num_classes,
    input_shape=(28, 28, 1),
    embedding_dim=64,
    anchors_per_class=3,
    gamma=5.0,
    **kwargs,
):
    """Metric learning with anchors (Cui et al. CVPR 2016): embedding + soft vote.

    Outputs ``"embedding"`` (L2-normalised, for the triplet loss),
    ``"logits"`` (log-probabilities of the soft vote) and ``"probabilities"``.
    """
    kwargs.setdefault("name", "anchor_metric")
    head_kwargs = _merge(
        {"embedding_dim": embedding_dim, "anchors_per_class": anchors_per_class, "gamma": gamma},
        kwargs.pop("head_kwargs", None),
    )
    return build_classifier(
        num_classes, input_shape, head="anchors", head_kwargs=head_kwargs, **kwargs
    )


@register_model("bg_split")
def bg_split(num_classes, input_shape=(28, 28, 1), num_teacher_classes=10, **kwargs):
    """Background splitting: main N+1 head + auxiliary head over the teacher's classes."""
    kwargs.setdefault("name", "bg_split")
    return build_background_splitting(num_classes, num_teacher_classes, input_shape, **kwargs)


@register_model("bg_split_fixed_background")
def bg_split_fixed_background(
    num_classes, input_shape=(28, 28, 1), num_teacher_classes=10, **kwargs
):
    """Background splitting with the fixed background logit on the main head."""
    kwargs.setdefault("name", "bg_split_fixed_background")
    kwargs["fixed_background"] = True
    return build_background_splitting(num_classes, num_teacher_classes, input_shape, **kwargs)


@register_model("lws")
def lws(
    num_classes,
    input_shape=(28, 28, 1),
    base_model="small_cnn",
    base_kwargs=None,
    base_weights=None,
    activation=None,
    name=None,
    **kwargs,
):
    """LWS on a freshly built (or loaded) base model.

    Args:
        base_model: registered name of the classifier to rescale.
        base_kwargs: dict of that builder's keyword arguments.
        base_weights: optional local path: a ``.keras`` model file (loaded
            as is) or a weights file of the base model (``.weights.h5``).
        activation: see `build_lws_model`.
        **kwargs: more keyword arguments of the base builder (e.g.
            ``weight_decay``), merged under `base_kwargs`.
    """
    if base_model == "lws":
        raise ValueError("base_model='lws' would nest LWS in LWS; pick a classifier.")
    if base_weights is not None and str(base_weights).endswith(".keras"):
        if not os.path.isfile(base_weights):
            raise ValueError(f"Base model file {base_weights!r} does not exist.")
        base = keras.saving.load_model(base_weights)
        loaded = base.output["logits"].shape[-1] if isinstance(base.output, dict) else None
        if loaded is not None and loaded != num_classes:
            raise ValueError(
                f"Base model {base_weights!r} has {loaded} classes but num_classes={num_classes}."
            )
    else:
        base_kwargs = _merge(kwargs, base_kwargs)
        base = create_model(
            base_model, num_classes=num_classes, input_shape=input_shape, **base_kwargs
        )
        if base_weights is not None:
            if not os.path.isfile(base_weights):
                raise ValueError(f"Base weights file {base_weights!r} does not exist.")
            base.load_weights(base_weights)
    return build_lws_model(base, activation=activation, name=name or "lws")


@register_model("resnet50_gap")
def resnet50_gap(num_classes, input_shape=(32, 32, 3), **kwargs):
    """ResNet50 + global average pooling + softmax (background-splitting / CB-loss baseline)."""
    kwargs.setdefault("name", "resnet50_gap")
    return build_classifier(num_classes, input_shape, backbone="resnet50", **kwargs)


@register_model("resnet50_kernel_pooling")
def resnet50_kernel_pooling(num_classes, input_shape=(32, 32, 3), **kwargs):
    """ResNet50 + kernel pooling (p = 4, d = 4096; Cui et al. CVPR 2017) + softmax."""
    kwargs.setdefault("name", "resnet50_kernel_pooling")
    pooling_kwargs = _merge(_KERNEL_POOLING, kwargs.pop("pooling_kwargs", None))
    return build_classifier(
        num_classes,
        input_shape,
        backbone="resnet50",
        pooling="kernel",
        pooling_kwargs=pooling_kwargs,
        **kwargs,
    )


@register_model("vgg16_compact_bilinear")
def vgg16_compact_bilinear(num_classes, input_shape=(32, 32, 3), **kwargs):
    """VGG16 conv5_3 + compact bilinear pooling + softmax.

    d = 12801, kernel pooling's 1 + 512 + 3 x 4096 on the same map: the dissertation compares
    the two at the same feature dimension (Sec. 3.3.1, "for a fair comparison").
    """
    kwargs.setdefault("name", "vgg16_compact_bilinear")
    pooling_kwargs = _merge({"dims": 12801}, kwargs.pop("pooling_kwargs", None))
    return build_classifier(
        num_classes,
        input_shape,
        backbone="vgg16",
        pooling="compact_bilinear",
        pooling_kwargs=pooling_kwargs,
        **kwargs,
    )


@register_model("vgg16_kernel_pooling")
def vgg16_kernel_pooling(num_classes, input_shape=(32, 32, 3), **kwargs):
    """VGG16 conv5_3 + kernel pooling (p = 4, d = 4096) + softmax (CUB, Table 3.2)."""
    kwargs.setdefault("name", "vgg16_kernel_pooling")
    pooling_kwargs = _merge(_KERNEL_POOLING, kwargs.pop("pooling_kwargs", None))
    return build_classifier(
        num_classes,
        input_shape,
        backbone="vgg16",
        pooling="kernel",
        pooling_kwargs=pooling_kwargs,
        **kwargs,
    )


@register_model("inception_v3")
def inception_v3(num_classes, input_shape=(75, 75, 3), **kwargs):
    """InceptionV3 + GAP + softmax (large-scale iNat at 299 / 448 / 560, Ch. 4)."""
    kwargs.setdefault("name", "inception_v3")
    return build_classifier(num_classes, input_shape, backbone="inception_v3", **kwargs)
