"""Integer model versions written atomically, the way TF Serving expects them.

TF Serving watches ``MODEL_BASE/<name>/`` and loads every child directory whose
name is an integer. A version is therefore written into a temporary sibling
whose name is not an integer (``.tmp-<version>-<random>``, which TF Serving and
the loopback server both ignore) and renamed into place only once it is
complete. ``os.rename`` of a directory is atomic on POSIX file systems, so an
exporter killed at any point leaves either no new version or a whole one.
"""

import contextlib
import os
import shutil
import tempfile

TEMP_PREFIX = ".tmp-"


def list_versions(model_dir):
    """Sorted integer versions under `model_dir` that hold a ``saved_model.pb``.

    Args:
        model_dir: ``MODEL_BASE/<name>``; may not exist yet.

    Returns:
        A sorted list of ints (empty when there is no version).
    """
    if not os.path.isdir(model_dir):
        return []
    versions = []
    for entry in os.listdir(model_dir):
        if entry.isdigit() and os.path.isfile(os.path.join(model_dir, entry, "saved_model.pb")):
            versions.append(int(entry))
    return sorted(versions)


def next_version(model_dir):
    """The version a new export takes: one more than any integer directory present, else 1."""
    if not os.path.isdir(model_dir):
        return 1
    taken = [int(e) for e in os.listdir(model_dir) if e.isdigit()]
    return max(taken, default=0) + 1


@contextlib.contextmanager
def atomic_version_dir(model_dir, version=None):
    """Context manager yielding ``(temp_dir, version)``; on success renames temp_dir to the version.

    Everything is written into ``temp_dir``. When the block exits normally the
    directory is renamed to ``model_dir/<version>``; when it raises, the
    temporary directory is removed and nothing is published. If another
    exporter took the same version in the meantime (rename fails), the next
    free version is used, unless `version` was given explicitly.

    Args:
        model_dir: ``MODEL_BASE/<name>``; created if missing.
        version: explicit int version, or None for `next_version(model_dir)`.

    Yields:
        A list ``[temp_dir, version]``; after the block, ``result[1]`` is the
        version actually published and ``result[0]`` its final path.

    Example:
        >>> with atomic_version_dir("models/detector") as result:  # doctest: +SKIP
        ...     write_saved_model(result[0])
    """
    if version is not None and (not isinstance(version, int) or version < 1):
        raise ValueError(f"version must be a positive int, got {version!r}.")
    os.makedirs(model_dir, exist_ok=True)
    chosen = version if version is not None else next_version(model_dir)
    if version is not None and os.path.exists(os.path.join(model_dir, str(version))):
        raise ValueError(f"Version {version} already exists in {model_dir!r}.")
    temp_dir = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{chosen}-", dir=model_dir)
    result = [temp_dir, chosen]
    try:
        yield result
        while True:
            final = os.path.join(model_dir, str(chosen))
            try:
                if os.path.exists(final):
                    raise FileExistsError(final)
                os.rename(temp_dir, final)
                break
            except OSError:
                if version is not None:
                    raise
                chosen = next_version(model_dir)
        _fsync_dir(model_dir)
        result[0], result[1] = final, chosen
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise


def _fsync_dir(path):
    """Flush a directory entry (the rename) to disk where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
