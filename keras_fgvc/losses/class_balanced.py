"""Class-balanced losses based on the effective number of samples.

Cui, Jia, Lin, Song, Belongie, "Class-Balanced Loss Based on Effective Number
of Samples", CVPR 2019 (Cui's dissertation, Ch. 5, Eq. 5.1-5.13).

The effective number of ``n`` samples is ``E_n = (1 - beta^n) / (1 - beta)``
(Eq. 5.2). A sample of class ``y`` gets the weight ``1 / E_{n_y} =
(1 - beta) / (1 - beta^{n_y})`` (Eq. 5.6), normalised so the weights of the C
classes sum to C (Sec. 5.3, as the official code). The weighted losses are
softmax cross-entropy (Eq. 5.8), sigmoid cross-entropy (Eq. 5.11) and focal
loss (Eq. 5.13).

Reduction: each loss's `call` returns the per-example loss ``w_y * L(z, y)``
(sigmoid and focal: summed over the C classes); the default
``"sum_over_batch_size"`` reduction divides the sum by the batch size, as the
official TF code (``focal_loss /= tf.reduce_sum(labels)`` = batch size for
single-label data; its sigmoid branch likewise sums ``w * BCE`` over classes and
examples and divides by ``reduce_sum(one_hot_labels)``).
"""

import keras
import numpy as np
from keras import ops

from keras_fgvc.losses.focal import (
    sigmoid_cross_entropy,
    sigmoid_focal_crossentropy,
    validate_gamma,
)
from keras_fgvc.losses.utils import (
    check_num_classes,
    counts_to_list,
    dtype_config,
    one_hot_targets,
    smooth_labels,
    validate_counts,
    validate_probability_range,
)

# The effective-number beta of Cui et al. 2019 that is best on long-tailed CIFAR-10 and that
# LDAM-DRW uses: the default of every class-balanced weighting here and of DRW (losses.ldam,
# training.hooks). Table 5.3 (iNaturalist, ImageNet) uses 0.999 with gamma 0.5.
BETA = 0.9999


def _validate_beta(beta):
    return validate_probability_range(beta, "beta")


def effective_number(n, beta):
    """Effective number of samples ``E_n = (1 - beta^n) / (1 - beta)`` (Eq. 5.2).

    Args:
        n: number of samples (scalar or array, >= 0).
        beta: hyper-parameter in [0, 1); ``beta = (N - 1) / N``.

    Returns:
        ``E_n`` as a float (scalar input) or float64 array. ``E_0 = 0``,
        ``E_n = 1`` for n >= 1 when beta = 0, and ``E_n -> n`` as beta -> 1.

    Example:
        >>> round(effective_number(100, 0.99), 4)
        63.3968
    """
    beta = _validate_beta(beta)
    counts = np.asarray(n, dtype=np.float64)
    if np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise ValueError(f"n must be finite and >= 0; got {n!r}.")
    out = (1.0 - np.power(beta, counts)) / (1.0 - beta)
    return float(out) if out.ndim == 0 else out


def class_balanced_weights(class_counts, beta):
    """Class-balanced weights ``(1 - beta) / (1 - beta^{n_i})``, normalised to sum to C.

    Implements the weighting factor of Eq. 5.6, normalised as Sec. 5.3 and the
    official code (``weights / sum(weights) * C``).

    A class with zero samples is given the weight of a class with one sample
    (``n_i`` is clamped to 1), i.e. the largest raw weight ``1`` any class can
    get. Its raw weight ``1 / E_0`` is infinite; weight 0 would silently drop
    the class from the loss if its labels ever appear (counts taken on a
    subset, classes added by dataset bootstrapping) and would break
    "beta = 0 gives all ones". With the clamp the weights stay finite,
    beta = 0 still gives all ones, and an unseen class is treated as the
    rarest one.

    Args:
        class_counts: number of training samples per class (C values >= 0).
        beta: hyper-parameter in [0, 1). 0 = no re-weighting (all ones);
            beta -> 1 approaches inverse class frequency.

    Returns:
        float64 NumPy array of C weights that sum to C.

    Example:
        >>> class_balanced_weights([1000, 10], beta=0.999).round(4).tolist()
        [0.031, 1.969]
    """
    beta = _validate_beta(beta)
    counts = validate_counts(class_counts)
    raw = (1.0 - beta) / (1.0 - np.power(beta, np.maximum(counts, 1.0)))
    if np.all(raw == raw[0]):
        # beta = 0 or equal counts: exactly ones (``raw / sum * C`` can round to
        # 1 - 2^-53, e.g. for C = 49), so these give exactly the unweighted loss.
        return np.ones(counts.size)
    return raw * (counts.size / np.sum(raw))


