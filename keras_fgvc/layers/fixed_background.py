"""Fixed background logit (background thresholding, Mullapudi et al. 2021, appendix B)."""

import math
import numbers

import keras
from keras import ops


def _check_background_logit(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"`background_logit` must be a real number. Received: {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`background_logit` must be finite. Received: {value!r}")
    return value


@keras.saving.register_keras_serializable(package="keras_fgvc")
class FixedBackgroundLogit(keras.layers.Layer):
    """Prepends a constant, untrained background logit to N foreground logits.

    Background thresholding (Background Splitting, Mullapudi et al., CVPR 2021,
    appendix B): the background class' weights are clamped, w_0 = 0 and
    b_0 = constant (Eq. 2), and never updated, which is the same as fixing
    the background logit. The (N+1)-way softmax over the output is Eq. 3:

        p(y = n | x) = exp(z_n) / (exp(b_0) + sum_{i=1..N} exp(z_i)),  n = 1..N,

    so the foreground probabilities sum to less than 1 and an example is
    background only when all its foreground logits fall below b_0.

    The layer has no weights; the background column is a constant behind
    `stop_gradient`, so it receives no gradient. Unlike the authors' code,
    `background_logit=0.0` is a valid value and does turn the layer on.

    Args:
        background_logit: float, the constant b_0 (default 0.0). Finite.
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: foreground logits, shape [..., N] (usually [B, N]), N >= 1.

    Returns:
        Logits of shape [..., N + 1], index 0 = b_0, indices 1..N = `inputs`,
        in the layer's compute dtype. Use `foreground_probabilities` for the
        probabilities of Eq. 3.

    Example:
    >>> layer = FixedBackgroundLogit(background_logit=0.0)
    >>> logits = layer(np.array([[1.0, -2.0]], "float32"))
    >>> keras.ops.convert_to_numpy(logits).tolist()
    [[0.0, 1.0, -2.0]]
    """

    def __init__(self, background_logit=0.0, **kwargs):
        super().__init__(**kwargs)
        self.background_logit = _check_background_logit(background_logit)

    def build(self, input_shape):
        if len(input_shape) < 1 or input_shape[-1] is None:
            raise ValueError(
                "FixedBackgroundLogit needs a known last (class) axis. "
                f"Received input_shape={input_shape}"
            )
        if input_shape[-1] < 1:
            raise ValueError(
                f"FixedBackgroundLogit needs at least 1 foreground logit. "
                f"Received input_shape={input_shape}"
            )
        self.built = True

    def call(self, inputs):
        logits = ops.cast(inputs, self.compute_dtype)
        background = ops.full_like(logits[..., :1], self.background_logit)
        background = ops.stop_gradient(background)
        return ops.concatenate([background, logits], axis=-1)

    def compute_output_shape(self, input_shape):
        last = None if input_shape[-1] is None else input_shape[-1] + 1
        return (*input_shape[:-1], last)

    def get_config(self):
        config = super().get_config()
        config.update({"background_logit": self.background_logit})
        return config


def foreground_probabilities(logits_with_background, axis=-1):
    """Foreground probabilities p(y = n | x), n = 1..N, of Eq. 3 (appendix B).

    Takes the (N+1)-way logits with the background at index 0 (the output of
    `FixedBackgroundLogit`, or any head with background at index 0), computes
    the softmax in float32 (stable: shifted by the max logit) and drops the
    background column. The result sums to less than 1; the rest is the
    background probability.

    Args:
        logits_with_background: tensor or array [..., N + 1], N >= 1.
        axis: the class axis (default -1).

    Returns:
        float32 tensor [..., N].

    Example:
    >>> probs = foreground_probabilities(np.array([[0.0, 1.0, -2.0]], "float32"))
    """
    logits = ops.cast(ops.convert_to_tensor(logits_with_background), "float32")
    if len(logits.shape) < 1:
        raise ValueError(
            f"foreground_probabilities needs a class axis. Received shape={logits.shape}"
        )
    size = logits.shape[axis]
    if size is not None and size < 2:
        raise ValueError(
            "foreground_probabilities needs background + at least 1 foreground logit "
            f"(class axis >= 2). Received shape={logits.shape}"
        )
    probabilities = ops.softmax(logits, axis=axis)
    axis = axis % len(logits.shape)
    return probabilities[(slice(None),) * axis + (slice(1, None),)]
