"""Start a model's trunk from another model's: fine-tuning a pretrained network.

Background splitting (Mullapudi et al., CVPR 2021) and its baselines all
fine-tune the pretrained network whose predictions split the background: the
authors' code builds ``resnet50(pretrained=True)`` as the trunk of FT and of
BG-split alike, and takes the pseudo-labels from that same model. Only the
heads are new (the N + 1 main head, and the auxiliary head over the
pretrained model's classes). `copy_trunk` does that with keras_fgvc models:
every model built by `build_classifier` / `build_background_splitting` holds
its trunk in the nested model named ``"backbone"`` (and, with
``reduce_channels``, the 1x1 ``"reduce"`` block); their weights are copied,
the heads keep their fresh initialisation.
"""

import os

import keras
import numpy as np

TRUNK_LAYERS = ("backbone", "reduce")


def _find(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def copy_trunk(source, target):
    """Copies the trunk weights (``"backbone"``, ``"reduce"``) of `source` into `target`.

    Args:
        source: the pretrained `keras.Model` (e.g. the background-splitting teacher).
        target: the model to fine-tune, built with the same trunk architecture.

    Returns:
        The names of the copied layers.

    Raises:
        ValueError: either model has no ``"backbone"``, the trunks differ in
            architecture (a weight's shape, or the number of weights), or only one
            of them has a ``"reduce"`` block.
    """
    copied = []
    for name in TRUNK_LAYERS:
        src, dst = _find(source, name), _find(target, name)
        if src is None and dst is None and name != "backbone":
            continue
        if src is None or dst is None:
            which, model = ("source", source) if src is None else ("target", target)
            raise ValueError(f"copy_trunk: the {which} model {model.name!r} has no layer "
                             f"{name!r}; both models need the same trunk.")
        src_weights, dst_weights = src.weights, dst.weights
        if len(src_weights) != len(dst_weights):
            raise ValueError(f"copy_trunk: {name!r} has {len(src_weights)} weights in the source "
                             f"and {len(dst_weights)} in the target; the trunks differ.")
        for s, d in zip(src_weights, dst_weights):
            if tuple(s.shape) != tuple(d.shape):
                raise ValueError(f"copy_trunk: {name!r} weight {d.path} has shape "
                                 f"{tuple(d.shape)} in the target and {tuple(s.shape)} in the "
                                 "source; the trunks differ (another backbone or input size?).")
        for s, d in zip(src_weights, dst_weights):
            d.assign(np.asarray(keras.ops.convert_to_numpy(s), dtype=d.dtype))
        copied.append(name)
    return copied


def load_trunk_source(path):
    """The model at `path` (a ``.keras`` file) whose trunk `copy_trunk` copies; clear errors."""
    path = os.fspath(path)
    if not os.path.isfile(path) or not path.endswith(".keras"):
        raise ValueError(f"init_trunk: {path!r} is not a .keras model file.")
    import keras_fgvc.models  # noqa: F401  (registers the layers the file needs)

    return keras.saving.load_model(path, compile=False)
