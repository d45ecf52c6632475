"""The demo (``make demo``, ``python -m keras_fgvc.demo``) as functions callable from Python.

`run` does it all; each step can also be called on its own, each returning
what the next needs:

    from keras_fgvc import demo

    overrides, configs = demo.method_configs(quick=True)
    task = demo.build_task(configs["FT"])                                  # 1. task + teacher
    runs = {m: demo.train_method(c, task, f"artifacts/workdirs/{c.name}")  # 2-3. train
            for m, c in configs.items()}
    results, plots = demo.compare(runs, "artifacts/plots")                 # 4. compare
    path, version = demo.export_detector(                                  # 5. export
        f"artifacts/workdirs/{demo.DETECTOR_CONFIG}", "artifacts/models")
    serving = demo.serve_and_query(runs[demo.DETECTOR_METHOD],             # 6. serve, query
                                   f"artifacts/models/{demo.MODEL_NAME}", version, "artifacts")

Modules: ``steps`` (1-5), ``serve`` (6), ``pipeline`` (`run`: all six, timed,
``results.json``), ``__main__`` (the absl entry point). Importing the package
imports no TensorFlow.
"""

from keras_fgvc.demo.pipeline import StepTimer, run
from keras_fgvc.demo.serve import (
    SAMPLES_PER_CLASS,
    pick_samples,
    serve_and_query,
    start_detector_server,
)
from keras_fgvc.demo.steps import (
    DETECTOR_CONFIG,
    DETECTOR_METHOD,
    FULL_OVERRIDES,
    METHODS,
    MODEL_NAME,
    QUICK_OVERRIDES,
    build_task,
    compare,
    export_detector,
    method_configs,
    method_metrics,
    prepare_workdir,
    train_method,
)

__all__ = [
    "DETECTOR_CONFIG",
    "DETECTOR_METHOD",
    "FULL_OVERRIDES",
    "METHODS",
    "MODEL_NAME",
    "QUICK_OVERRIDES",
    "SAMPLES_PER_CLASS",
    "StepTimer",
    "build_task",
    "compare",
    "export_detector",
    "method_configs",
    "method_metrics",
    "pick_samples",
    "prepare_workdir",
    "run",
    "serve_and_query",
    "start_detector_server",
    "train_method",
]
