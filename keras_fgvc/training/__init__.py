"""keras_fgvc.training: configs, strategies and the custom distributed training loop.

``config`` (the `Config` dataclass, its registry and ``--set`` overrides) and
``experiments`` (the registered experiments: `get_config`, `list_configs`,
`resolve_config`) import no TensorFlow; `Trainer` and `make_strategy` are
loaded on first use.
"""

from keras_fgvc.training.config import Config, apply_overrides, register_config
from keras_fgvc.training.experiments import get_config, list_configs, resolve_config

_LAZY = {
    "Trainer": "keras_fgvc.training.loop",
    "make_strategy": "keras_fgvc.training.strategy",
    "Hook": "keras_fgvc.training.hooks",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keras_fgvc.training' has no attribute {name!r}")


__all__ = [
    "Config",
    "Hook",
    "Trainer",
    "apply_overrides",
    "get_config",
    "list_configs",
    "make_strategy",
    "register_config",
    "resolve_config",
]
