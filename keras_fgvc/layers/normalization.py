"""Signed square root and L2 normalisation of pooled features.

The post-processing of bilinear / kernel pooled features (Lin et al. 2015;
Gao et al. 2016; Cui et al. 2017, Sec. 3.3.1 of Cui's dissertation):
y <- sign(y) sqrt(|y|), then y <- y / ||y||_2.
"""

import keras
from keras import ops

# |y| is clamped to this before the square root, so the gradient is finite: 0 at y = 0
# (sign(0) = 0) instead of 0 * inf = NaN, and 0 for 0 < |y| < 1e-12 too (the clamp's
# gradient); just above the floor it is 1 / (2 sqrt(|y|)), at most 5e5. Outputs differ
# from sign(y) sqrt(|y|) only for |y| < 1e-12.
_SQRT_FLOOR = 1e-12


def signed_sqrt(x):
    """sign(x) * sqrt(|x|), elementwise, with a finite gradient at 0."""
    return ops.sign(x) * ops.sqrt(ops.maximum(ops.abs(x), _SQRT_FLOOR))


def l2_normalize(x, axis=-1, epsilon=1e-12):
    """x / sqrt(max(sum(x^2, axis), epsilon)); a zero vector maps to zero."""
    sq = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(sq, epsilon))


@keras.saving.register_keras_serializable(package="keras_fgvc")
class SignedSqrt(keras.layers.Layer):
    """Elementwise signed square root, y = sign(x) sqrt(|x|) (Cui et al. 2017, Sec. 3.3.1).

    Computed in float32 and cast back to the compute dtype. |x| is clamped to
    1e-12 inside the square root so the gradient is finite everywhere (0 for
    |x| < 1e-12, at most 5e5 just above).

    Call arguments:
        inputs: a tensor of any shape.

    Returns:
        A tensor of the same shape.

    Example:

    ```python
    y = SignedSqrt()(np.array([[4.0, -9.0, 0.0]]))  # [[2., -3., 0.]]
    ```
    """

    def call(self, inputs):
        y = signed_sqrt(ops.cast(inputs, "float32"))
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keras_fgvc")
class L2Normalize(keras.layers.Layer):
    """L2 normalisation along an axis, y = x / ||x||_2 (Cui et al. 2017, Sec. 3.3.1).

    Args:
        axis: the axis (int) or axes (list of ints) to normalise over.
        epsilon: floor on the squared norm; a zero vector maps to zero with a
            finite gradient.

    Call arguments:
        inputs: a tensor.

    Returns:
        A tensor of the same shape whose slices along `axis` have unit norm.

    Example:

    ```python
    y = L2Normalize()(np.array([[3.0, 4.0]]))  # [[0.6, 0.8]]
    ```
    """

    def __init__(self, axis=-1, epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        is_int = lambda a: isinstance(a, int) and not isinstance(a, bool)
        if isinstance(axis, (list, tuple)) and axis and all(is_int(a) for a in axis):
            axis = [int(a) for a in axis]
        elif not is_int(axis):
            raise ValueError(f"L2Normalize: axis must be an int or a list of ints, got {axis!r}")
        if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or not epsilon > 0:
            raise ValueError(f"L2Normalize: epsilon must be a positive float, got {epsilon!r}")
        self.axis = axis
        self.epsilon = float(epsilon)

    def call(self, inputs):
        axis = tuple(self.axis) if isinstance(self.axis, list) else self.axis
        y = l2_normalize(ops.cast(inputs, "float32"), axis=axis, epsilon=self.epsilon)
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis, epsilon=self.epsilon)
        return config
