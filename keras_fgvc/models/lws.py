"""Learnable weight scaling (LWS): a frozen classifier with a learned per-class scale.

LWS (Kang et al., "Decoupling representation and classifier for long-tailed
recognition", ICLR 2020) is one of the long-tail baselines of the
background-splitting paper (Mullapudi et al. 2021, Sec. 5): after the usual
training, every weight of the network is frozen and only a scale f_c per
class is learned (with class-balanced sampling), ``w~_c = f_c * w_c``, i.e.
the class-c logit becomes ``f_c * z_c``.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_fgvc")
class LearnableWeightScaling(keras.layers.Layer):
    """Multiply each class logit by its own learned scale, ``z'_c = f_c * z_c``.

    Args:
        initial_scale: the scales' starting value (1.0 = the trained classifier).

    Call arguments:
        inputs: logits ``[B, C]``.

    Returns:
        Scaled logits ``[B, C]``.

    Example:
        >>> layer = LearnableWeightScaling()
        >>> layer(np.ones((2, 5), "float32")).shape  # (2, 5), equal to the input at init
    """

    def __init__(self, initial_scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_scale = float(initial_scale)

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError(f"LearnableWeightScaling needs a known class axis, got {input_shape}.")
        self.scale = self.add_weight(
            name="scale",
            shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.initial_scale),
            trainable=True,
        )

    def call(self, inputs):
        return inputs * ops.cast(self.scale, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"initial_scale": self.initial_scale})
        return config


def _probability_activation(model):
    """softmax, or sigmoid for a sigmoid head (read from its "probabilities" layer)."""
    try:
        activation = model.get_layer("probabilities").get_config()["activation"]
    except ValueError:
        return "softmax"
    return "sigmoid" if activation == "sigmoid" else "softmax"


def build_lws_model(trained_model, activation=None, name=None):
    """Freeze `trained_model` and learn one scale per class on its logits.

    Args:
        trained_model: a keras_fgvc model (dict outputs with ``"logits"``).
            It is frozen in place (``trainable = False``; BatchNorm and
            dropout run in inference mode).
        activation: ``"softmax"`` or ``"sigmoid"`` for ``"probabilities"``;
            default: sigmoid for a sigmoid head, softmax otherwise (anchor
            heads' log-probabilities are renormalised by the softmax).
        name: the new model's name (default ``"<name>_lws"``).

    Returns:
        A `keras.Model` with outputs ``"logits"`` (scaled), ``"probabilities"``
        and every other output of `trained_model` passed through; only the
        scales of the layer ``"lws"`` are trainable.
    """
    if activation is None:
        activation = _probability_activation(trained_model)
    if activation not in ("softmax", "sigmoid"):
        raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}.")
    trained_model.trainable = False
    inputs = keras.Input(shape=trained_model.input_shape[1:], name="images")
    outputs = trained_model(inputs, training=False)
    if not isinstance(outputs, dict) or "logits" not in outputs:
        raise ValueError("build_lws_model needs a model with dict outputs including 'logits'.")
    logits = LearnableWeightScaling(name="lws")(outputs["logits"])
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
    new_outputs = {
        "logits": logits,
        "probabilities": keras.layers.Activation(activation, dtype="float32", name="probabilities")(
            logits
        ),
    }
    for key, value in outputs.items():
        if key not in new_outputs:
            new_outputs[key] = keras.layers.Activation("linear", dtype="float32", name=key)(value)
    return keras.Model(inputs, new_outputs, name=name or f"{trained_model.name}_lws")
