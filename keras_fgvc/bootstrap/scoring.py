"""Scoring a round's candidates C_i: batched, under tf.distribute, resumable by shard.

Dissertation Sec. 2.2.2: "using this classifier, we assigned each candidate
image x in C_i to one of the N categories". Each candidate file is read,
decoded and prepared exactly as the trainer's evaluation prepares images
(`keras_fgvc.data.preprocessing.decode_and_prepare` with the round's
``preprocessing.json``), the model gives its class probabilities, and the
candidate is assigned to the category with the highest confidence, the
probability in that category's column (`category_columns`: background and
the hard-negative classes of the softmax baselines are left out, so their
mass only lowers the categories' confidences).

Resumable: C_i, ordered by image id, is cut into shards of ``shard_size``
images; a shard's scores and its "scored" mark are written in one
transaction (`Store.add_scores`), so after a kill only the shards not yet
marked are scored again and no image is counted twice. Files that cannot be
read are skipped (counted, never fatal). Batches run under the round's
`tf.distribute` strategy (`strategy.run` over a distributed dataset).
"""

import os
import sys
import time

import numpy as np
import tensorflow as tf

from keras_fgvc.bootstrap import selection

SHARD_SIZE = 1024
BATCH_SIZE = 256


def category_columns(labels, categories):
    """The output column of each category (by index), from the model's class names."""
    labels = list(labels)
    missing = [c.name for c in categories if c.name not in labels]
    if missing:
        raise ValueError(f"the model's classes {labels} lack the categories {missing}.")
    return [labels.index(c.name) for c in categories]


def load_round_model(train_dir, strategy=None):
    """``(model, preprocessing spec, class names)`` of a trained round workdir."""
    import keras

    import keras_fgvc.layers  # noqa: F401  (register the custom layers and losses)
    import keras_fgvc.losses  # noqa: F401
    import keras_fgvc.models  # noqa: F401
    from keras_fgvc.data.preprocessing import spec_from_json
    from keras_fgvc.export.saved_model import read_workdir

    info = read_workdir(train_dir)
    with open(os.path.join(train_dir, "labels.txt")) as f:
        labels = [line.strip() for line in f if line.strip()]
    scope = strategy.scope() if strategy is not None else _nullcontext()
    with scope:
        model = keras.saving.load_model(info["model_path"])
    return model, spec_from_json(info["preprocessing"]), labels


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def embedding_call(model):
    """``images -> L2-normalised embedding``: the model's ``embedding`` output (metric
    learning), else the features the classifier layer reads (softmax models)."""
    import keras

    outputs = model.output if isinstance(model.output, dict) else {}
    if "embedding" in outputs:
        return lambda images: model(images, training=False)["embedding"]
    try:
        features = keras.Model(model.inputs, model.get_layer("classifier").input)
    except (ValueError, AttributeError):
        raise ValueError("the model has no 'embedding' output and no 'classifier' layer to "
                         "take features from; the nearest labelled images need one.") from None
    return lambda images: tf.math.l2_normalize(features(images, training=False), axis=-1)


