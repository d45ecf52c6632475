"""keras_fgvc.losses: the papers' losses as Keras 3 losses.

* Class-balanced loss (Cui et al., CVPR 2019; dissertation Ch. 5):
  `effective_number`, `class_balanced_weights`,
  `ClassBalancedSoftmaxCrossEntropy`, `ClassBalancedSigmoidCrossEntropy`,
  `ClassBalancedFocalLoss`; plain `SigmoidFocalLoss` (Lin et al. 2017). The
  prior-probability bias initializer of sigmoid heads lives with the models
  (`keras_fgvc.models.PriorProbability`).
* Metric learning (Cui et al., CVPR 2016; Ch. 2): `TripletLoss` with
  local-positive / hard-negative in-batch mining, `AnchorTripletLoss`.
* Long-tail baseline: `LDAMLoss` + `DeferredReweighting` (Cao et al. 2019).
* Background splitting (Mullapudi et al., CVPR 2021): `BackgroundSplittingLoss`.

Every class is registered with Keras serialization (package "keras_fgvc").
"""

from keras_fgvc.losses.anchor_triplet import (
    AnchorTripletLoss,
    anchor_classification_loss,
    anchor_triplet_loss,
)
from keras_fgvc.losses.class_balanced import (
    ClassBalancedFocalLoss,
    ClassBalancedSigmoidCrossEntropy,
    ClassBalancedSoftmaxCrossEntropy,
    class_balanced_focal_loss,
    class_balanced_sigmoid_cross_entropy,
    class_balanced_softmax_cross_entropy,
    class_balanced_weights,
    effective_number,
)
from keras_fgvc.losses.distillation import (
    BackgroundSplittingLoss,
    background_splitting_hard_loss,
    background_splitting_soft_loss,
)
from keras_fgvc.losses.focal import (
    SigmoidFocalLoss,
    sigmoid_cross_entropy,
    sigmoid_focal_crossentropy,
)
from keras_fgvc.losses.ldam import (
    DeferredReweighting,
    LDAMLoss,
    drw_class_weights,
    ldam_loss,
    ldam_margins,
)
from keras_fgvc.losses.mining import local_positive_mask, negative_mask, violating_triplet_mask
from keras_fgvc.losses.triplet import TripletLoss, triplet_loss

__all__ = [
    "AnchorTripletLoss",
    "BackgroundSplittingLoss",
    "ClassBalancedFocalLoss",
    "ClassBalancedSigmoidCrossEntropy",
    "ClassBalancedSoftmaxCrossEntropy",
    "DeferredReweighting",
    "LDAMLoss",
    "SigmoidFocalLoss",
    "TripletLoss",
    "anchor_classification_loss",
    "anchor_triplet_loss",
    "background_splitting_hard_loss",
    "background_splitting_soft_loss",
    "class_balanced_focal_loss",
    "class_balanced_sigmoid_cross_entropy",
    "class_balanced_softmax_cross_entropy",
    "class_balanced_weights",
    "drw_class_weights",
    "effective_number",
    "ldam_loss",
    "ldam_margins",
    "local_positive_mask",
    "negative_mask",
    "sigmoid_cross_entropy",
    "sigmoid_focal_crossentropy",
    "triplet_loss",
    "violating_triplet_mask",
]
