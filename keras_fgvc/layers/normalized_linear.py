"""A normalised linear layer: cosine similarities between features and class weights.

The head LDAM needs (Cao, Wei, Gaidon, Arechiga, Ma, NeurIPS 2019, Sec. 3 and
the official code's ``NormedLinear``): both the feature vector x and every
class's weight column w_j are L2-normalised, so the logit of class j is

    z_j = <x / ||x||, w_j / ||w_j||> = cos(x, w_j),   z_j in [-1, 1].

The LDAM loss then subtracts the margins and multiplies by its scale s = 30.
There is no bias (a bias would move logits outside [-1, 1]).
"""

import keras
from keras import ops

from keras_fgvc.layers.normalization import l2_normalize


@keras.saving.register_keras_serializable(package="keras_fgvc")
class NormalizedLinear(keras.layers.Layer):
    """Cosine logits ``z_j = cos(x, w_j)`` in [-1, 1] (LDAM's normalised linear head).

    Cao et al. 2019 (LDAM-DRW), the official ``NormedLinear``: inputs and each
    class's weight column are L2-normalised before the product. Computed and
    returned in float32 under every dtype policy: the loss multiplies the
    cosines by s = 30, and a float16 cosine near 1 would carry an error of
    ~1e-3 into that product. A zero input row gives zero logits (no NaN).

    Args:
        units: number of classes C.
        kernel_initializer: initializer of the ``[D, C]`` weights (the official
            code draws uniform(-1, 1); only the directions matter).
        kernel_regularizer: optional regularizer (weight decay) on the weights.
        epsilon: floor of the squared norms.

    Call arguments:
        inputs: features ``[B, D]``.

    Returns:
        ``[B, C]`` cosine similarities.

    Example:

    ```python
    logits = NormalizedLinear(10)(np.random.rand(4, 64))  # every entry in [-1, 1]
    ```
    """

    def __init__(self, units, kernel_initializer="random_uniform_unit", kernel_regularizer=None,
                 epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(f"units must be a positive integer, got {units!r}.")
        if not float(epsilon) > 0.0:
            raise ValueError(f"epsilon must be > 0, got {epsilon!r}.")
        self.units = units
        self.epsilon = float(epsilon)
        if kernel_initializer == "random_uniform_unit":
            kernel_initializer = keras.initializers.RandomUniform(-1.0, 1.0)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None:
            raise ValueError("NormalizedLinear needs a known feature dimension.")
        self.kernel = self.add_weight(
            name="kernel", shape=(int(dim), self.units), initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer)

    def call(self, inputs):
        x = l2_normalize(ops.cast(inputs, "float32"), axis=-1, epsilon=self.epsilon)
        w = l2_normalize(ops.cast(self.kernel, "float32"), axis=0, epsilon=self.epsilon)
        return ops.matmul(x, w)  # float32 logits (see the class docstring)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype="float32")

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "epsilon": self.epsilon,
        }