def predict_files(call, paths, keys, spec, strategy=None, batch_size=BATCH_SIZE):
    """Yields ``(keys, outputs)`` NumPy batches of ``call(prepared images)`` over the files.

    Files are read and prepared with `decode_and_prepare` (the evaluation
    preprocessing); an unreadable file is dropped, so a batch's `keys` say
    which files it holds. Order is kept. Runs under `strategy`.
    """
    from keras_fgvc.data.preprocessing import decode_and_prepare

    strategy = strategy or tf.distribute.get_strategy()
    if not len(paths):
        return
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(paths, dtype=str),
                                             np.asarray(keys, np.int64)))
    ds = ds.map(lambda p, k: (decode_and_prepare(tf.io.read_file(p), spec), k),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
    ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    @tf.function
    def step(images, batch_keys):
        return strategy.run(lambda x, k: (k, call(x)), args=(images, batch_keys))

    local = strategy.experimental_local_results
    for images, batch_keys in strategy.experimental_distribute_dataset(ds):
        out_keys, outputs = step(images, batch_keys)
        out_keys = np.concatenate([k.numpy() for k in local(out_keys)])
        outputs = tf.nest.map_structure(
            lambda t: np.concatenate([x.numpy() for x in local(t)]), outputs)
        yield out_keys, outputs


def confidence_call(model, columns, with_probabilities=False):
    """``images -> (top confidence, category index)`` over the category columns, and the
    categories' probabilities [B, N] third `with_probabilities` (for the recall probes)."""
    columns = tf.constant(columns, tf.int32)

    def call(images):
        probabilities = tf.gather(model(images, training=False)["probabilities"], columns,
                                  axis=-1)
        out = (tf.reduce_max(probabilities, axis=-1),
               tf.argmax(probabilities, axis=-1, output_type=tf.int32))
        return (*out, probabilities) if with_probabilities else out

    return call


class _Progress:
    """One line per few seconds (a redrawn line on a terminal)."""

    def __init__(self, round_index, total_shards, done, verbose):
        self.round, self.total, self.done, self.verbose = round_index, total_shards, done, verbose
        self.images, self.start, self.last = 0, time.time(), 0.0

    def update(self, shards, images, final=False):
        self.done += shards
        self.images += images
        now = time.time()
        if not self.verbose or (not final and now - self.last < 2.0):
            return
        self.last = now
        rate = self.images / max(now - self.start, 1e-9)
        line = (f"Scoring round {self.round}: {self.done}/{self.total} shards, "
                f"{self.images} images this run, {rate:.0f} images/s")
        tty = sys.stdout.isatty()
        print(("\r" + line) if tty else line, end="\n" if final or not tty else "", flush=True)


def score_subset(store, round_index, rows, call, spec, categories, strategy=None,
                 shard_size=SHARD_SIZE, batch_size=BATCH_SIZE, verbose=1):
    """Score the candidates `rows` (``(image_id, path)`` by id) into the store, shard by shard.

    Args:
        store: the project's `Store`.
        round_index: i.
        rows: C_i as ``(image_id, path)``, ordered by image id (the shard order).
        call: `confidence_call` of the round's model; with its probabilities
            (``with_probabilities=True``) each candidate also gets its recall probe
            (`selection.draw_probes`, the project's ``probe_share`` and seed).
        spec: the evaluation preprocessing spec.
        categories: the store's categories, by index.
        strategy, shard_size, batch_size, verbose: see the module docstring.

    Returns:
        dict: ``shards``, ``scored_now`` (images scored by this call),
        ``unreadable`` (this call), ``skipped_shards`` (already scored before).
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}.")
    shards = [rows[s:s + shard_size] for s in range(0, len(rows), shard_size)]
    done = store.scored_shards(round_index)
    pending = [s for s in range(len(shards)) if s not in done]
    shard_of = {image_id: s for s in pending for image_id, _ in shards[s]}
    ids = [c.id for c in categories]
    results = {s: [] for s in pending}
    progress = _Progress(round_index, len(shards), len(shards) - len(pending), verbose)
    summary = {"shards": len(shards), "scored_now": 0, "unreadable": 0,
               "skipped_shards": len(shards) - len(pending)}

    def flush(upto):
        for s in [s for s in results if s < upto]:
            scored = results.pop(s)
            store.add_scores(round_index, s, scored)
            summary["scored_now"] += len(scored)
            summary["unreadable"] += len(shards[s]) - len(scored)
            progress.update(1, len(scored))

    paths = [path for s in pending for _, path in shards[s]]
    keys = [image_id for s in pending for image_id, _ in shards[s]]
    settings = None
    for batch_keys, outputs in predict_files(call, paths, keys, spec, strategy, batch_size):
        top, index = outputs[0], outputs[1]
        rows = [(image_id, ids[c], float(score)) for image_id, score, c in
                zip(batch_keys.tolist(), top.tolist(), index.tolist())]
        if len(outputs) > 2:
            settings = settings or store.settings()
            # Projects made before the probes existed keep asking the argmax (share 0).
            share, seed = settings.get("probe_share", 0.0), settings["seed"]
            units = selection.probe_units(seed, round_index, batch_keys)
            probe, q, probe_score = selection.draw_probes(outputs[2], share, units, index)
            rows = [(*row, ids[c], float(chance), float(p)) for row, c, chance, p in
                    zip(rows, probe.tolist(), q.tolist(), probe_score.tolist())]
        for row in rows:
            results[shard_of[row[0]]].append(row)
        flush(max(shard_of[k] for k in batch_keys.tolist()))
    flush(len(shards))
    progress.update(0, 0, final=True)
    return summary


def embed(call, rows, spec, strategy=None, batch_size=BATCH_SIZE):
    """``{image_id: embedding}`` of ``(image_id, path)`` rows (unreadable ones left out)."""
    out = {}
    for keys, values in predict_files(call, [p for _, p in rows], [i for i, _ in rows], spec,
                                      strategy, batch_size):
        out.update(zip(keys.tolist(), values))
    return out
