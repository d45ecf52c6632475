"""Folder-task benchmark: input pipeline and teacher pseudo-labelling, images per second.

- ``pipeline``: the folder task's training input (`keras_fgvc.training.inputs.
  distributed_dataset`, what the trainer iterates: read, decode, random-resized
  crop, flip, batch) over JPEG / PNG files of varied sizes, against ``bare``: a
  bare ``tf.data`` read + ``decode_image`` + resize + batch of the same files.
  Goal: ``pipeline / bare >= 0.9``.
- ``pseudo_labels``: `keras_fgvc.training.pseudo_labels.teacher_probabilities`
  (decode, resize to the teacher's size, teacher, shard files) against
  ``model.predict`` on the same images already decoded and resized in memory.
  Goal: ``>= 0.9`` (decoding overlaps the teacher's compute).

Rounds alternate between the variants (the machine may be shared); medians are
reported.

    python benchmarks/folder_pipeline.py --quick   # smoke run
    python benchmarks/folder_pipeline.py           # writes benchmarks/results/folder_pipeline.json
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_fgvc.startup import quiet_tensorflow_import  # noqa: E402

quiet_tensorflow_import()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from keras_fgvc.data.folder_task import load_folder_task  # noqa: E402
from keras_fgvc.training import inputs, pseudo_labels  # noqa: E402
from keras_fgvc.training.strategy import make_strategy  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def write_folder(root, n, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        kind = "background" if i % 5 else os.path.join("rare", "spot")
        h, w = int(rng.integers(160, 320)), int(rng.integers(160, 320))
        image = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        path = os.path.join(root, kind, f"g{i % 4}", f"{i:05d}.{'jpg' if i % 3 else 'png'}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        image.save(path)


def teacher_model(size):
    keras.utils.set_random_seed(0)
    inputs_ = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs_)
    for width in (32, 64, 128):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(100, activation="softmax")(x)
    return keras.Model(inputs_, outputs)


def rate(fn, images):
    start = time.perf_counter()
    fn()
    return images / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--images", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "folder_pipeline.json"))
    args = parser.parse_args(argv)
    n = args.images or (120 if args.quick else 1000)
    rounds = args.rounds or (1 if args.quick else 3)
    size, batch, teacher_size = 64, 32, 96
    tmp = tempfile.mkdtemp(prefix="folder_bench_")
    write_folder(os.path.join(tmp, "data"), n)
    task = load_folder_task(os.path.join(tmp, "data"), cache_dir=os.path.join(tmp, "cache"))
    split = task.train
    steps = len(split) // batch
    order = np.arange(steps * batch) % len(split)
    strategy = make_strategy("one_device")
    paths = np.asarray([str(p) for p in split.paths])

    def pipeline():
        ds = inputs.distributed_dataset(strategy, split, order, batch, size, 3, augment=True)
        for _step, _ in zip(range(steps), ds):
            pass

    def bare():
        ds = tf.data.Dataset.from_tensor_slices(paths[order]).map(
            lambda p: tf.image.resize(tf.io.decode_image(tf.io.read_file(p), 3,
                                                         expand_animations=False), (size, size)),
            num_parallel_calls=tf.data.AUTOTUNE).batch(batch).prefetch(tf.data.AUTOTUNE)
        for _ in ds:
            pass

    model = teacher_model(teacher_size)
    teacher_path = os.path.join(tmp, "teacher.keras")
    model.save(teacher_path)
    spec = pseudo_labels.make_spec(teacher_size, 3, crop_fraction=1.0)
    decoded = np.concatenate(list(pseudo_labels.teacher_dataset(split.paths, spec, 64)))
    runs = []

    def label():
        runs.append(len(runs))
        pseudo_labels.teacher_probabilities(teacher_path, split.paths, batch_size=64,
                                            cache_dir=os.path.join(tmp, f"pl{len(runs)}"),
                                            verbose=0)

    def predict():
        model.predict(decoded, batch_size=64, verbose=0)

    pipeline(), bare(), predict()  # warm-up (tracing, file cache)
    results = {k: [] for k in ("pipeline", "bare", "pseudo_labels", "predict")}
    for _ in range(rounds):
        results["pipeline"].append(rate(pipeline, steps * batch))
        results["bare"].append(rate(bare, steps * batch))
        results["pseudo_labels"].append(rate(label, len(split)))
        results["predict"].append(rate(predict, len(split)))
    med = {k: statistics.median(v) for k, v in results.items()}
    report = {
        "benchmark": "folder_pipeline", "images": len(split), "image_size": size,
        "batch_size": batch,
        "teacher_size": teacher_size, "rounds": rounds, "quick": args.quick,
        "images_per_s": med, "runs": results,
        "pipeline_ratio": med["pipeline"] / med["bare"],
        "pseudo_label_ratio": med["pseudo_labels"] / med["predict"],
        "goal": 0.9,
        "meets_goal": bool(min(med["pipeline"] / med["bare"],
                               med["pseudo_labels"] / med["predict"]) >= 0.9),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "tensorflow": tf.__version__},
    }
    print(json.dumps({k: report[k] for k in ("images_per_s", "pipeline_ratio",
                                             "pseudo_label_ratio")}, indent=2))
    if not args.quick or args.output != parser.get_default("output"):
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
