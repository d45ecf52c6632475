r"""``make demo``: train, compare, export and serve the Fashion-BG rare-class detector.

    python -m keras_fgvc.demo [--artifacts artifacts] [--quick] [--port 0] [--seed 0]

Steps (each prints a numbered header and its time; training shows a progress bar):

1. The Fashion-BG task (rare Dress / Shirt / Bag in a sea of background) and
   its teacher, trained once and cached in ``$KERAS_FGVC_CACHE`` (default
   ``~/.cache/keras_fgvc``).
2. Plain fine-tuning (config ``fashion_bg_ft``).
3. Background splitting + fixed background logit (``fashion_bg_split_fixed``).
   Both fine-tune the teacher's trunk with fresh heads (``init_trunk="teacher"``),
   the paper's protocol.
4. Foreground mAP and F1 of both on the test split (`keras_fgvc.metrics`),
   a precision-recall plot per rare class.
5. Export of the background-splitting detector as the next SavedModel version.
6. The loopback gRPC server in a child process, on a free loopback port; a
   few test images are sent as PNG bytes through the gRPC client; the server
   is shut down (also on error or Ctrl-C; the child also gets SIGTERM if this
   process dies).

Re-running: the trainer resumes a workdir whose ``config.json`` matches the
settings of this run (a finished run is restored and re-evaluated, not
retrained); a workdir written with other settings (``--quick`` vs full,
another ``--seed``) is deleted and trained again. Every run exports the next
version.

Output (``--artifacts``): ``workdirs/<config>/`` (trainer workdirs),
``models/fashion_bg_detector/<version>/`` (+ ``models.config``),
``plots/pr_<class>.png``, ``samples/*.png`` (the images sent),
``server.log`` and ``results.json``.
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

_START = time.perf_counter()
MODEL_NAME = "fashion_bg_detector"
METHODS = (("FT", "fashion_bg_ft"), ("BG-split + fixed bg logit", "fashion_bg_split_fixed"))
# Full run: 600 steps of batch 128 per method (~2.6 passes over the ~29k training images),
# learning rate x0.1 for the last 100; about 430 CPU-seconds in all, install excluded.
# Chosen on the val split: at 500-600 steps BG-split + fixed logit passes FT.
FULL_OVERRIDES = (
    "epochs=6", "steps_per_epoch=100", "batch_size=128", "warmup_epochs=0.25",
    "decay_epochs=[5]", "eval_every_epochs=6", "checkpoint_every_steps=100",
)
# --quick: a tiny end-to-end run (tests).
QUICK_OVERRIDES = (
    "task_kwargs.num_background=1000", "task_kwargs.teacher_size=500",
    "task_kwargs.teacher_epochs=1", "task_kwargs.val_size=500", "max_eval_examples=500",
    "batch_size=64", "epochs=1", "steps_per_epoch=4", "warmup_epochs=0", "decay_epochs=[]",
    "checkpoint_every_steps=1000", "bn_reestimate_batches=2",
)
SAMPLES_PER_CLASS = 2
_SERVER_BOOT = r"""
import ctypes, logging, os, signal, sys
try:  # SIGTERM when the demo dies, however it dies (Linux PR_SET_PDEATHSIG).
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit("demo process gone")
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
from keras_fgvc.serving.server import ServerOptions, run_server
sys.exit(run_server(ServerOptions(port=int(sys.argv[2]), model_name=sys.argv[3],
                                  model_base_path=sys.argv[4])))
"""


class _Steps:
    """Numbered step headers with timings (``timings[name]`` in seconds)."""

    def __init__(self, total):
        self.total, self.index, self.timings, self.cpu = total, 0, {}, {}

    @contextlib.contextmanager
    def __call__(self, name, title):
        self.index += 1
        print(f"\n=== [{self.index}/{self.total}] {title} ===", flush=True)
        start, cpu = time.perf_counter(), _cpu_seconds()
        yield
        self.timings[name] = round(time.perf_counter() - start, 2)
        self.cpu[name] = round(_cpu_seconds() - cpu, 2)
        print(f"--- [{self.index}/{self.total}] done in {self.timings[name]:.1f} s "
              f"(CPU {self.cpu[name]:.1f} s)", flush=True)


def _cpu_seconds():
    """User + system CPU time of this process and its finished children (the server)."""
    return sum(os.times()[:4])


def _write_json(path, value):
    from keras_fgvc.files import write_json

    write_json(path, value)


def _prepare_workdir(workdir, config):
    """Keep `workdir` when it was written with `config` (the trainer resumes it), else delete it."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return "new"
    with open(path) as f:
        if json.load(f) == json.loads(config.to_json()):
            done = os.path.exists(os.path.join(workdir, "metrics.json"))
            return "finished (restored, not retrained)" if done else "resumed"
    print(f"{workdir} was trained with other settings: deleting it, training again.")
    shutil.rmtree(workdir)
    return "new (old settings deleted)"


