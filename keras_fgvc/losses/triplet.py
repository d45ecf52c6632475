"""Triplet loss with in-batch local-positive / hard-negative mining.

Cui et al., CVPR 2016 (Cui's dissertation, Ch. 2, Eq. 2.1, Sec. 2.3.2-2.3.3,
2.4.3):

    L(x, x_p, x_n) = max(0, ||f(x) - f(x_p)||^2 - ||f(x) - f(x_n)||^2 + m).

Embeddings are L2-normalised inside the loss. Every labelled sample of the
batch is an anchor i; its positives are the nearest `positive_fraction` of its
same-class batch mates (local positive sampling); its negatives are samples of
other classes plus human-marked hard negatives for its class; only the
triplets that violate the margin are kept (all of them, not only the hardest).
See `keras_fgvc.losses.mining` for the exact rules.

``mining="naive"`` (Table 2.1 "Triplet-Naive") keeps every in-batch triplet
(i, j, k) with j a positive and k a negative of i, violating or not, and
averages ``max(0, hinge)`` over all of them; with ``positive_fraction=1.0``
every same-class sample is a positive.

Averaging: the batch loss is the mean of Eq. 2.1 over the kept triplets
(violating ones for ``"hard"``, all for ``"naive"``),
``sum_{(i,j,k) valid} hinge_ijk / max(#valid, 1)``. Keras losses return one
value per example, so `call` returns anchor i's share,
``B * sum_{j,k} hinge_ijk / max(#valid, 1)``; the default
``"sum_over_batch_size"`` reduction (mean over the B anchors) then gives
exactly the mean over violating triplets, and `sample_weight` weights anchors.
A batch with no kept triplet gives 0 (not NaN) with finite (zero)
gradients.

Human hard negatives (``hard_negative_for``, Sec. 2.4.3: "We sampled same
number of human-labeled hard negatives as the hard negatives from other
categories"): the kept triplets whose negative k is human-marked for anchor
i's class and the other kept triplets each make half of the loss, ``0.5 *
mean(human) + 0.5 * mean(other)`` (the mean of the kind that exists when a
batch keeps only one). Equal numbers of such rows in a batch do not give
equal numbers of violating triplets: every labelled row is an anchor and
every other-class row a negative, and human negatives violate the margin more
often, so a plain mean over all kept triplets gave them most of the loss.
"""

import keras
from keras import ops

from keras_fgvc.layers.normalization import l2_normalize
from keras_fgvc.losses.mining import (
    MARGIN,
    POSITIVE_FRACTION,
    candidate_triplet_mask,
    hard_negative_mask,
    pairwise_squared_distances,
    triplet_hinge,
    violating_triplet_mask,
)
from keras_fgvc.losses.utils import dtype_config, integer_labels


def split_triplet_labels(y_true):
    """``(labels, hard_negative_for)`` int ``[B]`` from ``[B]``, ``[B, 1]`` or ``[B, 2]`` y_true.

    ``[B, 2]`` holds ``(label, hard_negative_for_class)`` per row; -1 = none.
    Shorter forms hold the label only (no hard negatives).
    """
    y_true = ops.convert_to_tensor(y_true)
    shape = tuple(y_true.shape)
    if len(shape) == 2 and shape[-1] == 2:
        y = ops.cast(ops.round(y_true), "int32")
        return y[:, 0], y[:, 1]
    if len(shape) == 1 or (len(shape) == 2 and shape[-1] == 1):
        return integer_labels(ops.round(y_true)), None
    raise ValueError(
        "Triplet y_true must be labels [B] / [B, 1] or (label, hard_negative_for) pairs "
        f"[B, 2]; got shape {shape}."
    )


MINING_MODES = ("hard", "naive")


