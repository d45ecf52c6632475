"""Atomic file writes: the one helper every module that writes a result uses.

A file is written to a temporary file in the same folder, flushed to disk,
made readable by all (0644; ``mkstemp`` creates 0600, and a model server
running as another user must read exports and configs) and renamed onto its
path. A crash while writing leaves the previous file intact or none, never
half of one; processes writing the same path at once do not collide.
"""

import json
import os
import tempfile

import numpy as np


def atomic_write(path, write_fn, suffix=""):
    """Call ``write_fn(tmp_path)``, then move the temporary file onto `path`; returns `path`.

    Args:
        path: the file to (re)place; its folder is created.
        write_fn: writes the whole content to the path it is given.
        suffix: the temporary file's suffix, for writers that look at it
            (``.npz``, ``.keras``, ``.png``).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
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


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path, value, sort_keys=True, allow_nan=True):
    """Atomically write `value` as indented JSON (NumPy values converted)."""
    return write_text(path, json.dumps(value, indent=2, sort_keys=sort_keys, allow_nan=allow_nan,
                                       default=_json_default) + "\n")
