"""Which versions are loaded: polls ``MODEL_BASE/<name>/<version>/`` like TF Serving.

Per model, the version policy (``latest`` N, default 1; ``all``; ``specific``)
picks the aspired versions among those on disk. New aspired versions are loaded
(and warmed up) in the polling thread, then swapped in under a lock; a request
already holding the old servable finishes on it. Old versions are unloaded
only once an aspired version is AVAILABLE, so a version that fails to load
leaves the previous one serving; the failure is logged and reported by
GetModelStatus (state END with the error).

A failed load is retried (TF Serving's ``--max_num_load_retries`` /
``--load_retry_interval_micros``), the interval doubling after each failure,
so a version copied in two steps (``saved_model.pb`` first, ``variables/``
seconds later) loads once it is complete. When the retries are spent, the
version is tried again as soon as its directory changes.
"""

import dataclasses
import logging
import os
import threading
import time

import grpc

from keras_fgvc.export import versions as versions_lib
from keras_fgvc.serving import errors

LOG = logging.getLogger("keras_fgvc.serving")

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"
_MAX_RETRY_INTERVAL_S = 60.0


def directory_fingerprint(path):
    """``(relative path, size, mtime_ns)`` of every file under `path`: changes when it does."""
    entries = []
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except OSError:
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


@dataclasses.dataclass
class _Failures:
    count: int
    next_attempt: float
    fingerprint: tuple


@dataclasses.dataclass
class VersionStatus:
    version: int
    state: str
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""


@dataclasses.dataclass
class ModelSpec:
    """One served model: name, base path and version policy.

    ``policy`` is ``"latest"`` (keep the ``num_versions`` newest), ``"all"`` or
    ``"specific"`` (``versions``).
    """

    name: str
    base_path: str
    policy: str = "latest"
    num_versions: int = 1
    versions: tuple = ()

    @classmethod
    def from_model_config(cls, config):
        """From a ``tensorflow.serving.ModelConfig`` proto."""
        policy = config.model_version_policy
        which = policy.WhichOneof("policy_choice")
        if which == "all":
            return cls(config.name, config.base_path, "all")
        if which == "specific":
            return cls(config.name, config.base_path, "specific",
                       versions=tuple(int(v) for v in policy.specific.versions))
        num = policy.latest.num_versions if which == "latest" else 0
        return cls(config.name, config.base_path, "latest", num_versions=num or 1)

    def aspired(self, on_disk):
        if self.policy == "all":
            return list(on_disk)
        if self.policy == "specific":
            return [v for v in on_disk if v in self.versions]
        return list(on_disk)[-self.num_versions:]