def triplet_loss(labels, embeddings, margin=MARGIN, positive_fraction=POSITIVE_FRACTION,
                 hard_negative_for=None, mining="hard"):
    """Per-anchor triplet loss (Eq. 2.1) with in-batch mining.

    Args:
        labels: int ``[B]`` class labels, -1 = no class (never an anchor or
            positive).
        embeddings: ``[B, D]`` embeddings f(x); L2-normalised here.
        margin: m in Eq. 2.1.
        positive_fraction: fraction of nearest same-class samples used as
            positives for each anchor (Sec. 2.3.3).
        hard_negative_for: optional int ``[B]``: the class each sample is a
            human-labelled false positive for (-1 = none), Sec. 2.4.3.
        mining: ``"hard"`` = average over margin-violating triplets only;
            ``"naive"`` = average ``max(0, hinge)`` over all triplets.

    Returns:
        ``[B]`` per-anchor loss whose mean is the mean hinge over the kept
        triplets (0 when there are none).
    """
    mining_mode = validate_mining(mining)
    labels = ops.cast(ops.convert_to_tensor(labels), "int32")
    embeddings = ops.convert_to_tensor(embeddings)
    if hard_negative_for is not None:
        hard_negative_for = ops.cast(hard_negative_for, "int32")
    emb = l2_normalize(embeddings)
    distances = pairwise_squared_distances(emb)
    if mining_mode == "hard":
        valid = violating_triplet_mask(
            labels,
            ops.stop_gradient(distances),
            margin=margin,
            positive_fraction=positive_fraction,
            hard_negative_for=hard_negative_for,
        )
    else:
        valid = candidate_triplet_mask(
            labels,
            ops.stop_gradient(distances),
            positive_fraction=positive_fraction,
            hard_negative_for=hard_negative_for,
        )
    valid = ops.cast(valid, emb.dtype)
    hinge = ops.relu(triplet_hinge(distances, margin))
    batch = ops.cast(ops.shape(emb)[0], emb.dtype)
    if hard_negative_for is None:
        return _mean_share(hinge, valid, batch)
    # Sec. 2.4.3: "same number of human-labeled hard negatives as the hard negatives from
    # other categories". The triplets whose negative is human-marked for the anchor's class
    # and the others each weigh half (all of it when the batch kept only one kind).
    human = valid * ops.cast(hard_negative_mask(labels, hard_negative_for), emb.dtype)[:, None]
    other = valid - human
    has_human = ops.cast(ops.sum(human) > 0, emb.dtype)
    has_other = ops.cast(ops.sum(other) > 0, emb.dtype)
    kinds = ops.maximum(has_human + has_other, 1.0)
    return (has_human * _mean_share(hinge, human, batch)
            + has_other * _mean_share(hinge, other, batch)) / kinds


def _mean_share(hinge, mask, batch):
    """Anchor i's share ``B * sum_{j,k} (hinge * mask)_ijk / max(#mask, 1)`` (``[B]``)."""
    return ops.sum(hinge * mask, axis=(1, 2)) * batch / ops.maximum(ops.sum(mask), 1.0)


def validate_margin(margin):
    try:
        value = float(margin)
    except (TypeError, ValueError):
        value = float("nan")
    if not value >= 0.0 or value == float("inf"):
        raise ValueError(f"margin must be a finite number >= 0; got {margin!r}.")
    return value


def validate_mining(mining):
    if mining not in MINING_MODES:
        raise ValueError(f"mining must be one of {', '.join(MINING_MODES)}; got {mining!r}.")
    return mining


def validate_fraction(positive_fraction):
    try:
        value = float(positive_fraction)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"positive_fraction must be in (0, 1]; got {positive_fraction!r}.")
    return value


@keras.saving.register_keras_serializable(package="keras_fgvc")
class TripletLoss(keras.losses.Loss):
    """Triplet loss with local positives and margin-violating negatives (Eq. 2.1).

    Cui et al., CVPR 2016, Sec. 2.3.1-2.3.3 and 2.4.3. Squared L2 distances on
    L2-normalised embeddings. The reduced loss (default reduction) is the
    mean of the hinge over the batch's violating triplets; 0 if none.

    Args:
        margin: m, default 0.2 (Sec. 2.4.2).
        positive_fraction: fraction of nearest same-class samples kept as
            positives per anchor, default 0.6 (Sec. 2.4.2); 1.0 = all.
        mining: ``"hard"`` (default): average over margin-violating triplets
            only (Sec. 2.3.2); ``"naive"``: average ``max(0, hinge)`` over all
            in-batch triplets, violating or not (Table 2.1 Triplet-Naive).
        reduction, name, dtype: as `keras.losses.Loss`.

    Call arguments:
        y_true: int labels ``[B]`` / ``[B, 1]``, or ``[B, 2]`` rows
            ``(label, hard_negative_for_class)``: a human-labelled false
            positive for class c is passed as ``(-1, c)``; a normal sample as
            ``(label, -1)``. Label -1 = no class (not an anchor/positive).
            Balancing human-labelled and mined negatives (Sec. 2.4.3) is the
            batch sampler's job.
        y_pred: embeddings ``[B, D]`` (normalised inside).

    Returns:
        Per-anchor loss ``[B]`` from `call` (see module docstring).

    Example:
        >>> loss = TripletLoss(margin=MARGIN, positive_fraction=POSITIVE_FRACTION)
        >>> value = loss(labels, embeddings)  # labels [B], embeddings [B, 64]
    """

    def __init__(
        self,
        margin=MARGIN,
        positive_fraction=POSITIVE_FRACTION,
        mining="hard",
        reduction="sum_over_batch_size",
        name="triplet_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = validate_margin(margin)
        self.positive_fraction = validate_fraction(positive_fraction)
        self.mining = validate_mining(mining)
        self._dtype_arg = dtype_config(dtype)

    def call(self, y_true, y_pred):
        labels, hard_negative_for = split_triplet_labels(y_true)
        return triplet_loss(labels, y_pred, self.margin, self.positive_fraction, hard_negative_for,
                            self.mining)

    def get_config(self):
        return {
            "margin": self.margin,
            "positive_fraction": self.positive_fraction,
            "mining": self.mining,
            "reduction": self.reduction,
            "name": self.name,
            "dtype": self._dtype_arg,
        }
