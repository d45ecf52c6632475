"""A small on-disk cache for derived data (teacher pseudo-labels), written atomically.

The folder is ``$KERAS_FGVC_CACHE`` when set, else ``~/.cache/keras_fgvc``.
Entries are ``.npz`` files named by a hash of the arguments that produced them.
"""

import hashlib
import json
import logging
import os
import zipfile

import numpy as np

from keras_fgvc.files import atomic_write

logger = logging.getLogger(__name__)


def default_cache_dir():
    """``$KERAS_FGVC_CACHE`` or ``~/.cache/keras_fgvc``."""
    return os.environ.get("KERAS_FGVC_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "keras_fgvc"
    )


def cache_key(**kwargs):
    """A 16-hex-digit hash of JSON-safe keyword arguments (order independent)."""
    text = json.dumps(kwargs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def cache_path(prefix, key, cache_dir=None):
    """``<cache_dir>/<prefix>-<key>.npz``."""
    return os.path.join(os.fspath(cache_dir or default_cache_dir()), f"{prefix}-{key}.npz")


def save_npz(path, **arrays):
    """Writes `arrays` to `path` atomically (temporary file in the same folder, then rename).

    A crash mid-write leaves either the old file or none, never half of one.
    """
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")


def save_model(path, model):
    """Saves a Keras model as a ``.keras`` file atomically (temporary file, then rename)."""
    atomic_write(path, model.save, suffix=".keras")


def load_npz(path):
    """The arrays of a cache entry as a dict, or None if missing or unreadable."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        logger.warning("Ignoring unreadable cache entry %s: %s", path, e)
        return None


def work_order(indices):
    """`indices` (shards to compute) rotated to start at this worker's share.

    Under a multi-worker run (``TF_CONFIG``), worker w of W starts at position
    ``w * len / W``; a caller that skips shards another process finished
    meanwhile then splits the work among workers sharing the folder, and
    still computes every shard itself when the folder is not shared.
    """
    indices = list(indices)
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        workers = len((config.get("cluster") or {}).get("worker") or [])
        index = int((config.get("task") or {}).get("index") or 0)
    except (ValueError, TypeError, AttributeError):
        return indices
    if workers < 2 or not indices:
        return indices
    start = (index % workers) * len(indices) // workers
    return indices[start:] + indices[:start]
