"""Sigmoid cross-entropy and focal loss from logits, in numerically stable form.

Focal loss (Lin et al., ICCV 2017), as written in Cui's dissertation, Ch. 5,
Eq. 5.9-5.12: with ``z_t = z`` for the true class and ``-z`` otherwise and
``p_t = sigmoid(z_t)``,

    FL(z, y) = -sum_i (1 - p_t,i)^gamma * log(p_t,i).

Both factors are computed from logits: ``log p_t = log_sigmoid(z_t)`` and the
modulator ``(1 - p_t)^gamma = exp(gamma * log_sigmoid(-z_t))``, which stays
finite (and has finite gradients) for gamma = 0, for 0 < gamma < 1 and for
logits of any size. Soft targets ``y`` in [0, 1] (label smoothing) mix the
two binary terms: ``y * (1 - p)^gamma * -log p + (1 - y) * p^gamma * -log(1 - p)``
with ``p = sigmoid(z)``, which is Eq. 5.12 for 0/1 targets.
"""

import keras
from keras import ops

from keras_fgvc.losses.utils import (
    dtype_config,
    one_hot_targets,
    smooth_labels,
    validate_probability_range,
)


def sigmoid_cross_entropy(targets, logits):
    """Element-wise sigmoid cross-entropy ``-log p_t`` (Eq. 5.10 before the sum).

    Args:
        targets: 0/1 (or soft) targets, same shape as `logits`.
        logits: logits z.

    Returns:
        ``-(y * log_sigmoid(z) + (1 - y) * log_sigmoid(-z))``, same shape.
    """
    logits = ops.convert_to_tensor(logits)
    targets = ops.cast(targets, logits.dtype)
    return -(targets * ops.log_sigmoid(logits) + (1.0 - targets) * ops.log_sigmoid(-logits))


def sigmoid_focal_crossentropy(targets, logits, gamma=2.0, alpha=None):
    """Element-wise focal loss ``(1 - p_t)^gamma * -log p_t`` (Eq. 5.12 before the sum).

    Args:
        targets: 0/1 (or soft) targets, same shape as `logits`.
        logits: logits z.
        gamma: focusing parameter (>= 0); 0 gives sigmoid cross-entropy.
        alpha: optional alpha-balancing (Lin et al.): positives are weighted by
            `alpha`, negatives by ``1 - alpha``. None = no balancing.

    Returns:
        The element-wise focal loss, same shape as `logits`.
    """
    logits = ops.convert_to_tensor(logits)
    targets = ops.cast(targets, logits.dtype)
    log_p = ops.log_sigmoid(logits)  # log p for the positive term
    log_not_p = ops.log_sigmoid(-logits)  # log(1 - p) for the negative term
    pos = -log_p
    neg = -log_not_p
    if gamma:
        pos = ops.exp(gamma * log_not_p) * pos  # (1 - p)^gamma
        neg = ops.exp(gamma * log_p) * neg  # p^gamma
    if alpha is not None:
        pos, neg = alpha * pos, (1.0 - alpha) * neg
    return targets * pos + (1.0 - targets) * neg


def validate_gamma(gamma):
    """`gamma` as a float; ValueError if it is negative or not finite."""
    try:
        value = float(gamma)
    except (TypeError, ValueError):
        value = float("nan")
    if not value >= 0.0 or value == float("inf"):
        raise ValueError(f"gamma must be a finite number >= 0; got {gamma!r}.")
    return value


@keras.saving.register_keras_serializable(package="keras_fgvc")
class SigmoidFocalLoss(keras.losses.Loss):
    """Sigmoid focal loss summed over classes (Lin et al. 2017; Cui, Eq. 5.12).

    Per-example loss ``sum_i alpha_t,i (1 - p_t,i)^gamma * -log p_t,i``. The
    per-example value is summed over the C classes (as Eq. 5.12); the default
    reduction then divides by the batch size.

    Args:
        gamma: focusing parameter, default 2.0. 0 gives sigmoid cross-entropy.
        alpha: optional alpha-balancing weight of positives (negatives get
            ``1 - alpha``); None (default) = no balancing.
        from_logits: must be True: `y_pred` are logits. Probabilities are not
            accepted because ``log(clip(p))`` is not stable.
        label_smoothing: smooths 0/1 targets towards 0.5 (keras convention).
        reduction, name, dtype: as `keras.losses.Loss`.

    Call arguments:
        y_true: integer labels ``[B]`` / ``[B, 1]`` or multi-hot targets ``[B, C]``.
        y_pred: logits ``[B, C]``.

    Returns:
        Per-example loss ``[B]`` from `call`; the reduced loss from `__call__`.

    Example:
        >>> loss = SigmoidFocalLoss(gamma=2.0)
        >>> value = loss([0, 2], [[3.0, -1.0, 0.0], [0.5, 0.2, 4.0]])
    """

    def __init__(
        self,
        gamma=2.0,
        alpha=None,
        from_logits=True,
        label_smoothing=0.0,
        reduction="sum_over_batch_size",
        name="sigmoid_focal_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not from_logits:
            raise ValueError("SigmoidFocalLoss works from logits only; got from_logits=False.")
        if alpha is not None:
            alpha = validate_probability_range(alpha, "alpha", high_inclusive=True)
        self.gamma = validate_gamma(gamma)
        self.alpha = alpha
        self.from_logits = True
        self.label_smoothing = validate_probability_range(label_smoothing, "label_smoothing")
        self._dtype_arg = dtype_config(dtype)

    def call(self, y_true, y_pred):
        targets = one_hot_targets(y_true, y_pred)
        if self.label_smoothing:
            targets = smooth_labels(targets, self.label_smoothing, 2)
        loss = sigmoid_focal_crossentropy(targets, y_pred, self.gamma, self.alpha)
        return ops.sum(loss, axis=-1)

    def get_config(self):
        return {
            "gamma": self.gamma,
            "alpha": self.alpha,
            "from_logits": self.from_logits,
            "label_smoothing": self.label_smoothing,
            "reduction": self.reduction,
            "name": self.name,
            "dtype": self._dtype_arg,
        }