def _example_weights(targets, class_weights):
    """Per-example ``w_y``: ``sum_i y_i w_i`` (= w_y for one-hot, 0 for an all-zero row)."""
    check_num_classes(targets, len(class_weights))
    weights = ops.convert_to_tensor(np.asarray(class_weights), dtype=targets.dtype)
    return ops.sum(targets * weights, axis=-1)


def class_balanced_softmax_cross_entropy(y_true, logits, class_weights, label_smoothing=0.0):
    """Per-example CB softmax cross-entropy ``-w_y log softmax(z)_y`` (Eq. 5.8).

    Args:
        y_true: integer labels ``[B]`` / ``[B, 1]`` or one-hot ``[B, C]``.
        logits: ``[B, C]`` logits.
        class_weights: C weights (e.g. from `class_balanced_weights`).
        label_smoothing: keras-style smoothing of the targets (the weight w_y
            is taken from the unsmoothed label).

    Returns:
        ``[B]`` per-example loss.
    """
    logits = ops.convert_to_tensor(logits)
    targets = one_hot_targets(y_true, logits)
    weight = _example_weights(targets, class_weights)
    targets = smooth_labels(targets, label_smoothing, logits.shape[-1])
    loss = -ops.sum(targets * ops.log_softmax(logits, axis=-1), axis=-1)
    return weight * loss


def class_balanced_sigmoid_cross_entropy(y_true, logits, class_weights, label_smoothing=0.0):
    """Per-example CB sigmoid cross-entropy ``-w_y sum_i log sigmoid(z_t,i)`` (Eq. 5.11)."""
    logits = ops.convert_to_tensor(logits)
    targets = one_hot_targets(y_true, logits)
    weight = _example_weights(targets, class_weights)
    targets = smooth_labels(targets, label_smoothing, 2)
    return weight * ops.sum(sigmoid_cross_entropy(targets, logits), axis=-1)


def class_balanced_focal_loss(y_true, logits, class_weights, gamma=0.5, label_smoothing=0.0):
    """Per-example CB focal loss ``-w_y sum_i (1 - p_t,i)^gamma log p_t,i`` (Eq. 5.13).

    The modulator is ``exp(gamma * log_sigmoid(-z_t))``: finite, with finite
    gradients, at gamma = 0, gamma < 1 and |z| = 100.
    """
    logits = ops.convert_to_tensor(logits)
    targets = one_hot_targets(y_true, logits)
    weight = _example_weights(targets, class_weights)
    targets = smooth_labels(targets, label_smoothing, 2)
    return weight * ops.sum(sigmoid_focal_crossentropy(targets, logits, gamma), axis=-1)


class _ClassBalancedLoss(keras.losses.Loss):
    """Shared constructor/config of the class-balanced losses (not registered)."""

    def __init__(self, class_counts, beta, from_logits, label_smoothing, reduction, name, dtype):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not from_logits:
            raise ValueError(
                f"{type(self).__name__} takes logits (from_logits=True); got from_logits=False."
            )
        self.class_weights = class_balanced_weights(class_counts, beta)
        if self.class_weights.size < 2:
            # With one class the per-example weight y * w_0 is 0 for every negative,
            # which would silently drop them from the loss.
            raise ValueError(
                f"{type(self).__name__} needs class_counts for C >= 2 classes; got "
                f"{class_counts!r}. For one binary detector use 2 logits "
                "(background, foreground) or SigmoidFocalLoss."
            )
        self.class_counts = counts_to_list(class_counts)
        self.beta = float(beta)
        self.from_logits = True
        self.label_smoothing = validate_probability_range(label_smoothing, "label_smoothing")
        self._dtype_arg = dtype_config(dtype)

    def get_config(self):
        return {
            "class_counts": self.class_counts,
            "beta": self.beta,
            "from_logits": self.from_logits,
            "label_smoothing": self.label_smoothing,
            "reduction": self.reduction,
            "name": self.name,
            "dtype": self._dtype_arg,
        }


