"""Models: backbones, heads and builders registered by name."""

from keras_fgvc.models.registry import create_model, get_builder, list_models, register_model

__all__ = ["create_model", "get_builder", "list_models", "register_model"]
