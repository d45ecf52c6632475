"""Background-splitting auxiliary loss: mimic a pretrained teacher's predictions.

Mullapudi, Poms, Mark, Ramanan, Fatahalian, "Background Splitting: Finding
Rare Classes in a Sea of Background", CVPR 2021. An auxiliary head over the
teacher's T classes is trained to predict what a frozen pretrained model
predicts for every image (the "background" is split into the teacher's
classes), next to the main rare-class head. Total loss =
``main_loss + lambda * aux_loss``, lambda = 0.1 in the authors' code.

Two target kinds:

* ``mode="hard"`` (the official code): cross-entropy on the teacher's argmax
  pseudo-label. ``y_true`` = int teacher labels ``[B]`` / ``[B, 1]``
  (`Split.teacher_labels`; -1 = no teacher label), or teacher probabilities /
  logits ``[B, T]`` whose argmax is taken.
* ``mode="soft"``: distillation ``T^2 * KL(q_T || softmax(z / T))`` with the
  teacher distribution ``q_T = softmax(t / T)`` for teacher logits
  (``teacher_from_logits=True``) or ``q^(1/T) / sum q^(1/T)`` for teacher
  probabilities (default). The ``T^2`` factor (Hinton et al. 2015) keeps the
  gradient scale independent of T.

Examples without a teacher prediction contribute exactly 0 (and zero
gradient): label -1 (or any label outside [0, T)) in hard mode; for ``[B, T]``
targets a row containing NaN, or a probability row summing to 0.

lambda is applied inside the loss (argument `weight`), so compile with
``loss={"logits": main_loss, "aux_logits": BackgroundSplittingLoss()}`` and no
extra ``loss_weights``.

Averaging: the official code computes
``aux_weight * CrossEntropyLoss()(aux_logits[valid], aux_labels[valid])``,
the mean over the examples *with* a teacher label only. Keras losses return
one value per example and the default ``"sum_over_batch_size"`` reduction
divides by B, so `call` returns ``lambda * CE_b * B / max(#valid, 1)`` for a
valid row b (0 otherwise): the reduced loss (and the mean of the
``reduction=None`` output) is exactly lambda times the mean cross-entropy
over the rows with a teacher, as the official code; a batch with no teacher
label gives 0. `sample_weight` then weights rows, as `TripletLoss` does. Under
several replicas each replica rescales by its own count, so the result is the
mean of the replicas' means: the same as the official code's when every
training image has a teacher label (as in every task here), and weighted
slightly differently when the replicas' shares of unlabelled rows differ.
"""

import keras
from keras import ops

from keras_fgvc.losses.utils import dtype_config, integer_labels, is_one_hot


def _teacher_rows(y_true, num_classes, teacher_from_logits, dtype):
    """(targets [B, T] sanitised, valid [B] bool) from [B, T] teacher outputs."""
    y = ops.cast(y_true, dtype)
    finite = ops.all(ops.logical_not(ops.isnan(y)), axis=-1)
    if teacher_from_logits:
        valid = finite
    else:
        valid = finite & ops.greater(ops.sum(ops.where(ops.isnan(y), 0.0, y), axis=-1), 0.0)
    fill = ops.zeros_like(y) if teacher_from_logits else ops.ones_like(y) / num_classes
    return ops.where(valid[:, None], y, fill), valid


def _mean_over_valid(loss, valid):
    """Rescale per-example `loss` so its batch mean is the mean over the `valid` (0/1) rows."""
    batch = ops.cast(ops.shape(loss)[0], loss.dtype)
    return loss * batch / ops.maximum(ops.sum(valid), 1.0)


def background_splitting_hard_loss(y_true, logits, weight=0.1, teacher_from_logits=False):
    """Per-example ``weight * CE(z, teacher label)``; 0 where there is no teacher label.

    Args:
        y_true: int teacher labels ``[B]`` / ``[B, 1]`` (-1 = none) or teacher
            probabilities / logits ``[B, T]`` (argmax is the pseudo-label).
        logits: auxiliary-head logits ``[B, T]``.
        weight: lambda.
        teacher_from_logits: only changes which ``[B, T]`` rows count as
            missing (see module docstring).

    Returns:
        ``[B]`` per-example loss whose batch mean is lambda times the mean
        cross-entropy over the rows with a teacher label (module docstring).
    """
    y_true, logits = ops.convert_to_tensor(y_true), ops.convert_to_tensor(logits)
    num_classes = logits.shape[-1]
    if is_one_hot(y_true, logits):
        teacher, valid = _teacher_rows(y_true, num_classes, teacher_from_logits, logits.dtype)
        labels = ops.where(valid, ops.cast(ops.argmax(teacher, axis=-1), "int32"), -1)
    else:
        labels = integer_labels(ops.round(y_true))
    targets = ops.one_hot(labels, num_classes, dtype=logits.dtype)  # -1 -> zero row
    loss = -weight * ops.sum(targets * ops.log_softmax(logits, axis=-1), axis=-1)
    return _mean_over_valid(loss, ops.sum(targets, axis=-1))


