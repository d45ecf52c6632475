"""The demo's steps before serving: task + teacher, train a method, compare, export.

Each step is a function that returns what the next one needs:

    task = build_task(config)                              # 1
    run = train_method(config, task, workdir)              # 2, 3 (one per method)
    results, plots = compare({"FT": run, ...}, plots_dir)  # 4
    export_path, version = export_detector(workdir, models_dir)  # 5

then `keras_fgvc.demo.serve.serve_and_query` (6). TensorFlow is imported by
the steps themselves, so importing this module stays cheap.
"""

import os
import re
import shutil

MODEL_NAME = "fashion_bg_detector"
METHODS = (("FT", "fashion_bg_ft"), ("BG-split + fixed bg logit", "fashion_bg_split_fixed"))
DETECTOR_METHOD, DETECTOR_CONFIG = METHODS[1]  # the method that is exported and served
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


def method_configs(quick=False, seed=0):
    """``(overrides, {method: Config})`` of the demo's two methods."""
    from keras_fgvc.training import resolve_config

    overrides = (QUICK_OVERRIDES if quick else FULL_OVERRIDES) + (f"seed={seed}",)
    return overrides, {method: resolve_config(name, overrides) for method, name in METHODS}


def prepare_workdir(workdir, config):
    """Keep `workdir` when it was written with `config` (the trainer resumes it), else delete it.

    The demo's policy (`keras_fgvc.training.workdir`): any changed field retrains.
    Returns the workdir's state as ``results.json`` reports it.
    """
    from keras_fgvc.training.workdir import CONFIG_FILE, config_differences

    if not os.path.exists(os.path.join(workdir, CONFIG_FILE)):
        return "new"
    if not config_differences(workdir, config, ignore=()):
        done = os.path.exists(os.path.join(workdir, "metrics.json"))
        return "finished (restored, not retrained)" if done else "resumed"
    print(f"{workdir} was trained with other settings: deleting it, training again.")
    shutil.rmtree(workdir)
    return "new (old settings deleted)"


def build_task(config):
    """Step 1: the Fashion-BG task of `config` and its teacher (with a visible progress bar)."""
    from keras_fgvc.training.teacher import make_fashion_bg_with_teacher

    kwargs = dict(config.task_kwargs)
    if config.task != "fashion_bg" or "background_keep" in kwargs:
        raise ValueError(f"The demo needs a plain fashion_bg task, got {config.task!r} "
                         f"with {kwargs}.")
    return make_fashion_bg_with_teacher(seed=config.seed, data_dir=config.data_dir or None,
                                        verbose=1, **kwargs)


def train_method(config, task, workdir):
    """Steps 2-3: train (or resume) `config` in `workdir`.

    Returns:
        dict: test ``probabilities`` and ``labels``, the val-chosen
        ``thresholds``, ``steps``, ``workdir_state``, the ``test_split`` and
        ``class_names``.
    """
    import json

    from keras_fgvc.training import Trainer, make_strategy

    state = prepare_workdir(workdir, config)
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


def method_metrics(run):
    """Foreground mAP / F1 of a `train_method` result on the test split (`keras_fgvc.metrics`)."""
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


def print_table(names, results):
    """The methods' mAP / F1 / per-class AP (`names`: the rare classes)."""
    header = f"{'method':<28}{'mAP':>8}{'F1':>8}{'F1 argmax':>11}   AP " + " / ".join(names)
    print(header)
    print("-" * len(header))
    for method, m in results.items():
        per_class = " / ".join(f"{v:.3f}" for v in m["average_precision"])
        print(f"{method:<28}{m['mAP']:>8.3f}{m['f1']:>8.3f}{m['f1_argmax']:>11.3f}   {per_class}")
    print("F1: mean per-class F1 at the thresholds chosen on the val split (the exported "
          "detector's); F1 argmax: argmax over background + rare classes.")


def plot_pr_curves(runs, results, class_names, directory):
    """One PNG per rare class with every method's precision-recall curve; returns the paths."""
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


def compare(runs, plots_dir):
    """Step 4: test metrics of every method (printed as a table) and PR plots in `plots_dir`.

    Args:
        runs: ``{method: train_method(...)}``.

    Returns:
        ``({method: method_metrics(run)}, [plot paths])``.
    """
    results = {method: method_metrics(run) for method, run in runs.items()}
    rare = next(iter(runs.values()))["class_names"][1:]
    print_table(rare, results)
    return results, plot_pr_curves(runs, results, rare, plots_dir)


def export_detector(workdir, models_dir, model_name=MODEL_NAME):
    """Step 5: export `workdir` as the next version of `model_name`; ``(path, version)``."""
    from keras_fgvc.export import export_from_workdir

    export_path = export_from_workdir(workdir, models_dir, model_name)
    print(f"exported {export_path}")
    return export_path, int(os.path.basename(export_path))
