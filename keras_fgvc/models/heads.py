"""Classification heads: pooled features -> the model's named outputs.

Every head returns a dict of symbolic float32 tensors with at least
``"logits"`` (what the loss sees) and ``"probabilities"`` (what evaluation
and export read), and, for the metric head, ``"embedding"``:

- ``"softmax"``: Dense(C); probabilities = softmax(logits).
- ``"sigmoid"``: Dense(C) whose bias starts at the prior
  ``b = -log((1 - pi) / pi)`` with ``pi = 1 / C`` (class-balanced loss,
  Cui et al. CVPR 2019, Sec. 4.2); probabilities = sigmoid(logits). Weight
  decay goes on the kernel only, never on this bias.
- ``"fixed_background"``: Dense(C - 1) foreground logits + `FixedBackgroundLogit`
  (background splitting, Mullapudi et al. 2021, appendix B, Eq. 2-3) -> C
  logits with index 0 the constant background logit; probabilities =
  softmax over all C.
- ``"cosine"``: `NormalizedLinear`(C): cosine similarities in [-1, 1] between
  the L2-normalised features and class weights (the head LDAM needs, Cao et
  al. 2019); probabilities = softmax(scale * logits), the distribution the
  LDAM loss trains (scale s = 30 there).
- ``"anchors"``: Dense(D) + L2 normalisation -> ``"embedding"``, then
  `AnchorSoftVote` (Cui et al. CVPR 2016, Sec. 2.4) with K anchors per class
  and temperature gamma; ``"logits"`` are log-probabilities, so softmax
  cross-entropy on them is ``-log p_y``; probabilities = exp(logits).

``num_classes`` always counts the background class where there is one.
"""

import numbers

import keras

from keras_fgvc.layers import AnchorSoftVote, FixedBackgroundLogit, L2Normalize, NormalizedLinear
from keras_fgvc.models.initializers import PriorProbability

HEADS = ("softmax", "sigmoid", "fixed_background", "cosine", "anchors")


def _regularizer(weight_decay):
    return keras.regularizers.L2(weight_decay) if weight_decay else None


def _outputs(logits, activation, **extra):
    """Name the outputs: float32 ``logits`` and ``probabilities`` (+ extras)."""
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
    probabilities = keras.layers.Activation(activation, dtype="float32", name="probabilities")(
        logits
    )
    return {"logits": logits, "probabilities": probabilities, **extra}


def _dropout(features, dropout, name="dropout"):
    if dropout:
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
        features = keras.layers.Dropout(dropout, name=name)(features)
    return features


def prior_bias_initializer(probability):
    """Bias initializer ``b = -log((1 - pi) / pi)`` (`keras_fgvc.models.PriorProbability`)."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"The prior probability must be in (0, 1), got {probability!r}.")
    return PriorProbability(probability)


def softmax_head(features, num_classes, weight_decay=0.0, dropout=0.0, name="classifier"):
    """Dense(C) -> softmax."""
    x = _dropout(features, dropout)
    logits = keras.layers.Dense(
        num_classes, kernel_regularizer=_regularizer(weight_decay), name=name
    )(x)
    return _outputs(logits, "softmax")


def sigmoid_head(
    features,
    num_classes,
    weight_decay=0.0,
    dropout=0.0,
    prior_probability=None,
    name="classifier",
):
    """Dense(C) with the prior bias -> sigmoid; no regularizer on the bias.

    Args:
        prior_probability: pi of the bias init (default ``1 / num_classes``;
            must be given when ``num_classes == 1``).
    """
    if prior_probability is None:
        if num_classes < 2:
            raise ValueError("A 1-class sigmoid head needs an explicit prior_probability.")
        prior_probability = 1.0 / num_classes
    x = _dropout(features, dropout)
    logits = keras.layers.Dense(
        num_classes,
        kernel_regularizer=_regularizer(weight_decay),
        bias_initializer=prior_bias_initializer(float(prior_probability)),
        bias_regularizer=None,
        name=name,
    )(x)
    return _outputs(logits, "sigmoid")


def fixed_background_head(
    features, num_classes, weight_decay=0.0, dropout=0.0, background_logit=0.0, name="classifier"
):
    """Dense(C - 1) foreground logits + a constant background logit at index 0."""
    if num_classes < 2:
        raise ValueError(
            f"A fixed-background head needs num_classes >= 2 (background + 1), got {num_classes}."
        )
    x = _dropout(features, dropout)
    foreground = keras.layers.Dense(
        num_classes - 1, kernel_regularizer=_regularizer(weight_decay), name=name
    )(x)
    logits = FixedBackgroundLogit(background_logit, name="background_logit")(foreground)
    return _outputs(logits, "softmax")


def cosine_head(features, num_classes, weight_decay=0.0, dropout=0.0, scale=30.0,
                name="classifier"):
    """`NormalizedLinear`(C) cosine logits in [-1, 1]; probabilities = softmax(scale * logits).

    Args:
        scale: the logit scale s of the loss (LDAM's s = 30), so that the
            probabilities evaluation and export read are the softmax the loss trained.
    """
    if not 0.0 < float(scale) < float("inf"):
        raise ValueError(f"scale must be > 0 and finite, got {scale!r}.")
    x = _dropout(features, dropout)
    cosine = NormalizedLinear(num_classes, kernel_regularizer=_regularizer(weight_decay),
                              name=name)(x)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(cosine)
    scaled = keras.layers.Rescaling(float(scale), dtype="float32", name="logit_scale")(logits)
    probabilities = keras.layers.Activation("softmax", dtype="float32",
                                            name="probabilities")(scaled)
    return {"logits": logits, "probabilities": probabilities}


def anchor_head(
    features,
    num_classes,
    weight_decay=0.0,
    dropout=0.0,
    embedding_dim=64,
    anchors_per_class=3,
    gamma=5.0,
):
    """Embedding (Dense + L2 norm) -> `AnchorSoftVote` log-probabilities.

    The anchors live in the layer named ``"anchors"``; initialise them from
    training embeddings with
    ``model.get_layer("anchors").init_from_embeddings(embeddings, labels)``.
    """
    x = _dropout(features, dropout)
    x = keras.layers.Dense(
        embedding_dim, kernel_regularizer=_regularizer(weight_decay), name="embedding_dense"
    )(x)
    embedding = L2Normalize(axis=-1, name="l2_normalize")(x)
    embedding = keras.layers.Activation("linear", dtype="float32", name="embedding")(embedding)
    log_probabilities = AnchorSoftVote(
        num_classes,
        anchors_per_class=anchors_per_class,
        gamma=gamma,
        output="log_probabilities",
        name="anchors",
    )(embedding)
    return _outputs(log_probabilities, "exponential", embedding=embedding)


_HEAD_FUNCTIONS = {
    "softmax": softmax_head,
    "sigmoid": sigmoid_head,
    "fixed_background": fixed_background_head,
    "cosine": cosine_head,
    "anchors": anchor_head,
}


def apply_head(head, features, num_classes, **kwargs):
    """Apply the head named `head` (one of `HEADS`) to pooled `features`."""
    if head not in _HEAD_FUNCTIONS:
        raise ValueError(f"Unknown head {head!r}; expected one of {HEADS}.")
    return _HEAD_FUNCTIONS[head](features, check_num_classes(num_classes), **kwargs)


def check_num_classes(num_classes, name="num_classes"):
    """`num_classes` as a positive int, or a ValueError naming the bad value."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise ValueError(f"{name} must be a positive integer, got {num_classes!r}.")
    if num_classes < 1:
        raise ValueError(f"{name} must be a positive integer, got {num_classes!r}.")
    return int(num_classes)
