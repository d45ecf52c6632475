"""LDAM loss with deferred re-weighting (LDAM-DRW), a long-tail baseline.

Cao, Wei, Gaidon, Arechiga, Ma, "Learning Imbalanced Datasets with
Label-Distribution-Aware Margin Loss", NeurIPS 2019 (the background-splitting
paper's LDAM-DRW baseline). The true-class logit is lowered by a per-class
margin ``Delta_j = C / n_j^(1/4)``, with C chosen so the largest margin is
`max_margin`, and the logits are multiplied by `scale` s:

    L(z, y) = -w_y * log softmax(s * (z - Delta_y e_y))_y.

As the official code (kaidic/LDAM-DRW), the logits are expected to be cosine
similarities (a normalised linear head) so that s = 30 makes sense, the margin
is subtracted before the scale, and DRW switches the class weights ``w`` from
ones to class-balanced weights (beta = 0.9999) at a given epoch. The official
PyTorch code divides by ``sum(w_y)``; this Keras loss keeps Keras' reduction
(divides by the batch size, like the other losses of this package), while the
trainer's ``ldam`` recipe (`keras_fgvc.training.loss_recipes`, where DRW runs)
divides by ``sum(w_y)`` over the global batch, as the official code.
"""

import keras
import numpy as np
from keras import ops

from keras_fgvc.losses.class_balanced import BETA, class_balanced_weights
from keras_fgvc.losses.utils import (
    check_num_classes,
    counts_to_list,
    dtype_config,
    one_hot_targets,
    validate_counts,
    validate_probability_range,
)


def ldam_margins(class_counts, max_margin=0.5):
    """Per-class margins ``Delta_j`` proportional to ``n_j^(-1/4)``, the largest = `max_margin`.

    A zero-count class is treated as having one sample (it gets the largest
    margin), as `class_balanced_weights` does.

    Returns:
        float64 NumPy array of C margins.
    """
    counts = validate_counts(class_counts)
    margins = 1.0 / np.power(np.maximum(counts, 1.0), 0.25)
    return margins * (float(max_margin) / np.max(margins))


def ldam_loss(y_true, logits, margins, scale=30.0, class_weights=None):
    """Per-example LDAM loss ``-w_y log softmax(s (z - Delta_y e_y))_y``.

    Args:
        y_true: integer labels ``[B]`` / ``[B, 1]`` or one-hot ``[B, C]``.
        logits: ``[B, C]`` logits (cosine similarities in the paper).
        margins: C margins (`ldam_margins`).
        scale: s.
        class_weights: optional C weights w (tensor, variable or array).

    Returns:
        ``[B]`` per-example loss.
    """
    logits = ops.convert_to_tensor(logits)
    check_num_classes(logits, len(margins))
    targets = one_hot_targets(y_true, logits)
    margins = ops.convert_to_tensor(np.asarray(margins), dtype=logits.dtype)
    shifted = scale * (logits - targets * margins)
    loss = -ops.sum(targets * ops.log_softmax(shifted, axis=-1), axis=-1)
    if class_weights is not None:
        weights = ops.cast(ops.convert_to_tensor(class_weights), logits.dtype)
        loss = ops.sum(targets * weights, axis=-1) * loss
    return loss


