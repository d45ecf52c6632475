"""The registered experiments, looked up by name: `get_config`, `list_configs`, `resolve_config`.

Each module below declares one family of experiments as literal `Config`s, each
with the command that runs it in its description, and registers them
(`keras_fgvc.training.config.register_config`) when it is imported; this entry
point imports every module once, so every name is registered before anyone
looks one up.

- `fashion`: Fashion-MNIST experiments that train here in minutes (CPU).
- `paper`: paper-scale experiments on local data (iNat-BG, Places-BG,
  iNat 2017, CUB-200-2011).
- `folder`: rare-class detectors from your own folder of images.
- `bootstrap`: dataset-bootstrapping rounds.

Example:

>>> config = resolve_config("fashion_bg_ft", ["steps_per_epoch=2", "learning_rate=0.01"])
>>> config.steps_per_epoch
2
"""

from keras_fgvc.training.config import _REGISTRY, apply_overrides, validate_config
from keras_fgvc.training.experiments import (  # noqa: F401  (they register on import)
    bootstrap,
    fashion,
    folder,
    paper,
)


def list_configs():
    """Sorted names of every registered experiment."""
    return sorted(_REGISTRY)


def get_config(name):
    """The registered experiment `name`; a clear `ValueError` when unknown."""
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown config {name!r}. Registered configs: {', '.join(sorted(_REGISTRY))}."
        )
    return _REGISTRY[name]


def resolve_config(name, overrides=()):
    """`get_config(name)` with `overrides` (``key=value`` strings) applied and checked.

    Raises `ValueError` for an unknown name, an unknown key, a value that does not
    parse with its field's type, or a value `validate_config` refuses, before
    anything is built.
    """
    config = apply_overrides(get_config(name), overrides)
    validate_config(config)
    return config


__all__ = ["get_config", "list_configs", "resolve_config"]