class ModelManager:
    """Loads, swaps and unloads versions of the configured models.

    Args:
        specs: list of `ModelSpec`.
        load_fn: ``fn(name, version, path) -> servable`` (raises on failure);
            servables may have a ``close()``.
        poll_wait_seconds: polling period of `start` (<= 0: poll only once).
        max_num_load_retries: retries of a failed load (at the polls after
            each interval).
        load_retry_interval_s: wait before the first retry; doubles after
            each failure (at most 60 s).
    """

    def __init__(self, specs, load_fn, poll_wait_seconds=1.0, max_num_load_retries=5,
                 load_retry_interval_s=1.0):
        names = [s.name for s in specs]
        if len(set(names)) != len(names) or not all(names):
            raise ValueError(f"Model names must be non-empty and unique, got {names!r}.")
        self._specs = {s.name: s for s in specs}
        self._load_fn = load_fn
        self._poll_wait_seconds = float(poll_wait_seconds)
        self._max_retries = int(max_num_load_retries)
        self._retry_interval_s = float(load_retry_interval_s)
        self._failures = {}  # (name, version) -> _Failures
        self._lock = threading.Lock()
        self._servables = {name: {} for name in self._specs}
        self._status = {name: {} for name in self._specs}
        self._stop = threading.Event()
        self._thread = None

    @property
    def model_names(self):
        with self._lock:
            return sorted(self._specs)

    def update_specs(self, specs):
        """Replace the served models (a re-read models.config): new ones load at the next poll,
        models no longer listed are unloaded; unchanged models keep their loaded versions."""
        new = {s.name: s for s in specs}
        if len(new) != len(specs) or not all(new):
            raise ValueError(f"Model names must be non-empty and unique, got {list(new)!r}.")
        victims = []
        with self._lock:
            for name in list(self._specs):
                if name not in new or new[name].base_path != self._specs[name].base_path:
                    victims += list(self._servables.pop(name, {}).values())
                    self._status.pop(name, None)
            for name in new:
                self._servables.setdefault(name, {})
                self._status.setdefault(name, {})
            self._specs = new
        for servable in victims:
            close = getattr(servable, "close", None)
            if close is not None:
                close()

    # === Requests ===
    def get(self, name, version=None):
        """The servable for `name` (latest loaded version, or `version`); NOT_FOUND otherwise."""
        with self._lock:
            loaded = self._servables.get(name)
            if loaded is not None and version is None and loaded:
                return loaded[max(loaded)]
            if loaded is not None and version is not None and version in loaded:
                return loaded[version]
        what = f"Latest({name})" if version is None else f"Specific({name}, {version})"
        raise errors.not_found(f"Servable not found for request: {what}")

    def status(self, name, version=None):
        """``[VersionStatus]`` for `name` (all known versions, newest first) or one version."""
        with self._lock:
            if name not in self._status or not self._status[name]:
                raise errors.not_found(f"Could not find any versions of model {name}")
            known = self._status[name]
            if version is not None:
                if version not in known:
                    raise errors.not_found(f"Could not find version {version} of model {name}")
                return [dataclasses.replace(known[version])]
            return [dataclasses.replace(known[v]) for v in sorted(known, reverse=True)]

    # === Polling ===
    def poll_once(self):
        """Scan every model's base path once; load new aspired versions, unload old ones."""
        with self._lock:
            specs = list(self._specs.values())
        for spec in specs:
            try:
                on_disk = versions_lib.list_versions(spec.base_path)
            except OSError as err:
                LOG.warning("Cannot list %s for model %s: %s", spec.base_path, spec.name, err)
                continue
            if not on_disk:
                LOG.debug("No versions of model %s found under %s", spec.name, spec.base_path)
            with self._lock:  # forget the failures of versions no longer on disk
                for key in [k for k in self._failures if k[0] == spec.name
                            and k[1] not in on_disk]:
                    del self._failures[key]
            aspired = spec.aspired(on_disk)
            for version in aspired:
                self._maybe_load(spec, version)
            self._unload_unaspired(spec, aspired, on_disk)

    def _retry_due(self, name, version, path):
        """Whether a version that failed to load should be tried again now."""
        failures = self._failures.get((name, version))
        if failures is None:
            return True
        if failures.count <= self._max_retries:
            return time.monotonic() >= failures.next_attempt
        if directory_fingerprint(path) != failures.fingerprint:  # retries spent: until it changes
            failures.count = 0
            return True
        return False

    def _maybe_load(self, spec, version):
        path = f"{spec.base_path.rstrip('/')}/{version}"
        with self._lock:
            if spec.name not in self._status:
                return  # removed from the config meanwhile
            known = self._status[spec.name].get(version)
            if known is not None and known.state != END:
                return  # loaded or loading
            if known is not None and known.error_message and not self._retry_due(
                    spec.name, version, path):
                return  # failed; its next retry is not due
            self._status[spec.name][version] = VersionStatus(version, LOADING)
        LOG.info("Loading servable: {name: %s version: %d}", spec.name, version)
        try:
            servable = self._load_fn(spec.name, version, path)
        except Exception as err:  # noqa: BLE001 - any load failure keeps the old version
            self._load_failed(spec.name, version, path, err)
            return
        with self._lock:
            self._failures.pop((spec.name, version), None)
            removed = spec.name not in self._servables
            if not removed:
                self._servables[spec.name][version] = servable
                self._status[spec.name][version] = VersionStatus(version, AVAILABLE)
        if removed:
            getattr(servable, "close", lambda: None)()
            return
        LOG.info("Successfully loaded servable version {name: %s version: %d}", spec.name, version)

    def _load_failed(self, name, version, path, err):
        message = f"Failed to load servable {name} version {version}: {err}"
        with self._lock:
            failures = self._failures.setdefault((name, version), _Failures(0, 0.0, ()))
            failures.count += 1
            delay = min(self._retry_interval_s * 2 ** (failures.count - 1), _MAX_RETRY_INTERVAL_S)
            failures.next_attempt = time.monotonic() + delay
            failures.fingerprint = directory_fingerprint(path)
            if name in self._status:
                self._status[name][version] = VersionStatus(
                    version, END, grpc.StatusCode.UNKNOWN, message)
        if failures.count <= self._max_retries:
            LOG.error("%s; retry %d of %d in %.1f s", message, failures.count,
                      self._max_retries, delay)
        else:
            LOG.error("%s; retries spent, tried again when the directory changes", message)

    def _unload_unaspired(self, spec, aspired, on_disk):
        with self._lock:
            if spec.name not in self._servables:
                return
            loaded = self._servables[spec.name]
            available_aspired = [v for v in aspired if v in loaded]
            keep = set(available_aspired)
            if not available_aspired:
                # Availability preserving: nothing aspired is up, keep the newest loaded
                # version that is still on disk.
                still_there = [v for v in loaded if v in on_disk]
                if still_there:
                    keep.add(max(still_there))
            victims = [(v, loaded.pop(v)) for v in sorted(loaded) if v not in keep]
            for v, _ in victims:
                self._status[spec.name][v] = VersionStatus(v, END)
        for version, servable in victims:
            LOG.info("Unloading servable version {name: %s version: %d}", spec.name, version)
            close = getattr(servable, "close", None)
            if close is not None:
                close()

    def start(self):
        """Poll once (initial load), then keep polling in a daemon thread."""
        self.poll_once()
        if self._poll_wait_seconds > 0:
            self._thread = threading.Thread(target=self._loop, name="model-poll", daemon=True)
            self._thread.start()

    def _loop(self):
        while not self._stop.wait(self._poll_wait_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - keep polling whatever happens
                LOG.exception("Polling the model base paths failed")

    def stop(self):
        """Stop polling and close every loaded servable."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            servables = [s for loaded in self._servables.values() for s in loaded.values()]
            for loaded in self._servables.values():
                loaded.clear()
        for servable in servables:
            close = getattr(servable, "close", None)
            if close is not None:
                close()