def _build_task(config):
    """The Fashion-BG task of `config` (with a visible teacher progress bar)."""
    from keras_fgvc.data.fashion_bg import make_fashion_bg

    kwargs = dict(config.task_kwargs)
    if config.task != "fashion_bg" or "background_keep" in kwargs:
        raise ValueError(f"The demo needs a plain fashion_bg task, got {config.task!r} "
                         f"with {kwargs}.")
    return make_fashion_bg(seed=config.seed, data_dir=config.data_dir or None, verbose=1,
                           **kwargs)


def _train(config, task, workdir):
    """Train (or resume) `config`; returns test probabilities, labels and val thresholds."""
    from keras_fgvc.training import Trainer, make_strategy

    state = _prepare_workdir(workdir, config)
    print(f"config {config.name} -> {workdir} ({state})", flush=True)
    trainer = Trainer(config, make_strategy("one_device"), workdir=workdir, task=task)
    result = trainer.run()
    test = trainer.task.test
    probabilities = trainer.predict(test)
    with open(os.path.join(workdir, "thresholds.json")) as f:
        thresholds = json.load(f)["thresholds"]
    return {"probabilities": probabilities, "labels": test.labels, "thresholds": thresholds,
            "steps": int(result["steps"]), "workdir_state": state, "test_split": test,
            "class_names": list(trainer.task.class_names)}


def _test_metrics(run):
    """Foreground mAP / F1 on the test split with `keras_fgvc.metrics`."""
    import numpy as np

    from keras_fgvc import metrics

    probs, labels = run["probabilities"], run["labels"]
    ap = metrics.per_class_average_precision(probs, labels)
    _, _, f1 = metrics.f1_at_thresholds(probs, labels, np.asarray(run["thresholds"], probs.dtype))
    return {
        "mAP": float(metrics.mean_average_precision(probs, labels)),
        "f1": float(np.nanmean(f1)),  # at the val-chosen thresholds the detector uses
        "f1_argmax": float(metrics.macro_f1(probs, labels)),
        "average_precision": [float(v) for v in ap],
        "f1_per_class": [float(v) for v in f1],
        "num_test_examples": int(len(labels)),
    }


def _print_table(names, results):
    header = f"{'method':<28}{'mAP':>8}{'F1':>8}{'F1 argmax':>11}   AP " + " / ".join(names)
    print(header)
    print("-" * len(header))
    for method, m in results.items():
        per_class = " / ".join(f"{v:.3f}" for v in m["average_precision"])
        print(f"{method:<28}{m['mAP']:>8.3f}{m['f1']:>8.3f}{m['f1_argmax']:>11.3f}   {per_class}")
    print("F1: mean per-class F1 at the thresholds chosen on the val split (the exported "
          "detector's); F1 argmax: argmax over background + rare classes.")


