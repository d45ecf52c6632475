"""Model registry: builders registered by name, created with `create_model`.

Every builder returns a `keras.Model` whose outputs are a dict with at least
``logits`` (what the loss sees) and ``probabilities`` (what evaluation and
export read; per class, index 0 = background for background tasks). Builders
may add ``aux_logits`` (background splitting) and ``embedding`` (metric
learning).
"""

_REGISTRY = {}


def register_model(name=None):
    """Decorator registering a model builder under `name` (default: its own name)."""

    def decorator(builder):
        key = name or builder.__name__
        if key in _REGISTRY and _REGISTRY[key] is not builder:
            raise ValueError(f"Model {key!r} is already registered.")
        _REGISTRY[key] = builder
        return builder

    return decorator


def create_model(name, **kwargs):
    """Build the model registered as `name` with the builder's keyword arguments."""
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown model {name!r}. Registered models: {', '.join(list_models()) or 'none'}."
        )
    return _REGISTRY[name](**kwargs)


def list_models():
    """Sorted names of every registered model."""
    return sorted(_REGISTRY)


def get_builder(name):
    """The registered builder function (for introspecting its arguments)."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown model {name!r}. Registered models: {', '.join(list_models())}.")
    return _REGISTRY[name]
