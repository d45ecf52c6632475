"""Test metrics of trained workdirs with BatchNorm moving statistics as trained vs re-estimated.

Keras BatchNormalization keeps moving averages with momentum 0.99, started at mean 0 /
variance 1. After S training steps the start still weighs 0.99^S in them (2.7% at 360
steps, 0.7% at 500). That is small, but where a layer's true variance is small it
is not: for the small CNN's first BN the true variance is ~0.02, so after 360 steps the
moving variance is ~2x too large and the model evaluated in inference mode is a different
model from the one trained. This script measures the effect on saved runs: it
re-estimates every BN layer's moving mean / variance as the plain average of the batch
statistics of `--batches` random training batches (`keras_fgvc.training.batchnorm`, no
weight update) and evaluates the test split before and after. Batches are drawn uniformly
from the task's training split (for two-stage runs the trainer used the stage's balanced
subset). Runs trained with ``bn_reestimate_batches`` > 0 (the Fashion-MNIST configs now,
``trainer_bn_reestimate_batches`` in the output) were re-estimated by the trainer already,
so "as_trained" is then the trainer's re-estimate.

    python benchmarks/bn_statistics.py W1 [W2 ...] [--batches 100] [--output PATH]

W is a trainer workdir (``config.json`` + ``model.keras``), e.g. one run folder of
``benchmarks/reproduce_*.py --workdir``.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

METRICS = ("mAP", "top1_accuracy", "macro_f1", "macro_recall")


def test_metrics(model, task, config):
    """Scalar test metrics of `model` on `task.test`, through the trainer's evaluation path."""
    from keras_fgvc.training import evaluation

    images = task.test.images
    probabilities, labels = evaluation.predict_with_labels(
        model, task.test, config.eval_batch_size, config.image_size or images.shape[1],
        images.shape[3] if images.ndim == 4 else 1)
    metrics = evaluation.evaluate(task, labels, probabilities)
    return {k: float(metrics[k]) for k in METRICS if k in metrics}


def _mean_moving_variance(layer):
    import keras

    return float(np.mean(keras.ops.convert_to_numpy(layer.moving_variance)))


def measure(workdir, batches, batch_size, task=None, seed=0):
    """One workdir: metrics as trained and after re-estimation, and the first BN's variance."""
    import keras

    import keras_fgvc.layers  # noqa: F401  (registers the custom layers for loading)
    import keras_fgvc.models  # noqa: F401
    from keras_fgvc.training import tasks
    from keras_fgvc.training.batchnorm import batchnorm_layers, reestimate_batchnorm_from_images
    from keras_fgvc.training.config import Config

    with open(os.path.join(workdir, "config.json")) as f:
        config = Config.from_dict(json.load(f))
    if task is None:
        task = tasks.build_task(config)
    if task.train.images is None:
        raise ValueError(f"{workdir}: the task {config.task!r} reads image files; this "
                         "script needs an in-memory task (Fashion-MNIST based).")
    model = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    layers = batchnorm_layers(model)
    first = _mean_moving_variance(layers[0]) if layers else None
    before = test_metrics(model, task, config)
    reestimated = reestimate_batchnorm_from_images(model, task.train.images, batch_size,
                                                   batches, seed)
    after = test_metrics(model, task, config)
    return {
        "config": config.name,
        "training_steps": config.epochs * config.steps_per_epoch or None,
        "trainer_bn_reestimate_batches": config.bn_reestimate_batches,
        "batchnorm_layers": len(layers),
        "batchnorm_layers_reestimated": reestimated,  # frozen ones (LWS) are not
        "first_bn_mean_moving_variance": {
            "as_trained": first,
            "reestimated": _mean_moving_variance(layers[0]) if layers else None},
        "as_trained": before,
        "reestimated": after,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", help="trainer workdirs")
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="5 batches (a smoke run)")
    parser.add_argument("--output", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", "bn_statistics.json"))
    args = parser.parse_args(argv)
    missing = [w for w in args.workdirs
               if not all(os.path.exists(os.path.join(w, f)) for f in ("config.json",
                                                                      "model.keras"))]
    if missing:
        parser.error(f"not a finished trainer workdir (config.json + model.keras): "
                     f"{', '.join(missing)}")
    batches = 5 if args.quick else args.batches
    start = time.time()
    runs = {}
    for i, workdir in enumerate(args.workdirs, 1):
        runs[workdir] = measure(workdir, batches, args.batch_size)
        row = runs[workdir]
        print(f"[{i}/{len(args.workdirs)}] {workdir}: "
              + ", ".join(f"{k} {row['as_trained'][k]:.3f} -> {row['reestimated'][k]:.3f}"
                          for k in row["as_trained"]), flush=True)
    report = {"benchmark": "bn_statistics", "command": "python " + " ".join(
                  [os.path.relpath(sys.argv[0]) if sys.argv else "",
                   *(argv if argv is not None else sys.argv[1:])]),
              "batches": batches, "batch_size": args.batch_size, "split_reported": "test",
              "runs": runs, "elapsed_seconds": round(time.time() - start, 1)}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"Wrote {args.output}.")
    return report


if __name__ == "__main__":
    main()
