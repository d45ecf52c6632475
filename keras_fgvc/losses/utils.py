"""Small helpers shared by the losses: label formats and count validation.

Every classification loss in ``keras_fgvc.losses`` takes ``y_true`` either as
integer class labels (shape ``[B]`` or ``[B, 1]``) or as one-hot / soft
targets (shape ``[B, C]``, the same shape as the logits). These helpers turn
either form into one-hot targets so the loss math is written once.
"""

import math

import numpy as np
from keras import ops


def is_one_hot(y_true, y_pred):
    """Whether `y_true` is one-hot / soft targets (same rank and last dim as `y_pred`).

    Decided from static shapes, so it works inside `tf.function` and XLA. A
    ``[B, 1]`` target with ``C == 1`` logits counts as one-hot; otherwise a
    ``[B, 1]`` or ``[B]`` target holds integer labels.
    """
    y_true, y_pred = ops.convert_to_tensor(y_true), ops.convert_to_tensor(y_pred)
    t_shape, p_shape = tuple(y_true.shape), tuple(y_pred.shape)
    if len(t_shape) != len(p_shape):
        return False
    if t_shape[-1] == 1 and p_shape[-1] != 1:
        return False
    return True


def integer_labels(y_true):
    """Integer labels ``[B]`` from ``[B]`` or ``[B, 1]`` labels (any dtype)."""
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == 2:
        if y_true.shape[-1] not in (1, None):
            raise ValueError(
                f"Integer labels must have shape [B] or [B, 1]; got shape {tuple(y_true.shape)}."
            )
        y_true = ops.squeeze(y_true, axis=-1)
    elif len(y_true.shape) != 1:
        raise ValueError(
            f"Integer labels must have shape [B] or [B, 1]; got shape {tuple(y_true.shape)}."
        )
    return ops.cast(y_true, "int32")


def one_hot_targets(y_true, y_pred):
    """Targets ``[B, C]`` in ``y_pred.dtype`` from integer labels or one-hot / soft targets.

    Integer labels outside ``[0, C)`` (for example -1) give an all-zero row.
    With a single logit (``C == 1``, a binary sigmoid head) ``[B]`` targets
    are the 0/1 binary targets, as ``[B, 1]`` ones are (keras convention), not
    class indices.
    """
    y_true, y_pred = ops.convert_to_tensor(y_true), ops.convert_to_tensor(y_pred)
    if len(y_pred.shape) < 2:
        # Rank-1 logits would be read as one row of B classes: the per-example
        # sum over the last axis would then sum over the batch.
        raise ValueError(
            f"y_pred must be logits of shape [B, C]; got shape {tuple(y_pred.shape)}. "
            "For one binary output use shape [B, 1]."
        )
    if is_one_hot(y_true, y_pred):
        return ops.cast(y_true, y_pred.dtype)
    num_classes = y_pred.shape[-1]
    if num_classes is None:
        raise ValueError("The number of classes (last dimension of y_pred) must be static.")
    if num_classes == 1 and len(y_true.shape) == len(y_pred.shape) - 1:
        return ops.cast(ops.expand_dims(y_true, -1), y_pred.dtype)
    return ops.one_hot(integer_labels(y_true), num_classes, dtype=y_pred.dtype)


def check_num_classes(y_pred, num_classes, name="class_counts"):
    """ValueError unless the static last dimension of `y_pred` equals `num_classes`."""
    width = y_pred.shape[-1]
    if width is not None and width != num_classes:
        raise ValueError(
            f"{name} has {num_classes} classes but y_pred has {width} "
            f"(shape {tuple(y_pred.shape)})."
        )


def smooth_labels(targets, label_smoothing, num_classes):
    """Keras-style label smoothing: ``y * (1 - ls) + ls / num_classes``."""
    if not label_smoothing:
        return targets
    return targets * (1.0 - label_smoothing) + label_smoothing / num_classes


def validate_counts(class_counts, name="class_counts"):
    """`class_counts` as a float64 NumPy vector; ValueError for bad values."""
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D list of counts; got {class_counts!r}.")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError(f"{name} must be finite and >= 0; got {class_counts!r}.")
    return counts


def counts_to_list(class_counts):
    """JSON-safe copy of `class_counts` for `get_config` (ints stay ints)."""
    out = []
    for c in np.asarray(class_counts).tolist():
        out.append(int(c) if float(c).is_integer() else float(c))
    return out


def validate_probability_range(value, name, low_inclusive=True, high_inclusive=False):
    """ValueError unless ``value`` lies in [0, 1) (or the interval asked for)."""
    ok = isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v >= 0.0 if low_inclusive else v > 0.0) and (v <= 1.0 if high_inclusive else v < 1.0)
    if not ok:
        lo = "[" if low_inclusive else "("
        hi = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must be in {lo}0, 1{hi}; got {value!r}.")
    return float(value)


def dtype_config(dtype):
    """The `dtype` constructor argument in JSON-safe form (a name or None)."""
    if dtype is None or isinstance(dtype, str):
        return dtype
    name = getattr(dtype, "name", None)
    return name if isinstance(name, str) else str(dtype)
