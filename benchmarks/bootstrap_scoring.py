"""Candidate scoring speed: `keras_fgvc.bootstrap.scoring` vs ``model.predict`` (goal >= 0.9).

The same model (a round's default, ``bootstrap_triplet_a_hn``: small CNN,
64-d embedding, anchor soft vote; 8 categories) and the same images
(Fashion-MNIST test images written as 28 x 28 PNG files):

- ``scoring``: what ``round`` does, end to end: read each file, decode and
  prepare it with the evaluation preprocessing, predict under the
  tf.distribute strategy (one device), take the top category confidence, and
  write each shard's scores to a SQLite project in one transaction;
- ``predict``: ``model.predict`` on the same image files, read, decoded and
  prepared by the same tf.data map (no strategy, no confidence, no database):
  the goal's baseline, ``ratio_scoring_vs_predict = scoring / predict``;
- ``predict_memory``: ``model.predict`` on the same images already decoded
  and prepared in memory: the model alone, no input cost at all
  (``ratio_scoring_vs_predict_memory``; on a few CPU cores decoding competes
  with the model for them, so this ratio is lower).

Repeats alternate between the three (the machine may be shared); the median
images/s of each is reported, and the median images per second of this
process's CPU time (``images_per_cpu_s``: steadier than wall time when other
jobs share the CPU).

    python benchmarks/bootstrap_scoring.py --quick   # smoke run: 256 images
    python benchmarks/bootstrap_scoring.py    # -> benchmarks/results/bootstrap_scoring.json
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CATEGORIES = 8


def write_images(folder, count):
    """Fashion-MNIST test images as PNG files; returns their paths."""
    from keras_fgvc.data import load_fashion_mnist

    (_, _), (x, _) = load_fashion_mnist()
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"{i // 1000:03d}", f"{i:06d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tf.io.write_file(path, tf.io.encode_png(x[i % len(x)][..., None]))
        paths.append(path)
    return paths


def make_store(db, paths):
    from keras_fgvc.bootstrap.store import open_store

    store = open_store(db, create=True)
    store.init_project({"seed_dir": "/seed", "pool_dir": "/pool", "rounds": 1})
    categories = store.add_categories([(f"class{c}", "") for c in range(CATEGORIES)])
    store.add_images([{"path": p, "origin": "pool", "subset": 1, "truth": None} for p in paths])
    ids = store.image_ids(paths)
    return store, categories, [(ids[p], p) for p in paths]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 images, 1 repeat")
    parser.add_argument("--images", type=int, default=None, help="PNG files (8192)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=None, help="alternating repeats (5)")
    parser.add_argument("--config", default="bootstrap_triplet_a_hn")
    parser.add_argument("--output", default=os.path.join(HERE, "results",
                                                         "bootstrap_scoring.json"))
    args = parser.parse_args(argv)
    count = args.images or (256 if args.quick else 8192)
    repeats = args.repeats or (1 if args.quick else 5)

    from keras_fgvc.bootstrap import scoring
    from keras_fgvc.data import image_ops
    from keras_fgvc.data.preprocessing import decode_and_prepare, make_spec, prepare_image
    from keras_fgvc.models import create_model
    from keras_fgvc.training.experiments import get_config
    from keras_fgvc.training.strategy import make_strategy

    config = get_config(args.config)
    strategy = make_strategy("one_device")
    with strategy.scope():
        model = create_model(config.model, num_classes=CATEGORIES,
                             input_shape=(config.image_size, config.image_size, config.channels),
                             **config.model_kwargs)
    spec = make_spec(config.image_size, config.channels, crop_fraction=1.0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(os.path.join(tmp, "pool"), count)
        store, categories, rows = make_store(os.path.join(tmp, "p.db"), paths)
        call = scoring.confidence_call(model, list(range(CATEGORIES)))
        images = np.stack([prepare_image(image_ops.decode_image(tf.io.read_file(p),
                                                                config.channels), spec)
                           for p in paths])
        files = tf.data.Dataset.from_tensor_slices(paths).map(
            lambda p: decode_and_prepare(tf.io.read_file(p), spec),
            num_parallel_calls=tf.data.AUTOTUNE).batch(args.batch_size).prefetch(
            tf.data.AUTOTUNE)
        rates = {"scoring": [], "predict": [], "predict_memory": []}
        cpu_rates = {name: [] for name in rates}  # per second of this process's CPU time
        for repeat in range(repeats + 1):  # repeat 0 warms everything up (traces), not counted
            store.start_round(repeat + 1)
            started, cpu = time.perf_counter(), time.process_time()
            summary = scoring.score_subset(store, repeat + 1, rows, call, spec, categories,
                                           strategy, args.shard_size, args.batch_size, verbose=0)
            seconds = {"scoring": (time.perf_counter() - started, time.process_time() - cpu)}
            assert summary["scored_now"] == count, summary
            for name, data in (("predict", files), ("predict_memory", images)):
                started, cpu = time.perf_counter(), time.process_time()
                model.predict(data, batch_size=None if name == "predict" else args.batch_size,
                              verbose=0)
                seconds[name] = (time.perf_counter() - started, time.process_time() - cpu)
            if repeat:
                for name, (wall, used) in seconds.items():
                    rates[name].append(count / wall)
                    cpu_rates[name].append(count / used)
        store.close()
    median = {k: statistics.median(v) for k, v in rates.items()}
    cpu_median = {k: statistics.median(v) for k, v in cpu_rates.items()}
    report = {
        "benchmark": "bootstrap_scoring",
        "what": "round scoring (files -> evaluation preprocessing -> model under one_device "
                "-> top category confidence -> SQLite, one transaction per shard) vs "
                "model.predict on the same images prepared in memory",
        "images": count, "batch_size": args.batch_size, "shard_size": args.shard_size,
        "repeats": repeats, "config": args.config, "model": config.model,
        "images_per_s": median, "all_images_per_s": rates,
        "ratio_scoring_vs_predict": median["scoring"] / median["predict"], "goal": 0.9,
        "ratio_scoring_vs_predict_memory": median["scoring"] / median["predict_memory"],
        "images_per_cpu_s": cpu_median, "all_images_per_cpu_s": cpu_rates,
        "cpu_ratio_scoring_vs_predict": cpu_median["scoring"] / cpu_median["predict"],
        "cpu_ratio_scoring_vs_predict_memory": (cpu_median["scoring"]
                                                / cpu_median["predict_memory"]),
        "device": ("GPU: " + ", ".join(d.name for d in tf.config.list_physical_devices("GPU"))
                   if tf.config.list_physical_devices("GPU") else f"CPU ({os.cpu_count()} cores)"),
        "tensorflow": tf.__version__, "python": sys.version.split()[0],
        "platform": platform.platform(), "quick": args.quick,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps({k: report[k] for k in (
        "images_per_s", "ratio_scoring_vs_predict", "ratio_scoring_vs_predict_memory",
        "cpu_ratio_scoring_vs_predict", "cpu_ratio_scoring_vs_predict_memory", "device")},
        indent=2))
    return report


if __name__ == "__main__":
    main()
