"""Test-time flip averaging (Cui et al., CVPR 2017, Sec. 3.4).

"We also compute the classification score of the horizontally flipped image
... The average of their classification scores is our final classification
score." `flip_averaged(model)` wraps a trained model into one whose every
output is the mean of the model's output on the image and on its mirror
image (width axis of NHWC). The trainer (``Config.eval_flip``) evaluates with
the same average (`training.evaluation.predict_function`) and writes
``"flip_average": true`` to ``preprocessing.json``; the export then wraps the
saved (plain) model with this, so the detector serves the scores that were
evaluated.

Example:

>>> averaged = flip_averaged(model)
>>> averaged(images)["probabilities"]  # (model(x) + model(flip(x))) / 2
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_fgvc")
class HorizontalFlip(keras.layers.Layer):
    """Mirror NHWC images left to right (reverse the width axis); no weights."""

    def call(self, images):
        return ops.flip(images, axis=-2)

    def compute_output_shape(self, input_shape):
        return input_shape


def flip_averaged(model, name=None):
    """A model returning ``(model(x)[k] + model(flip(x))[k]) / 2`` for every output k.

    Args:
        model: a Keras model of one NHWC image input whose output is a dict
            (``logits``, ``probabilities``, ...).
        name: the wrapper's name (default: ``<model.name>_flip_averaged``).

    Returns:
        A functional model with the same input and output keys; it holds
        `model` (its weights are shared, not copied).
    """
    shape = model.input_shape
    if not isinstance(shape, tuple) or len(shape) != 4:
        raise ValueError(f"flip_averaged needs a model of one [B, H, W, C] image input, got "
                         f"input_shape {shape}")
    inputs = keras.Input(shape=shape[1:], name="images", dtype=model.input.dtype)
    plain, flipped = model(inputs), model(HorizontalFlip(name="horizontal_flip")(inputs))
    if not isinstance(plain, dict):
        raise ValueError("flip_averaged needs a model whose output is a dict, got "
                         f"{type(plain).__name__}")
    outputs = {key: keras.layers.Average(name=key, dtype=plain[key].dtype)(
        [plain[key], flipped[key]]) for key in plain}
    return keras.Model(inputs, outputs, name=name or f"{model.name}_flip_averaged")