def background_splitting_soft_loss(
    y_true, logits, weight=0.1, temperature=1.0, teacher_from_logits=False
):
    """Per-example ``weight * T^2 * KL(q_T || softmax(z / T))``; 0 for rows without a teacher.

    Args:
        y_true: teacher probabilities (or logits with `teacher_from_logits`) ``[B, T]``.
        logits: auxiliary-head logits ``[B, T]``.
        weight: lambda.
        temperature: T > 0.
        teacher_from_logits: whether `y_true` are logits.

    Returns:
        ``[B]`` per-example loss whose batch mean is the mean over the rows
        with a teacher (module docstring).
    """
    y_true, logits = ops.convert_to_tensor(y_true), ops.convert_to_tensor(logits)
    if not is_one_hot(y_true, logits):
        raise ValueError(
            "mode='soft' needs teacher probabilities or logits of shape [B, T] = "
            f"{tuple(logits.shape)}; got y_true of shape {tuple(y_true.shape)}."
        )
    num_classes = logits.shape[-1]
    teacher, valid = _teacher_rows(y_true, num_classes, teacher_from_logits, logits.dtype)
    if teacher_from_logits:
        log_q = ops.log_softmax(teacher / temperature, axis=-1)
        q = ops.exp(log_q)
        plogp = q * log_q
    else:
        q = ops.power(ops.maximum(teacher, 0.0), 1.0 / temperature)
        q = q / ops.sum(q, axis=-1, keepdims=True)
        positive = ops.greater(q, 0.0)
        plogp = ops.where(positive, q * ops.log(ops.where(positive, q, 1.0)), 0.0)
    log_p = ops.log_softmax(logits / temperature, axis=-1)
    kl = ops.sum(plogp - q * log_p, axis=-1)
    kl = ops.where(valid, kl, 0.0)
    return _mean_over_valid(weight * temperature**2 * kl, ops.cast(valid, kl.dtype))


@keras.saving.register_keras_serializable(package="keras_fgvc")
class BackgroundSplittingLoss(keras.losses.Loss):
    """Auxiliary loss of background splitting (Mullapudi et al., CVPR 2021).

    Args:
        mode: ``"hard"`` (cross-entropy on teacher argmax labels, official
            code) or ``"soft"`` (temperature KL distillation).
        temperature: T > 0 for ``"soft"`` (ignored by ``"hard"``), default 1.
        weight: lambda applied inside the loss, default 0.1.
        teacher_from_logits: ``[B, T]`` targets are teacher logits (True) or
            probabilities (False, default).
        reduction, name, dtype: as `keras.losses.Loss`.

    Call arguments:
        y_true: ``"hard"``: int teacher labels ``[B]`` / ``[B, 1]`` with -1 =
            no label, or ``[B, T]`` teacher outputs. ``"soft"``: ``[B, T]``
            teacher probabilities / logits; a NaN row (or an all-zero
            probability row) = no teacher.
        y_pred: auxiliary logits ``[B, T]`` over the teacher's classes.

    Returns:
        Per-example loss ``[B]`` from `call`, already multiplied by lambda and
        rescaled so that its batch mean is the mean over the rows with a
        teacher (module docstring); the reduced loss from `__call__`.

    Example:
        >>> aux = BackgroundSplittingLoss(mode="hard", weight=0.1)
        >>> model.compile(optimizer="sgd",
        ...               loss={"logits": "sparse_categorical_crossentropy", "aux_logits": aux})
    """

    def __init__(
        self,
        mode="hard",
        temperature=1.0,
        weight=0.1,
        teacher_from_logits=False,
        reduction="sum_over_batch_size",
        name="background_splitting_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if mode not in ("hard", "soft"):
            raise ValueError(f"mode must be 'hard' or 'soft'; got {mode!r}.")
        try:
            temperature, weight = float(temperature), float(weight)
        except (TypeError, ValueError):
            raise ValueError(
                f"temperature and weight must be numbers; got {temperature!r}, {weight!r}."
            ) from None
        if not 0.0 < temperature < float("inf"):
            raise ValueError(f"temperature must be > 0 and finite; got {temperature!r}.")
        if not 0.0 <= weight < float("inf"):
            raise ValueError(f"weight must be >= 0 and finite; got {weight!r}.")
        self.mode = mode
        self.temperature = temperature
        self.weight = weight
        self.teacher_from_logits = bool(teacher_from_logits)
        self._dtype_arg = dtype_config(dtype)

    def call(self, y_true, y_pred):
        if self.mode == "hard":
            return background_splitting_hard_loss(
                y_true, y_pred, self.weight, self.teacher_from_logits
            )
        return background_splitting_soft_loss(
            y_true, y_pred, self.weight, self.temperature, self.teacher_from_logits
        )

    def get_config(self):
        return {
            "mode": self.mode,
            "temperature": self.temperature,
            "weight": self.weight,
            "teacher_from_logits": self.teacher_from_logits,
            "reduction": self.reduction,
            "name": self.name,
            "dtype": self._dtype_arg,
        }