@keras.saving.register_keras_serializable(package="keras_fgvc")
class LDAMLoss(keras.losses.Loss):
    """Label-distribution-aware margin loss (Cao et al. 2019), DRW-ready.

    The class weights live in a non-trainable variable (`class_weights_variable`)
    so `DeferredReweighting` can change them between epochs without retracing
    the compiled (or XLA) train step. The config stores the initial weights.

    Args:
        class_counts: training samples per class.
        max_margin: the largest margin, default 0.5.
        scale: logit scale s, default 30.
        class_weights: initial per-class weights (C floats); None = ones.
        reduction, name, dtype: as `keras.losses.Loss`.

    Call arguments:
        y_true: integer labels ``[B]`` / ``[B, 1]`` or one-hot ``[B, C]``.
        y_pred: logits ``[B, C]``.

    Returns:
        Per-example loss ``[B]`` from `call`.

    Example:
        >>> loss = LDAMLoss(class_counts=[500, 50, 5])
        >>> model.compile(optimizer="sgd", loss=loss)
        >>> model.fit(x, y, epochs=200,
        ...           callbacks=[DeferredReweighting(loss, start_epoch=160)])
    """

    def __init__(
        self,
        class_counts,
        max_margin=0.5,
        scale=30.0,
        class_weights=None,
        reduction="sum_over_batch_size",
        name="ldam_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        counts = validate_counts(class_counts)
        try:
            max_margin = float(max_margin)
            scale = float(scale)
        except (TypeError, ValueError):
            raise ValueError(
                f"max_margin and scale must be numbers; got {max_margin!r}, {scale!r}."
            ) from None
        if not 0.0 < max_margin < float("inf"):
            raise ValueError(f"max_margin must be > 0 and finite; got {max_margin!r}.")
        if not 0.0 < scale < float("inf"):
            raise ValueError(f"scale must be > 0 and finite; got {scale!r}.")
        self.class_counts = counts_to_list(class_counts)
        self.max_margin = max_margin
        self.scale = scale
        self.margins = ldam_margins(counts, max_margin)
        initial = np.ones(counts.size) if class_weights is None else class_weights
        initial = self._check_weights(initial)
        self.class_weights = None if class_weights is None else initial.tolist()
        self.class_weights_variable = keras.Variable(
            initial, trainable=False, dtype=self.dtype, name="ldam_class_weights"
        )
        self._dtype_arg = dtype_config(dtype)

    def _check_weights(self, weights):
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (len(self.class_counts),) or not np.all(np.isfinite(weights)):
            raise ValueError(
                f"class_weights must be {len(self.class_counts)} finite numbers; got {weights!r}."
            )
        return weights

    def set_class_weights(self, weights):
        """Assign new per-class weights (used by `DeferredReweighting`)."""
        self.class_weights_variable.assign(self._check_weights(weights))

    def call(self, y_true, y_pred):
        return ldam_loss(
            y_true, y_pred, self.margins, self.scale, self.class_weights_variable.value
        )

    def get_config(self):
        return {
            "class_counts": self.class_counts,
            "max_margin": self.max_margin,
            "scale": self.scale,
            "class_weights": self.class_weights,
            "reduction": self.reduction,
            "name": self.name,
            "dtype": self._dtype_arg,
        }


def drw_class_weights(class_counts, epoch, start_epoch, beta=BETA):
    """DRW schedule: ones before `start_epoch`, class-balanced weights from it on.

    Args:
        class_counts: training samples per class.
        epoch: the current (0-based) epoch.
        start_epoch: first epoch with re-weighting (160 of 200 in the paper).
        beta: effective-number beta of the re-weighting, default 0.9999.

    Returns:
        float64 NumPy array of C weights.
    """
    counts = validate_counts(class_counts)
    if epoch < start_epoch:
        return np.ones(counts.size)
    return class_balanced_weights(counts, beta)


class DeferredReweighting(keras.callbacks.Callback):
    """Callback: switch a loss's class weights to class-balanced ones at `start_epoch`.

    Deferred re-weighting (DRW, Cao et al. 2019). At the start of every epoch
    it assigns `drw_class_weights(...)` to the loss (ones before `start_epoch`,
    ``class_balanced_weights(class_counts, beta)`` after), so resuming with
    ``initial_epoch`` gives the right weights.

    Args:
        loss: an `LDAMLoss` (anything with `class_counts` and
            `set_class_weights`); None = the model's compiled loss.
        start_epoch: first (0-based) epoch with class-balanced weights.
        beta: effective-number beta, default 0.9999.

    Example:
        >>> model.fit(x, y, epochs=200, callbacks=[DeferredReweighting(loss, 160)])
    """

    def __init__(self, loss=None, start_epoch=160, beta=BETA):
        super().__init__()
        if not isinstance(start_epoch, int) or start_epoch < 0:
            raise ValueError(f"start_epoch must be an int >= 0; got {start_epoch!r}.")
        self.loss = loss
        self.start_epoch = start_epoch
        self.beta = validate_probability_range(beta, "beta")

    def _target(self):
        loss = self.loss if self.loss is not None else getattr(self.model, "loss", None)
        if not hasattr(loss, "set_class_weights"):
            raise ValueError(
                f"DeferredReweighting needs a loss with set_class_weights (LDAMLoss); got {loss!r}."
            )
        return loss

    def on_epoch_begin(self, epoch, logs=None):
        loss = self._target()
        loss.set_class_weights(
            drw_class_weights(loss.class_counts, epoch, self.start_epoch, self.beta)
        )
