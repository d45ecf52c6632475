"""What export reads from a training workdir (`read_workdir`): the files, their checks.

The layout contract: ``model.keras``, ``labels.txt``, ``preprocessing.json``,
optionally ``thresholds.json`` and a bootstrapping round's ``lineage.json``
(see `keras_fgvc.export.saved_model`).
"""

import json
import os
import warnings

from keras_fgvc.data.bootstrap_manifest import HARD_NEGATIVE_CLASS
from keras_fgvc.data.preprocessing import spec_from_json

LABELS_FILE = "labels.txt"
THRESHOLDS_FILE = "thresholds.json"
PREPROCESSING_FILE = "preprocessing.json"
LINEAGE_FILE = "lineage.json"


def read_workdir(workdir):
    """Read what export needs from a training workdir (see the workdir layout contract).

    ``preprocessing.json`` files written before the crop / aspect / resize
    keys existed are read with `keras_fgvc.data.preprocessing.LEGACY_DEFAULTS`
    (the whole image resized bilinearly, no crop: what serving did then).
    The classes its ``absorbed_classes`` key names (`saved_model`'s docstring) are left
    out of the served classes and thresholds; a bootstrapping round's workdir
    (it has ``lineage.json``) trained before that key existed has its
    hard-negative classes, known by their reserved names, left out too, with a warning.

    Returns:
        dict with ``model_path``, ``class_names`` (the served foreground
        classes), ``thresholds`` (theirs), ``image_size``, ``channels``,
        ``has_background``, ``preprocessing`` (the full spec), ``lineage``
        (``W/lineage.json``, written by a `keras_fgvc.bootstrap` round; None
        when the workdir has none) and ``absorbed_columns`` (the
        ``probabilities`` columns of the absorbed classes) and ``flip_average``
        (``"flip_average"`` of ``preprocessing.json``: the run evaluated with
        ``eval_flip``; default false).
    """
    def _path(name):
        path = os.path.join(workdir, name)
        if not os.path.exists(path):
            raise ValueError(f"The workdir {workdir!r} has no {name} (expected at {path!r}).")
        return path

    model_path = _path("model.keras")
    with open(_path(PREPROCESSING_FILE)) as f:
        preprocessing = json.load(f)
    try:
        spec = spec_from_json(preprocessing)
    except ValueError as error:
        raise ValueError(f"{os.path.join(workdir, PREPROCESSING_FILE)!r}: {error}") from None
    with open(_path(LABELS_FILE)) as f:
        labels = [line.strip() for line in f if line.strip()]
    has_background = bool(preprocessing.get("has_background", True))
    foreground = labels[1:] if has_background else labels
    absorbed = preprocessing.get("absorbed_classes", [])
    if (not isinstance(absorbed, list) or not all(isinstance(n, str) for n in absorbed)
            or len(set(absorbed)) != len(absorbed) or not set(absorbed) <= set(foreground)):
        raise ValueError(f"{os.path.join(workdir, PREPROCESSING_FILE)!r}: absorbed_classes "
                         f"{absorbed!r} must be a list of distinct foreground classes of "
                         f"labels.txt {foreground!r}.")
    flip = preprocessing.get("flip_average", False)
    if not isinstance(flip, bool):
        raise ValueError(f"{os.path.join(workdir, PREPROCESSING_FILE)!r}: flip_average "
                         f"{flip!r} must be true or false.")
    lineage = _read_lineage(workdir)
    if "absorbed_classes" not in preprocessing and lineage is not None:
        absorbed = _legacy_absorbed(workdir, foreground)
    served = [i for i, name in enumerate(foreground) if name not in absorbed]
    thresholds = None
    thresholds_path = os.path.join(workdir, THRESHOLDS_FILE)
    if os.path.exists(thresholds_path):
        with open(thresholds_path) as f:
            saved = json.load(f)
        if list(saved.get("class_names", foreground)) != foreground:
            raise ValueError(f"{thresholds_path!r} lists classes {saved.get('class_names')!r} "
                             f"but labels.txt has foreground classes {foreground!r}.")
        thresholds = list(saved["thresholds"])
        if len(thresholds) != len(foreground):
            raise ValueError(f"{thresholds_path!r} has {len(thresholds)} thresholds for the "
                             f"{len(foreground)} foreground classes of labels.txt.")
        thresholds = [thresholds[i] for i in served]
    return {
        "model_path": model_path,
        "class_names": [foreground[i] for i in served],
        "thresholds": thresholds,
        "image_size": spec["image_size"],
        "channels": spec["channels"],
        "has_background": has_background,
        "preprocessing": spec,
        "lineage": lineage,
        "absorbed_columns": [int(has_background) + foreground.index(name) for name in absorbed],
        "flip_average": flip,
    }


def _read_lineage(workdir):
    """``W/lineage.json`` (a `keras_fgvc.bootstrap` round's), or None when there is none."""
    path = os.path.join(workdir, LINEAGE_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as error:
        raise ValueError(f"{path!r} is not JSON ({error}).") from None


def _legacy_absorbed(workdir, foreground):
    """The hard-negative classes of a bootstrapping round trained before the trainer wrote
    ``absorbed_classes``: those with the names `keras_fgvc.data.bootstrap_manifest` reserves
    for them (no category may take them), folded into background with a warning."""
    names = [n for n in foreground
             if n == HARD_NEGATIVE_CLASS or n.startswith(f"{HARD_NEGATIVE_CLASS}:")]
    if names:
        warnings.warn(
            f"{os.path.join(workdir, PREPROCESSING_FILE)!r} has no absorbed_classes (the round "
            f"was trained before the trainer wrote them): the hard-negative classes {names} "
            f"are folded into background and not served, as a round trained now would be.",
            stacklevel=3)
    return names
