"""Workdir files written atomically (temporary file in the same folder, then rename).

Layout (preamble contract): ``W/config.json``, ``W/checkpoints/``,
``W/model.keras``, ``W/labels.txt``, ``W/thresholds.json``,
``W/preprocessing.json``, ``W/metrics.json``, ``W/tensorboard/``. A crash
while writing leaves the previous file intact, never a half-written one.
"""

import json
import os
import tempfile

import numpy as np


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def atomic_write(path, write_fn, suffix=""):
    """Call ``write_fn(tmp_path)`` then rename the temporary file onto `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        write_fn(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; others (serving) must read it
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_text(path, text):
    """Atomically write `text` (UTF-8) to `path`."""

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def write_json(path, value):
    """Atomically write `value` as indented JSON (NumPy values converted)."""
    return write_text(path, json.dumps(value, indent=2, sort_keys=True, default=_json_default)
                      + "\n")


def write_model(path, model):
    """Atomically save `model` as a ``.keras`` file."""
    return atomic_write(path, lambda tmp: model.save(tmp), suffix=".keras")


def write_labels(path, class_names):
    """``labels.txt``: one class name per line, in index order."""
    return write_text(path, "".join(f"{name}\n" for name in class_names))
