"""Integer model versions written atomically, the way TF Serving expects them.

TF Serving watches ``MODEL_BASE/<name>/`` and loads every child directory whose
name is an integer. A version is therefore written into a temporary sibling
whose name is not an integer (``.tmp-<version>-<random>``, which TF Serving and
the loopback server both ignore) and renamed into place only once it is
complete. ``os.rename`` of a directory is atomic on POSIX file systems, so an
exporter killed at any point leaves either no new version or a whole one.

Temporary directories are named ``.tmp-<tag>-<host>.<pid>-<random>``; each
export first removes those its host's dead processes left behind
(`remove_stale_temp_dirs`), never one a live exporter is writing. Published
versions are readable by every user (directories 0755, files 0644), so a
server running as another user can load them.
"""

import contextlib
import os
import re
import shutil
import socket
import tempfile
import time

TEMP_PREFIX = ".tmp-"
_TEMP_NAME = re.compile(r"^\.tmp-[^/]*?-(?P<host>[^/]+)\.(?P<pid>\d+)-[^-]+$")
# Temporary directories in the old format (no host and pid) are removed after this long.
_LEGACY_STALE_S = 24 * 3600


def _host():
    return socket.gethostname().replace("/", "_") or "localhost"


def temp_prefix(tag):
    """``.tmp-<tag>-<host>.<pid>-``: the prefix of this process's temporary directories."""
    return f"{TEMP_PREFIX}{tag}-{_host()}.{os.getpid()}-"


def pid_alive(pid):
    """Whether process `pid` (an int) runs on this host."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or no pid at all
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temp_dirs(model_dir):
    """Remove temporary directories that killed exports left in `model_dir`; returns their names.

    A directory is stale when its process (named in it) is gone from this
    host, or, for names without a process, when it is older than a day.
    Directories of live exporters, and of other hosts, are kept.
    """
    if not os.path.isdir(model_dir):
        return []
    removed = []
    for entry in os.listdir(model_dir):
        if not entry.startswith(TEMP_PREFIX):
            continue
        path = os.path.join(model_dir, entry)
        match = _TEMP_NAME.match(entry)
        if match:
            stale = match["host"] == _host() and not pid_alive(int(match["pid"]))
        else:
            try:
                stale = time.time() - os.path.getmtime(path) > _LEGACY_STALE_S
            except OSError:
                continue
        if stale:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.remove(path)
                except OSError:
                    continue
            removed.append(entry)
    return removed


def make_readable(path):
    """Directories 0755 and files 0644 under `path` (and `path` itself): readable by every user."""
    os.chmod(path, 0o755)
    for root, dirs, files in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                os.chmod(full, 0o644)


@contextlib.contextmanager
def staging_dir(model_dir, tag="staging"):
    """A scratch directory in `model_dir`, removed on exit (or by the next export if killed)."""
    os.makedirs(model_dir, exist_ok=True)
    path = tempfile.mkdtemp(prefix=temp_prefix(tag), dir=model_dir)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


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
    directory is made readable by every user (`make_readable`) and renamed to
    ``model_dir/<version>``; when it raises, the temporary directory is
    removed and nothing is published. If another
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
    temp_dir = tempfile.mkdtemp(prefix=temp_prefix(chosen), dir=model_dir)
    result = [temp_dir, chosen]
    try:
        yield result
        make_readable(temp_dir)
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
