"""Triplet loss plus anchor-point classification loss (Triplet-A).

Cui et al., CVPR 2016 (Cui's dissertation, Sec. 2.3.5, Eq. 2.4-2.5):

    L = omega * L_triplet + (1 - omega) * (-log p_{C(x)}),

where ``p`` is the soft vote over learnable anchor points (Eq. 2.3), computed
by `keras_fgvc.layers.AnchorSoftVote(output="log_probabilities")`.

Composition. A Keras loss sees one ``y_pred``, so `AnchorTripletLoss` takes
``y_pred = concat([embedding, log_probs], axis=-1)`` and splits it at
`embedding_dim`. An equivalent composition is a two-output model compiled with
``loss={"embedding": TripletLoss(), "log_probs": SparseCategoricalCrossentropy(
from_logits=True)}`` and ``loss_weights={"embedding": omega, "log_probs":
1 - omega}``: softmax cross-entropy on log-probabilities is ``-log p_y``
because ``sum_i p_i = 1``. This loss also applies ``log_softmax`` to the
log-probabilities, which leaves normalised inputs unchanged (and gives the
same parameter gradients) and makes unnormalised scores safe.
"""

import keras
from keras import ops

from keras_fgvc.losses.mining import MARGIN, POSITIVE_FRACTION
from keras_fgvc.losses.triplet import (
    split_triplet_labels,
    triplet_loss,
    validate_fraction,
    validate_margin,
)
from keras_fgvc.losses.utils import dtype_config, validate_probability_range


def anchor_classification_loss(labels, log_probs):
    """Per-example ``-log p_y`` (Eq. 2.4); 0 for labels outside ``[0, N)`` (e.g. -1).

    Args:
        labels: int ``[B]``.
        log_probs: ``[B, N]`` log-probabilities (re-normalised with log_softmax).
    """
    log_probs = ops.convert_to_tensor(log_probs)
    labels = ops.cast(ops.convert_to_tensor(labels), "int32")
    targets = ops.one_hot(labels, log_probs.shape[-1], dtype=log_probs.dtype)
    return -ops.sum(targets * ops.log_softmax(log_probs, axis=-1), axis=-1)


def anchor_triplet_loss(
    labels,
    embedding,
    log_probs,
    omega=0.1,
    margin=MARGIN,
    positive_fraction=POSITIVE_FRACTION,
    hard_negative_for=None,
):
    """Per-example ``omega * triplet + (1 - omega) * (-log p_y)`` (Eq. 2.5).

    Args:
        labels: int ``[B]`` labels (-1 = no class: triplet negative only when
            marked in `hard_negative_for`, no classification loss).
        embedding: ``[B, D]`` embeddings (L2-normalised inside the triplet term).
        log_probs: ``[B, N]`` log-probabilities from `AnchorSoftVote`.
        omega: weight of the triplet term, default 0.1 (Sec. 2.4.2).
        margin, positive_fraction, hard_negative_for: as `triplet_loss`.

    Returns:
        ``[B]`` per-example loss; its batch mean is omega times the mean over
        violating triplets plus (1 - omega) times the mean of ``-log p_y``
        over the labelled rows (Eq. 2.4 averages over labelled images x: rows
        of label -1 give 0 and are not counted, so hard negatives in a batch do
        not shrink the classification term).
    """
    trip = triplet_loss(labels, embedding, margin, positive_fraction, hard_negative_for)
    cls = anchor_classification_loss(labels, log_probs)
    labels = ops.cast(ops.convert_to_tensor(labels), "int32")
    labelled = ops.cast(ops.greater_equal(labels, 0), cls.dtype)
    batch = ops.cast(ops.shape(labels)[0], cls.dtype)
    cls = cls * labelled * batch / ops.maximum(ops.sum(labelled), 1.0)
    return omega * trip + (1.0 - omega) * cls


@keras.saving.register_keras_serializable(package="keras_fgvc")
class AnchorTripletLoss(keras.losses.Loss):
    """Triplet + anchor soft-vote classification loss (Eq. 2.4-2.5, Triplet-A).

    Args:
        embedding_dim: D, the width of the embedding part of ``y_pred``.
        omega: weight of the triplet term, default 0.1.
        margin: triplet margin m, default 0.2.
        positive_fraction: local positive fraction, default 0.6.
        reduction, name, dtype: as `keras.losses.Loss`.

    Call arguments:
        y_true: int labels ``[B]`` / ``[B, 1]`` or ``[B, 2]``
            ``(label, hard_negative_for_class)`` rows as `TripletLoss`.
        y_pred: ``[B, D + N]`` = ``concat([embedding, log_probs], -1)``.

    Returns:
        Per-example loss ``[B]`` from `call`.

    Example:
        >>> vote = AnchorSoftVote(num_classes=10)  # keras_fgvc.layers
        >>> y_pred = keras.ops.concatenate([emb, vote(emb)], axis=-1)
        >>> loss = AnchorTripletLoss(embedding_dim=64, omega=0.1)
    """

    def __init__(
        self,
        embedding_dim,
        omega=0.1,
        margin=MARGIN,
        positive_fraction=POSITIVE_FRACTION,
        reduction="sum_over_batch_size",
        name="anchor_triplet_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        is_int = isinstance(embedding_dim, int) and not isinstance(embedding_dim, bool)
        if not is_int or embedding_dim < 1:
            raise ValueError(f"embedding_dim must be a positive int; got {embedding_dim!r}.")
        self.embedding_dim = embedding_dim
        self.omega = validate_probability_range(omega, "omega", high_inclusive=True)
        self.margin = validate_margin(margin)
        self.positive_fraction = validate_fraction(positive_fraction)
        self._dtype_arg = dtype_config(dtype)

    def call(self, y_true, y_pred):
        width = y_pred.shape[-1]
        if width is not None and width <= self.embedding_dim:
            raise ValueError(
                f"y_pred must be [B, embedding_dim + num_classes] with embedding_dim="
                f"{self.embedding_dim}; got last dimension {width}."
            )
        labels, hard_negative_for = split_triplet_labels(y_true)
        embedding = y_pred[:, : self.embedding_dim]
        log_probs = y_pred[:, self.embedding_dim :]
        return anchor_triplet_loss(
            labels,
            embedding,
            log_probs,
            self.omega,
            self.margin,
            self.positive_fraction,
            hard_negative_for,
        )

    def get_config(self):
        return {
            "embedding_dim": self.embedding_dim,
            "omega": self.omega,
            "margin": self.margin,
            "positive_fraction": self.positive_fraction,
            "reduction": self.reduction,
            "name": self.name,
            "dtype": self._dtype_arg,
        }
