"""keras_fgvc.layers."""

from keras_fgvc.layers.anchor_soft_vote import AnchorSoftVote
from keras_fgvc.layers.bilinear_pooling import BilinearPooling, CompactBilinearPooling
from keras_fgvc.layers.fixed_background import FixedBackgroundLogit, foreground_probabilities
from keras_fgvc.layers.kernel_pooling import KernelPooling
from keras_fgvc.layers.normalization import L2Normalize, SignedSqrt
from keras_fgvc.layers.normalized_linear import NormalizedLinear

__all__ = [
    "AnchorSoftVote",
    "BilinearPooling",
    "CompactBilinearPooling",
    "FixedBackgroundLogit",
    "foreground_probabilities",
    "KernelPooling",
    "L2Normalize",
    "NormalizedLinear",
    "SignedSqrt",
]
