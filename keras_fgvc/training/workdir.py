"""Workdir checks: may this config continue the run already in ``W``?

A workdir's ``config.json`` describes its checkpoints and artifacts (layout:
`artifacts`). Continuing it under another config would mix two runs, so the
trainer, the sweep and the demo all ask this module, each with its policy:

- the trainer (`check_resumable` with the defaults): refuses only a workdir
  that holds checkpoints, and lets `RESUME_SAFE_FIELDS` change;
- the sweep (``ignore=(), require_checkpoints=False``): any ``config.json``
  must match in every field;
- the demo (`config_differences` with ``ignore=()``): retrains on any change.

Imports no TensorFlow unless a checkpoint has to be looked for.

Example:

>>> check_resumable("/tmp/run", resolve_config("fashion_bg_ft"))  # raises on a mismatch
"""

import json
import os

from keras_fgvc.training.config import config_changes, with_defaults

# Fields that only change how a run is executed, watched or logged, not what it trains:
# a workdir may be resumed with them changed (e.g. a larger eval batch on another machine).
RESUME_SAFE_FIELDS = frozenset({
    "description", "data_dir", "eval_batch_size", "eval_every_epochs",
    "checkpoint_every_steps", "keep_checkpoints", "log_every_steps", "steps_per_execution",
    "jit_compile", "eval_flip"})

CONFIG_FILE = "config.json"
_SHOWN = 6  # differing fields spelled out in the error message


def read_config(workdir):
    """``W/config.json`` as a dict, every field it lacks at its default; None when absent.

    A field added to `Config` after the file was written did not exist then, so it
    takes its default. Raises `ValueError` when the file cannot be read.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            values = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is unreadable ({error}); it describes the checkpoints "
                         "in this workdir, so use a new --workdir.") from None
    return with_defaults(values)


def config_differences(workdir, config, ignore=RESUME_SAFE_FIELDS):
    """Sorted fields whose values differ between ``W/config.json`` and `config`.

    `ignore`: fields that may differ (default `RESUME_SAFE_FIELDS`; ``()``: none).
    ``[]`` when the workdir has no ``config.json``.
    """
    old = read_config(workdir)
    return [] if old is None else config_changes(old, config, ignore=ignore)


def check_resumable(workdir, config, ignore=RESUME_SAFE_FIELDS, require_checkpoints=True):
    """Refuse a workdir written by a different config (a `ValueError` naming the fields).

    Args:
        workdir: the run's folder (None or "": nothing to check).
        config: the `Config` about to train there.
        ignore: fields that may differ (see `config_differences`).
        require_checkpoints: check only a workdir that holds checkpoints (the
            trainer); False checks any ``config.json`` (the sweep).
    """
    if not workdir:
        return
    if require_checkpoints:
        from keras_fgvc.training.checkpointing import latest_step

        if not latest_step(workdir):
            return
    changed = config_differences(workdir, config, ignore)
    if not changed:
        return
    old = read_config(workdir)
    detail = ", ".join(f"{k}: {old.get(k)!r} -> {getattr(config, k, None)!r}"
                       for k in changed[:_SHOWN])
    more = f" and {len(changed) - _SHOWN} more" if len(changed) > _SHOWN else ""
    held = "checkpoints" if require_checkpoints else "a run"
    raise ValueError(
        f"{workdir} holds {held} of a different config ({detail}{more}); resuming it would "
        "mix two runs. Use another --workdir, or the same config and --set overrides as "
        "before.")