def _plot_pr_curves(runs, results, class_names, directory):
    """One PNG per rare class with both methods' precision-recall curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_fgvc.metrics import precision_recall_curve

    os.makedirs(directory, exist_ok=True)
    paths = []
    for i, name in enumerate(class_names, start=1):
        fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
        for method, run in runs.items():
            precision, recall = precision_recall_curve(run["labels"] == i,
                                                       run["probabilities"][:, i])
            ap = results[method]["average_precision"][i - 1]
            ax.step(recall, precision, where="post", label=f"{method} (AP {ap:.3f})")
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
               title=f"Fashion-BG test: {name}")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
        path = os.path.join(directory, f"pr_{re.sub(r'[^A-Za-z0-9]+', '_', name).lower()}.png")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def _pick_samples(labels, num_classes, seed):
    """`SAMPLES_PER_CLASS` test indices of every class (background included), seeded."""
    import numpy as np

    rng = np.random.default_rng([seed, 6])
    picks = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        picks.extend(rng.choice(members, min(SAMPLES_PER_CLASS, len(members)), replace=False))
    return [int(i) for i in picks]


def _port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class _Server:
    """The loopback server (`keras_fgvc.serving.server`) in a child process."""

    def __init__(self, model_base_path, port, log_path):
        self.log_path = log_path
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _SERVER_BOOT, str(os.getpid()), str(port), MODEL_NAME,
                 model_base_path],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                # Own session: Ctrl-C reaches only the demo, whose clean-up stops the server.
                start_new_session=True)
        self.port = None

    def _log_tail(self, lines=15):
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def wait_for_port(self, timeout_s):
        """The bound gRPC port, read from the server's start-up line."""
        pattern = re.compile(r"Running gRPC ModelServer at [^:\s]+:(\d+) \(pid")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with open(self.log_path, errors="replace") as f:
                found = pattern.search(f.read())
            if found:
                self.port = int(found.group(1))
                return self.port
            if self.proc.poll() is not None:
                raise RuntimeError(f"The model server exited with code {self.proc.returncode}:"
                                   f"\n{self._log_tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"The model server did not start in {timeout_s} s:\n{self._log_tail()}")

    def stop(self, timeout_s=20.0):
        """SIGTERM (graceful shutdown), SIGKILL after `timeout_s`; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _encode_png(image):
    import tensorflow as tf

    return tf.io.encode_png(image).numpy()


def _serve(model_dir, version, split, picks, class_names, local_scores, args, samples_dir):
    """Start the server, wait for `version`, Predict the sample PNGs, stop; returns a report."""
    from keras_fgvc.serving.client import PredictionClient, detections

    os.makedirs(samples_dir, exist_ok=True)
    files, pngs = [], []
    for n, i in enumerate(picks):
        png = _encode_png(split.images[i])
        name = f"{n:02d}_test{i}_{class_names[split.labels[i]].replace(' ', '_').lower()}.png"
        with open(os.path.join(samples_dir, name), "wb") as f:
            f.write(png)
        files.append(name)
        pngs.append(png)
    server = _Server(model_dir, args.port, os.path.join(args.artifacts, "server.log"))
    try:
        port = server.wait_for_port(timeout_s=300)
        print(f"server pid {server.proc.pid} on 127.0.0.1:{port}; waiting for version {version} "
              "to be AVAILABLE (GetModelStatus)", flush=True)
        with PredictionClient(f"127.0.0.1:{port}", timeout_s=60.0) as client:
            served_version = client.wait_until_available(MODEL_NAME, version, timeout_s=300)
            names, thresholds = client.labels(MODEL_NAME, version)
            outputs = client.predict_image_bytes(MODEL_NAME, pngs, version)
        print(f"Predict: {len(pngs)} PNG images -> {MODEL_NAME} version {served_version}")
        served = []
        for n, hits in enumerate(detections(outputs, names)):
            truth = class_names[split.labels[picks[n]]]
            found = ", ".join(f"{c} ({s:.2f})" for c, s in hits) or \
                f"background ({float(outputs['background'][n]):.2f})"
            mark = "ok" if [c for c, _ in hits] == ([] if truth == class_names[0] else [truth]) \
                else "--"
            print(f"  {mark} {files[n]:<34} true: {truth:<11} detected: {found}")
            served.append({"file": files[n], "true_label": truth,
                           "detected": [[c, round(s, 4)] for c, s in hits],
                           "scores": [float(s) for s in outputs["scores"][n]],
                           "background": float(outputs["background"][n])})
    finally:
        exit_code = server.stop()
    diff = float(abs(outputs["scores"] - local_scores).max())
    print(f"server stopped (exit code {exit_code}); served vs Keras scores: max |diff| {diff:.2e}")
    return {"port": port, "version": int(served_version), "class_names": names,
            "thresholds": thresholds, "predictions": served, "server_exit_code": exit_code,
            "port_closed_after_stop": not _port_open(port),
            "max_abs_diff_vs_keras": diff}


def run(args):
    """The demo; returns the results dict (also written to ``results.json``)."""
    from keras_fgvc.training import resolve_config

    args.artifacts = os.path.abspath(args.artifacts)
    os.makedirs(args.artifacts, exist_ok=True)
    overrides = (QUICK_OVERRIDES if args.quick else FULL_OVERRIDES) + (f"seed={args.seed}",)
    configs = {method: resolve_config(name, overrides) for method, name in METHODS}
    steps = _Steps(6)
    with steps("task", "Fashion-BG task + teacher pseudo-labels (cached after the first run)"):
        task = _build_task(configs[METHODS[0][0]])
    runs = {}
    for method, config in configs.items():
        with steps(config.name, f"Train {method} ({config.name}, {config.epochs} epochs x "
                   f"{config.steps_per_epoch} steps, batch {config.batch_size})"):
            runs[method] = _train(config, task,
                                  os.path.join(args.artifacts, "workdirs", config.name))
    detector = runs[METHODS[1][0]]
    class_names = detector["class_names"]
    with steps("evaluate", "Test split: foreground mAP and F1 (keras_fgvc.metrics), PR curves"):
        results = {method: _test_metrics(run) for method, run in runs.items()}
        _print_table(class_names[1:], results)
        plots = _plot_pr_curves(runs, results, class_names[1:],
                                os.path.join(args.artifacts, "plots"))
        print("PR curves: " + ", ".join(os.path.relpath(p, args.artifacts) for p in plots))
    with steps("export", f"Export {METHODS[1][1]} as a SavedModel version"):
        from keras_fgvc.export import export_from_workdir

        models = os.path.join(args.artifacts, "models")
        workdir = os.path.join(args.artifacts, "workdirs", METHODS[1][1])
        export_path = export_from_workdir(workdir, models, MODEL_NAME)
        version = int(os.path.basename(export_path))
        print(f"exported {export_path}")
    with steps("serve", "Serve over gRPC (loopback server) and Predict held-out test images"):
        split = detector["test_split"]
        picks = _pick_samples(split.labels, len(class_names), args.seed)
        serving = _serve(os.path.join(models, MODEL_NAME), version, split, picks, class_names,
                         detector["probabilities"][picks, 1:], args,
                         os.path.join(args.artifacts, "samples"))
    results_json = {
        "quick": bool(args.quick), "seed": args.seed, "overrides": list(overrides),
        "task": task.summary(), "class_names": class_names,
        "methods": {method: {"config": configs[method].name,
                             "workdir": os.path.join("workdirs", configs[method].name),
                             "workdir_state": runs[method]["workdir_state"],
                             "steps": runs[method]["steps"],
                             "val_thresholds": runs[method]["thresholds"], **results[method]}
                    for method in configs},
        "export": {"path": export_path, "model_name": MODEL_NAME, "version": version},
        "plots": [os.path.relpath(p, args.artifacts) for p in plots],
        "serving": serving,
        "timings_s": {**steps.timings, "total": round(time.perf_counter() - _START, 2)},
        "cpu_time_s": {**steps.cpu, "total": round(_cpu_seconds(), 2)},
    }
    _write_json(os.path.join(args.artifacts, "results.json"), results_json)
    return results_json


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m keras_fgvc.demo", description=(
        "Train the Fashion-BG rare-class detector (background splitting + fixed background "
        "logit) and plain fine-tuning, compare them, export and serve the detector."))
    parser.add_argument("--artifacts", default="artifacts", help="output folder")
    parser.add_argument("--quick", action="store_true", help="tiny run (tests)")
    parser.add_argument("--port", type=int, default=0, help="gRPC port (0 = a free one)")
    parser.add_argument("--seed", type=int, default=0, help="data split and training seed")
    args = parser.parse_args(argv)
    if not 0 <= args.port < 65536:
        parser.error(f"--port={args.port} is not in [0, 65535].")
    from keras_fgvc.startup import quiet_tensorflow_import

    quiet_tensorflow_import()  # no CPU-only CUDA / absl start-up noise before our output
    signal.signal(signal.SIGTERM, _raise_interrupt)  # run the clean-up, as on Ctrl-C
    try:
        result = run(args)
    except KeyboardInterrupt:
        print("\nInterrupted; the server (if started) was stopped.", file=sys.stderr)
        return 130
    total = result["timings_s"]["total"]
    print(f"\nDone in {total:.0f} s (CPU {result['cpu_time_s']['total']:.0f} s). "
          f"Results: {os.path.join(args.artifacts, 'results.json')}")
    print(f"Serve it yourself: python serving/server.py --port=8500 --model_name={MODEL_NAME} "
          f"--model_base_path={os.path.join(args.artifacts, 'models', MODEL_NAME)}\n"
          f"  then: python serving/client.py --server 127.0.0.1:8500 --model {MODEL_NAME} "
          f"{os.path.join(args.artifacts, 'samples')}/*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
