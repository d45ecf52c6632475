"""Workdir files, written atomically by `keras_fgvc.files` (temporary file, then rename).

Layout (preamble contract): ``W/config.json``, ``W/checkpoints/``,
``W/model.keras``, ``W/labels.txt``, ``W/thresholds.json``,
``W/preprocessing.json``, ``W/metrics.json``, ``W/tensorboard/``; while a
run is in a later stage, ``W/stage_metrics.json`` (the metrics of the stages
it finished). A crash while writing leaves the previous file intact, never a
half-written one. Reading ``W/config.json`` back is `workdir`'s.
"""

import json
import os

from keras_fgvc.files import atomic_write, write_json, write_text

__all__ = ["atomic_write", "read_stage_metrics", "write_config", "write_json", "write_labels",
           "write_model", "write_results", "write_stage_metrics", "write_text",
           "write_worker_model"]

STAGE_METRICS_FILE = "stage_metrics.json"


def write_model(path, model):
    """Atomically save `model` as a ``.keras`` file."""
    return atomic_write(path, lambda tmp: model.save(tmp), suffix=".keras")


def write_labels(path, class_names):
    """``labels.txt``: one class name per line, in index order."""
    return write_text(path, "".join(f"{name}\n" for name in class_names))


def write_config(workdir, config):
    """``W/config.json``: the config the checkpoints in `workdir` are trained with."""
    return write_text(os.path.join(workdir, "config.json"), config.to_json() + "\n")


def write_stage_metrics(workdir, stage_metrics):
    """``W/stage_metrics.json`` from ``{stage index: {"val", "test"}}``."""
    return write_json(os.path.join(workdir, STAGE_METRICS_FILE),
                      {str(k): v for k, v in stage_metrics.items()})


def read_stage_metrics(workdir):
    """``{stage index: {"val", "test"}}`` of ``W/stage_metrics.json`` ({} when absent)."""
    path = os.path.join(workdir, STAGE_METRICS_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {int(k): v for k, v in json.load(f).items()}


def write_results(workdir, model, class_names, thresholds, preprocessing, metrics):
    """The files of a finished run: ``model.keras``, ``labels.txt``, ``thresholds.json``,
    ``preprocessing.json`` (what the exported ``serving_default`` prepares images
    with, as validation did) and ``metrics.json`` last, once everything else is there."""
    join = lambda name: os.path.join(workdir, name)  # noqa: E731
    write_model(join("model.keras"), model)
    write_labels(join("labels.txt"), class_names)
    write_json(join("thresholds.json"), thresholds)
    write_json(join("preprocessing.json"), preprocessing)
    write_json(join("metrics.json"), metrics)


def write_worker_model(workdir, worker, model):
    """A non-chief worker's final model, in its scratch folder (small; kept so that the
    workers' final weights can be compared). Saving reads every variable, so every
    worker saves; only the chief's copy is the run's."""
    return write_model(os.path.join(workdir, ".scratch", f"worker_{worker}", "model.keras"),
                       model)
