"""Pooling choices between a convolutional trunk and a head, looked up by name.

- ``"gap"``: global average pooling, ``[B, H, W, C] -> [B, C]``.
- ``"kernel"``: `keras_fgvc.layers.KernelPooling` (Cui et al., CVPR 2017).
- ``"compact_bilinear"``: `keras_fgvc.layers.CompactBilinearPooling` (p = 2).
- ``"bilinear"``: full `keras_fgvc.layers.BilinearPooling` (C^2 features).

Kernel pooling's RBF initialisation needs ``gamma``, the reciprocal of the
mean inner product of the feature vectors. `apply_pooling` sets it, in
this order: an explicit ``gamma`` in `pooling_kwargs`; else
``KernelPooling.adapt`` on the backbone features of `sample` (a batch of
training images, [0, 255]); else ``gamma = 1 / C`` for C feature channels
(the mean inner product of C roughly unit-scale non-negative activations is
of order C), a documented starting point that the trainer can refine by
calling ``model.get_layer("pooling").adapt(features)`` before training.
"""

import keras
import numpy as np

from keras_fgvc.layers import BilinearPooling, CompactBilinearPooling, KernelPooling

POOLINGS = ("gap", "kernel", "compact_bilinear", "bilinear")


_LAYERS = {
    "kernel": KernelPooling,
    "compact_bilinear": CompactBilinearPooling,
    "bilinear": BilinearPooling,
}


def make_pooling(pooling="gap", **pooling_kwargs):
    """A pooling layer named ``"pooling"``.

    Args:
        pooling: ``"gap"``, ``"kernel"``, ``"compact_bilinear"`` or ``"bilinear"``.
        **pooling_kwargs: arguments of the pooling layer (e.g. ``order``,
            ``dims``, ``gamma`` for ``"kernel"``; ``dims`` for
            ``"compact_bilinear"``).

    Returns:
        A `keras.layers.Layer`.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}; expected one of {POOLINGS}.")
    if pooling == "gap":
        if pooling_kwargs:
            raise ValueError(f"'gap' pooling takes no arguments, got {sorted(pooling_kwargs)}.")
        return keras.layers.GlobalAveragePooling2D(name="pooling")
    return _LAYERS[pooling](name="pooling", **pooling_kwargs)


def apply_pooling(features, pooling="gap", pooling_kwargs=None, feature_fn=None, sample=None):
    """Pool a symbolic feature map; initialise kernel pooling's gamma.

    Args:
        features: symbolic ``[B, H, W, C]`` feature map.
        pooling: a name from `POOLINGS`.
        pooling_kwargs: dict of pooling layer arguments.
        feature_fn: callable mapping images to the feature map that `features`
            stands for (the trunk; used with `sample`).
        sample: optional NumPy batch of images in [0, 255]; for ``"kernel"``
            without an explicit gamma, ``KernelPooling.adapt`` runs on
            ``feature_fn(sample)``.

    Returns:
        The pooled symbolic tensor ``[B, D]``.
    """
    pooling_kwargs = dict(pooling_kwargs or {})
    if pooling == "kernel" and pooling_kwargs.get("gamma") is None:
        if sample is not None:
            if feature_fn is None:
                raise ValueError("apply_pooling needs `feature_fn` to adapt to `sample`.")
            layer = make_pooling(pooling, **pooling_kwargs)
            sample_features = feature_fn(np.asarray(sample, dtype="float32"))
            layer.adapt(keras.ops.convert_to_numpy(sample_features))
            return layer(features)
        pooling_kwargs["gamma"] = 1.0 / float(features.shape[-1])
    return make_pooling(pooling, **pooling_kwargs)(features)


def adapt_kernel_pooling(model, sample):
    """Re-estimate gamma of `model`'s kernel pooling on the features it computes now.

    For each top-level `KernelPooling` layer with "rbf" coefficients, runs
    ``KernelPooling.adapt`` (gamma = 1 / mean inner product, Sec. 3.3.2, and
    the RBF coefficients reset to it) on the layer's input for `sample`
    (images in [0, 255]): what the model was built with no longer holds once
    its trunk's weights are replaced. Returns the new gammas.
    """
    gammas = []
    for layer in model.layers:
        if isinstance(layer, KernelPooling) and layer.coefficients_init == "rbf":
            features = keras.Model(model.input, layer.input)(np.asarray(sample, "float32"))
            layer.adapt(keras.ops.convert_to_numpy(features))
            gammas.append(layer.gamma)
    return gammas
