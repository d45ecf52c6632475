"""Analysis tools of the papers: EMD domain similarity, dataset granularity, kernel approximation.

Modules (each also a command line, ``python -m keras_fgvc.analysis.<module>``):

- `domain_similarity`: class means, EMD (Eq. 4.2), similarity (Eq. 4.3),
  greedy source-class selection (Sec. 4.3.2).
- `granularity`: RS, RSM, Rank, RankM (Eq. 6.2-6.5) and the silhouette (Eq. 6.1).
- `kernel_approximation`: relative RBF approximation error of KernelPooling (Eq. 3.12).
- `features`: ``.npz`` feature files and feature extraction with a model.

Everything loads on first use (NumPy only for granularity and EMD; POT and
Keras when needed).
"""

import importlib

_EXPORTS = {
    "class_means": "domain_similarity",
    "class_similarities": "domain_similarity",
    "emd": "domain_similarity",
    "select_source_classes": "domain_similarity",
    "select_source_union": "domain_similarity",
    "similarity": "domain_similarity",
    "extract_features": "features",
    "load_features": "features",
    "save_features": "features",
    "class_medoids": "granularity",
    "rank": "granularity",
    "rank_m": "granularity",
    "rs": "granularity",
    "rsm": "granularity",
    "silhouette": "granularity",
    "relative_error": "kernel_approximation",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    """Lazy exports: submodules load on first use (so ``python -m
    keras_fgvc.analysis.<module>`` does not import the module twice)."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
