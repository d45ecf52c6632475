"""The whole demo: its six steps in order, timed, with ``results.json`` written at the end."""

import contextlib
import os
import time

from keras_fgvc.demo.serve import serve_and_query
from keras_fgvc.demo.steps import (
    DETECTOR_CONFIG,
    DETECTOR_METHOD,
    METHODS,
    MODEL_NAME,
    build_task,
    compare,
    export_detector,
    method_configs,
    train_method,
)
from keras_fgvc.files import write_json


def cpu_seconds():
    """User + system CPU time of this process and its finished children (the server)."""
    return sum(os.times()[:4])


class StepTimer:
    """Numbered step headers with timings (``timings[name]``, ``cpu[name]`` in seconds)."""

    def __init__(self, total):
        self.total, self.index, self.timings, self.cpu = total, 0, {}, {}

    @contextlib.contextmanager
    def __call__(self, name, title):
        self.index += 1
        print(f"\n=== [{self.index}/{self.total}] {title} ===", flush=True)
        start, cpu = time.perf_counter(), cpu_seconds()
        yield
        self.timings[name] = round(time.perf_counter() - start, 2)
        self.cpu[name] = round(cpu_seconds() - cpu, 2)
        print(f"--- [{self.index}/{self.total}] done in {self.timings[name]:.1f} s "
              f"(CPU {self.cpu[name]:.1f} s)", flush=True)


def run(artifacts="artifacts", quick=False, port=0, seed=0, started=None):
    """Run the demo into `artifacts`; returns the results dict (also ``results.json``).

    Args:
        artifacts: output folder (see the entry point's docstring for its layout).
        quick: the tiny run of the tests instead of the full one.
        port: gRPC port of the server (0: a free one).
        seed: data split, training and sample seed.
        started: ``time.perf_counter()`` at start-up (the total time counts from it).
    """
    started = time.perf_counter() if started is None else started
    artifacts = os.path.abspath(artifacts)
    os.makedirs(artifacts, exist_ok=True)
    overrides, configs = method_configs(quick, seed)
    timer = StepTimer(6)
    with timer("task", "Fashion-BG task + teacher pseudo-labels (cached after the first run)"):
        task = build_task(configs[METHODS[0][0]])
    runs = {}
    for method, config in configs.items():
        with timer(config.name, f"Train {method} ({config.name}, {config.epochs} epochs x "
                   f"{config.steps_per_epoch} steps, batch {config.batch_size})"):
            runs[method] = train_method(
                config, task, os.path.join(artifacts, "workdirs", config.name))
    detector = runs[DETECTOR_METHOD]
    with timer("evaluate", "Test split: foreground mAP and F1 (keras_fgvc.metrics), PR curves"):
        results, plots = compare(runs, os.path.join(artifacts, "plots"))
        print("PR curves: " + ", ".join(os.path.relpath(p, artifacts) for p in plots))
    models = os.path.join(artifacts, "models")
    with timer("export", f"Export {DETECTOR_CONFIG} as a SavedModel version"):
        export_path, version = export_detector(
            os.path.join(artifacts, "workdirs", DETECTOR_CONFIG), models)
    with timer("serve", "Serve over gRPC (loopback server) and Predict held-out test images"):
        serving = serve_and_query(detector, os.path.join(models, MODEL_NAME),
                                        version, artifacts, port=port, seed=seed)
    results_json = {
        "quick": bool(quick), "seed": seed, "overrides": list(overrides),
        "task": task.summary(), "class_names": detector["class_names"],
        "methods": {method: {"config": configs[method].name,
                             "workdir": os.path.join("workdirs", configs[method].name),
                             "workdir_state": runs[method]["workdir_state"],
                             "steps": runs[method]["steps"],
                             "val_thresholds": runs[method]["thresholds"], **results[method]}
                    for method in configs},
        "export": {"path": export_path, "model_name": MODEL_NAME, "version": version},
        "plots": [os.path.relpath(p, artifacts) for p in plots],
        "serving": serving,
        "timings_s": {**timer.timings, "total": round(time.perf_counter() - started, 2)},
        "cpu_time_s": {**timer.cpu, "total": round(cpu_seconds(), 2)},
    }
    write_json(os.path.join(artifacts, "results.json"), results_json)
    return results_json
