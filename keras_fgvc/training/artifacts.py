"""Workdir files, written atomically by `keras_fgvc.files` (temporary file, then rename).

Layout (preamble contract): ``W/config.json``, ``W/checkpoints/``,
``W/model.keras``, ``W/labels.txt``, ``W/thresholds.json``,
``W/preprocessing.json``, ``W/metrics.json``, ``W/tensorboard/``. A crash
while writing leaves the previous file intact, never a half-written one.
"""

from keras_fgvc.files import atomic_write, write_json, write_text

__all__ = ["atomic_write", "write_json", "write_labels", "write_model", "write_text"]


def write_model(path, model):
    """Atomically save `model` as a ``.keras`` file."""
    return atomic_write(path, lambda tmp: model.save(tmp), suffix=".keras")


def write_labels(path, class_names):
    """``labels.txt``: one class name per line, in index order."""
    return write_text(path, "".join(f"{name}\n" for name in class_names))