@keras.saving.register_keras_serializable(package="keras_fgvc")
class ClassBalancedSoftmaxCrossEntropy(_ClassBalancedLoss):
    """Class-balanced softmax cross-entropy (Cui et al. 2019, Eq. 5.8).

    Per-example loss ``-(1 - beta) / (1 - beta^{n_y}) * log softmax(z)_y``, with
    the weights normalised to sum to C (`class_balanced_weights`).

    Args:
        class_counts: number of training samples of each of the C classes.
        beta: effective-number hyper-parameter in [0, 1), default 0.9999;
            0 gives the unweighted loss.
        from_logits: must be True (`y_pred` are logits).
        label_smoothing: keras-style target smoothing, default 0.
        reduction, name, dtype: as `keras.losses.Loss`; the default reduction
            divides the summed per-example losses by the batch size.

    Call arguments:
        y_true: integer labels ``[B]`` / ``[B, 1]`` or one-hot ``[B, C]``.
            Integer labels outside [0, C) (e.g. -1) contribute 0.
        y_pred: logits ``[B, C]``.

    Returns:
        Per-example loss ``[B]`` from `call`; the reduced loss from `__call__`.

    Example:
        >>> loss = ClassBalancedSoftmaxCrossEntropy([500, 50, 5], beta=0.999)
        >>> value = loss([0, 2], [[2.0, 0.1, -1.0], [0.3, 0.2, 1.5]])
    """

    def __init__(
        self,
        class_counts,
        beta=BETA,
        from_logits=True,
        label_smoothing=0.0,
        reduction="sum_over_batch_size",
        name="class_balanced_softmax_cross_entropy",
        dtype=None,
    ):
        super().__init__(class_counts, beta, from_logits, label_smoothing, reduction, name, dtype)

    def call(self, y_true, y_pred):
        return class_balanced_softmax_cross_entropy(
            y_true, y_pred, self.class_weights, self.label_smoothing
        )


@keras.saving.register_keras_serializable(package="keras_fgvc")
class ClassBalancedSigmoidCrossEntropy(_ClassBalancedLoss):
    """Class-balanced sigmoid cross-entropy (Cui et al. 2019, Eq. 5.11).

    Per-example loss ``-w_y * sum_i log sigmoid(z_t,i)``, summed over the C
    classes (``z_t = z`` for the true class, ``-z`` otherwise). Initialise the
    last bias with `keras_fgvc.models.PriorProbability` (Sec. 5.4.2).

    Args:
        class_counts, beta, from_logits, label_smoothing, reduction, name,
        dtype: as `ClassBalancedSoftmaxCrossEntropy` (smoothing goes towards
            0.5, as keras' binary losses).

    Call arguments:
        y_true: integer labels ``[B]`` / ``[B, 1]`` or one-hot ``[B, C]``.
        y_pred: logits ``[B, C]``.

    Returns:
        Per-example loss ``[B]`` from `call`; the reduced loss from `__call__`.

    Example:
        >>> loss = ClassBalancedSigmoidCrossEntropy([500, 50, 5], beta=0.999)
        >>> value = loss([0, 2], [[2.0, 0.1, -1.0], [0.3, 0.2, 1.5]])
    """

    def __init__(
        self,
        class_counts,
        beta=BETA,
        from_logits=True,
        label_smoothing=0.0,
        reduction="sum_over_batch_size",
        name="class_balanced_sigmoid_cross_entropy",
        dtype=None,
    ):
        super().__init__(class_counts, beta, from_logits, label_smoothing, reduction, name, dtype)

    def call(self, y_true, y_pred):
        return class_balanced_sigmoid_cross_entropy(
            y_true, y_pred, self.class_weights, self.label_smoothing
        )


@keras.saving.register_keras_serializable(package="keras_fgvc")
class ClassBalancedFocalLoss(_ClassBalancedLoss):
    """Class-balanced focal loss (Cui et al. 2019, Eq. 5.13).

    Per-example loss ``-w_y * sum_i (1 - p_t,i)^gamma log p_t,i``, summed over
    the C classes, with the modulator computed in log space
    (``exp(gamma * log_sigmoid(-z_t))``). The paper's large-scale setting is
    beta = 0.999, gamma = 0.5 (Table 5.3).

    Args:
        class_counts, beta, from_logits, label_smoothing, reduction, name,
        dtype: as `ClassBalancedSigmoidCrossEntropy`.
        gamma: focusing parameter >= 0, default 0.5; 0 gives CB sigmoid CE.

    Call arguments:
        y_true: integer labels ``[B]`` / ``[B, 1]`` or one-hot ``[B, C]``.
        y_pred: logits ``[B, C]``.

    Returns:
        Per-example loss ``[B]`` from `call`; the reduced loss from `__call__`.

    Example:
        >>> loss = ClassBalancedFocalLoss([500, 50, 5], beta=0.999, gamma=0.5)
        >>> value = loss([0, 2], [[2.0, 0.1, -1.0], [0.3, 0.2, 1.5]])
    """

    def __init__(
        self,
        class_counts,
        beta=BETA,
        gamma=0.5,
        from_logits=True,
        label_smoothing=0.0,
        reduction="sum_over_batch_size",
        name="class_balanced_focal_loss",
        dtype=None,
    ):
        super().__init__(class_counts, beta, from_logits, label_smoothing, reduction, name, dtype)
        self.gamma = validate_gamma(gamma)

    def call(self, y_true, y_pred):
        return class_balanced_focal_loss(
            y_true, y_pred, self.class_weights, self.gamma, self.label_smoothing
        )

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}

