"""Models: backbones, pooling, heads (and their initializers) and builders registered by name.

Importing this package registers every builder, so `list_models()` is
complete. See `keras_fgvc.models.builders` for the table of model names.
"""

from keras_fgvc.models import builders  # noqa: F401  (registers the builders)
from keras_fgvc.models.backbones import build_backbone, list_backbones
from keras_fgvc.models.classifier import build_background_splitting, build_classifier
from keras_fgvc.models.flip import HorizontalFlip, flip_averaged
from keras_fgvc.models.initializers import PriorProbability
from keras_fgvc.models.lws import LearnableWeightScaling, build_lws_model
from keras_fgvc.models.preprocessing import ImageNormalization
from keras_fgvc.models.registry import create_model, get_builder, list_models, register_model

__all__ = [
    "HorizontalFlip",
    "ImageNormalization",
    "LearnableWeightScaling",
    "PriorProbability",
    "build_backbone",
    "build_background_splitting",
    "build_classifier",
    "build_lws_model",
    "create_model",
    "flip_averaged",
    "get_builder",
    "list_backbones",
    "list_models",
    "register_model",
]
