"""Initializers the heads use.

`PriorProbability`: the bias of a sigmoid head starts at a prior probability
(class-balanced loss, Cui et al., CVPR 2019; dissertation Sec. 5.4.2; Lin et
al. 2017). It is registered as ``keras_fgvc>PriorProbability``, the name it
had in `keras_fgvc.losses` before it moved here, so older ``.keras`` files load.
"""

import math

import keras
from keras import ops

from keras_fgvc.losses.utils import validate_probability_range


@keras.saving.register_keras_serializable(package="keras_fgvc")
class PriorProbability(keras.initializers.Initializer):
    """Bias initializer ``b = -log((1 - pi) / pi)`` for sigmoid heads (Sec. 5.4.2).

    With this bias every sigmoid output starts at probability ``pi``, avoiding
    the huge initial loss of b = 0 (Lin et al. 2017; Cui, Sec. 5.4.2).

    Args:
        probability: the prior pi in (0, 1). None (default) = ``1 / C`` with C
            the last dimension of the initialised shape (C must be > 1).

    Returns:
        A tensor of the requested shape filled with ``-log((1 - pi) / pi)``.

    Example:
        >>> head = keras.layers.Dense(10, bias_initializer=PriorProbability())
    """

    def __init__(self, probability=None):
        if probability is not None:
            probability = validate_probability_range(
                probability, "probability", low_inclusive=False
            )
        self.probability = probability

    def __call__(self, shape, dtype=None):
        pi = self.probability
        if pi is None:
            num_classes = shape[-1] if len(shape) else 1
            if num_classes is None or num_classes < 2:
                raise ValueError(
                    "PriorProbability(probability=None) uses pi = 1/C and needs C >= 2 "
                    f"in the last dimension; got shape {tuple(shape)}."
                )
            pi = 1.0 / num_classes
        bias = -math.log((1.0 - pi) / pi)
        return ops.full(shape, bias, dtype=dtype or keras.backend.floatx())

    def get_config(self):
        return {"probability": self.probability}
