"""`round`: train on S_{i-1} and H_{i-1}, score C_i, open the review tasks (Sec. 2.2.2).

Round i runs when round i-1 is ingested (closed); a round killed at any step
resumes where it was when `round` runs again:

1. training set: S_{i-1} (seed positives and accepted candidates, labelled
   with their category), the seed background, and H_{i-1} (rejected selected
   candidates, each a hard negative of the category it was rejected for),
   written to ``<workdir>/round_<i>/manifest.csv``
   (`keras_fgvc.data.bootstrap_manifest`) with validation carved from S
   (`splits.carve_validation`, seeded by the config's seed and i);
2. training through `keras_fgvc.training.Trainer` on the project's config
   (``--set key=value`` overrides as in ``train/fit.py``; recorded in the
   lineage) in ``round_<i>/train``: a killed training resumes from its
   checkpoints, a finished one is reused;
3. scoring C_i (`keras_fgvc.bootstrap.scoring`, resumable by shard);
4. opening the tasks (`keras_fgvc.bootstrap.selection`), each with the 3
   nearest labelled images of its category in the model's embedding.

The round's model version is ``r<i>-<8 hex digits>`` of a hash of its
config and manifest. Its lineage (config, overrides, the S / H sizes per
category and the decisions that built them, what was scored and opened)
goes to the store, to ``round_<i>/lineage.json`` and beside the model in
``round_<i>/train/lineage.json``.
"""

import hashlib
import json
import os
import time

import numpy as np

BACKGROUND = "background"  # keras_fgvc.data.folder_task.BACKGROUND (not imported: no TF here)


class RoundError(ValueError):
    """The project is not in a state where `round` can run; the message says what to do."""


def next_round(store):
    """``(i, resuming)``: the round `round` runs now, or RoundError naming what comes first."""
    settings = store.settings()
    rounds = store.rounds()
    last = rounds[-1] if rounds else None
    if last is not None and last["status"] != "closed":
        if last["status"] == "labelling":
            pending = sum(r["pending"] for r in store.status()["rounds"]
                          if r["index"] == last["index"])
            raise RoundError(
                f"round {last['index']} is open for labelling ({pending} tasks pending); round "
                f"{last['index'] + 1} trains on its decisions: label (serve), then run `ingest`, "
                "then `round`.")
        return last["index"], True
    index = 1 if last is None else last["index"] + 1
    if index > settings["rounds"]:
        raise RoundError(f"all {settings['rounds']} rounds are done (every pool subset was "
                         "scored and ingested); run `export` for the grown data set.")
    if index > 1 and store.round(index - 1) is None:
        raise RoundError(f"round {index - 1} was never run; run `round` for it first.")
    return index, False


def training_rows(store, index, val_fraction, seed):
    """Manifest rows ``(path, label, hard_negative_for, split)`` of S_{i-1}, background, H_{i-1}.

    Validation is carved from S and the background (`splits.carve_validation`).
    Returns (rows, sizes): sizes per category (``seed``, ``positives``,
    ``hard_negatives``), the background count and the decided members.
    """
    from keras_fgvc.data.splits import carve_validation
    from keras_fgvc.data.task import Split

    categories = store.categories()
    names = [c.name for c in categories]
    positives = store.members(index - 1, "positive")
    negatives = store.members(index - 1, "hard_negative")
    background = store.members(index - 1, "background")
    labelled = [(path, names[c]) for _, path, c, _, _ in positives]
    labelled += [(path, BACKGROUND) for _, path, _, _, _ in background]
    label_of = {name: i for i, name in enumerate([*names, BACKGROUND])}
    split = Split(labels=np.asarray([label_of[lab] for _, lab in labelled], np.int64),
                  paths=np.asarray([p for p, _ in labelled], dtype=object))
    val = set()
    if val_fraction:
        _, carved = carve_validation(split, val_fraction, seed)
        val = set(map(str, carved.paths))
    rows = [(path, label, "", "val" if path in val else "train") for path, label in labelled]
    rows += [(path, "", names[c], "train") for _, path, c, _, _ in negatives]
    sizes = {name: {"seed": 0, "positives": 0, "hard_negatives": 0} for name in names}
    for _, _, c, _, r in positives:
        sizes[names[c]]["positives"] += 1
        sizes[names[c]]["seed"] += r == 0
    for _, _, c, _, _ in negatives:
        sizes[names[c]]["hard_negatives"] += 1
    decided = {"positives_from_decisions": sum(r > 0 for *_, r in positives),
               "hard_negatives_from_decisions": len(negatives)}
    return rows, {"categories": sizes, "background": len(background), **decided}


def manifest_text(rows):
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "label", "hard_negative_for", "split"])
    writer.writerows(rows)
    return out.getvalue()


def round_config(settings, manifest, overrides):
    """The resolved training config of a round and the overrides it got (settings' first)."""
    from keras_fgvc.training.experiments import get_config, resolve_config

    base = get_config(settings["config"])
    implied = [f"{key}={settings[key]}" for key in ("image_size", "channels")
               if settings.get(key) and settings[key] != getattr(base, key)]
    overrides = [*implied, *overrides]
    config = resolve_config(settings["config"], [*overrides, f"task_kwargs.manifest={manifest}"])
    if config.task != "bootstrap":
        raise RoundError(f"config {config.name!r} trains task {config.task!r}; a round needs a "
                         "config of task 'bootstrap' (e.g. bootstrap_triplet_a_hn).")
    if config.eval_flip:  # scoring and the nearest-neighbour evidence read the plain model
        raise RoundError("eval_flip is not supported in a bootstrapping round: candidates are "
                         "scored by the model alone; drop --set eval_flip=true.")
    return config, overrides


def _decisions_before(store, index):
    return sum(1 for d in store.iter_decisions() if d["round"] < index)


def _train(config, train_dir, strategy, verbose):
    """Train (resuming), or reuse a finished training of the same config; returns metrics."""
    from keras_fgvc.training.config import config_changes, with_defaults
    from keras_fgvc.training.loop import Trainer
    from keras_fgvc.training.workdir import RESUME_SAFE_FIELDS

    metrics_path = os.path.join(train_dir, "metrics.json")
    if os.path.exists(metrics_path) and os.path.exists(os.path.join(train_dir, "model.keras")):
        with open(os.path.join(train_dir, "config.json")) as f:
            changed = config_changes(with_defaults(json.load(f)), config,
                                     ignore=RESUME_SAFE_FIELDS)
        if changed:
            raise RoundError(f"{train_dir} holds a model trained with another config (changed: "
                             f"{', '.join(changed)}); rerun with the same --set, or delete "
                             f"{train_dir} to train this round again.")
        with open(metrics_path) as f:
            return json.load(f)
    return Trainer(config, strategy, workdir=train_dir, verbose=verbose).run()


def run_round(db, overrides=(), strategy=None, verbose=1, shard_size=None, batch_size=None):
    """Run (or resume) the next round of the project in `db` (module docstring).

    Args:
        db: the project database.
        overrides: ``key=value`` training-config overrides.
        strategy: a `tf.distribute.Strategy` (default: one device).
        verbose: 1 prints progress.
        shard_size, batch_size: scoring shards and batches (default: the
            project's ``shard_size`` setting or 1024; 256).

    Returns:
        dict: round, model_version, the counts of `score_subset`, tasks opened.
    """
    from keras_fgvc.bootstrap import scoring
    from keras_fgvc.bootstrap.store import open_store
    from keras_fgvc.training import artifacts
    from keras_fgvc.training.strategy import make_strategy

    store = open_store(db)
    try:
        settings = store.settings()
        index, resuming = next_round(store)
        workdir = os.path.join(settings["workdir"], f"round_{index}")
        manifest = os.path.join(workdir, "manifest.csv")
        config, overrides = round_config(settings, manifest, list(overrides))
        rows, sizes = training_rows(store, index,
                                    float(config.task_kwargs.get("val_fraction", 0.1)),
                                    config.seed + 7919 * index)
        text = manifest_text(rows)
        digest = hashlib.sha256((config.to_json() + text).encode()).hexdigest()[:8]
        model_version = f"r{index}-{digest}"
        existing = store.round(index)
        if existing and existing.get("model_version") not in (None, model_version):
            raise RoundError(f"round {index} started with model {existing['model_version']}; "
                             f"these settings make {model_version} (another --set or data). "
                             "Rerun with the same --set to resume it.")
        if verbose:
            print(f"Round {index} of {settings['rounds']}{' (resuming)' if resuming else ''}: "
                  f"training {config.name} on {len(rows)} images; model {model_version}",
                  flush=True)
        store.start_round(index, model_version=model_version, workdir=workdir)
        artifacts.write_text(manifest, text)
        strategy = strategy or make_strategy("one_device")
        train_dir = os.path.join(workdir, "train")
        metrics = _train(config, train_dir, strategy, verbose)
        store.update_round(index, status="scoring", model_version=model_version,
                           model_path=os.path.join(train_dir, "model.keras"))
        model, spec, labels = scoring.load_round_model(train_dir, strategy)
        categories = store.categories()
        columns = scoring.category_columns(labels, categories)
        candidates = [(i, p) for i, p, _ in store.images(origin="pool", subset=index)]
        call = scoring.confidence_call(model, columns, with_probabilities=True)
        scored = scoring.score_subset(
            store, index, candidates, call, spec, categories, strategy,
            shard_size or settings.get("shard_size") or scoring.SHARD_SIZE,
            batch_size or scoring.BATCH_SIZE, verbose)
        opened = _open_tasks(store, settings, index, model, spec, strategy, batch_size)
        lineage = {"round": index, "model_version": model_version, "config": config.name,
                   "overrides": overrides, "manifest": manifest, "workdir": workdir,
                   "training_set": sizes, "decisions_before": _decisions_before(store, index),
                   "trained_steps": metrics.get("steps"),
                   "val": {k: v for k, v in (metrics.get("val") or {}).items()
                           if isinstance(v, (int, float))},
                   "scored": len(candidates) - scored["unreadable"], "tasks": opened,
                   "threshold": settings["threshold"], "created_at": time.time()}
        artifacts.write_json(os.path.join(workdir, "lineage.json"), lineage)
        # Beside the model too: the trainer workdir is what an export reads.
        artifacts.write_json(os.path.join(train_dir, "lineage.json"), lineage)
        store.update_round(index, status="labelling", lineage=lineage)
        if verbose:
            print(f"Round {index} is open for labelling: {opened['tasks']} tasks "
                  f"({opened['selected']} above {settings['threshold']}, {opened['uniform']} "
                  f"uniform, {opened['gold']} gold). Next: python -m keras_fgvc.bootstrap serve "
                  f"--db {db}", flush=True)
        return {"round": index, "model_version": model_version, **scored, **opened}
    finally:
        store.close()


def _open_tasks(store, settings, index, model, spec, strategy, batch_size):
    """Choose the tasks from the scores, find their neighbours in S_{i-1}, open them."""
    from keras_fgvc.bootstrap import scoring
    from keras_fgvc.bootstrap.selection import choose_tasks, nearest_labelled

    image_ids, category_ids, scores, probe_ids, _, probe_scores = store.scores(index, True)
    truth = {i: t for i, _, t in store.images(origin="pool", subset=index) if t is not None}
    tasks = choose_tasks(image_ids, category_ids, scores, truth, settings["threshold"],
                         settings["uniform_share"], settings["gold_share"], settings["seed"],
                         index, {c.id: c.name for c in store.categories()},
                         probes=(probe_ids, probe_scores))
    call = scoring.embedding_call(model)
    batch_size = batch_size or scoring.BATCH_SIZE
    paths = dict((i, p) for i, p, _ in store.images(origin="pool", subset=index))
    task_vectors = scoring.embed(call, [(t["image_id"], paths[t["image_id"]]) for t in tasks],
                                 spec, strategy, batch_size)
    by_index = {c.index: c.id for c in store.categories()}
    wanted = {t["category_id"] for t in tasks}
    members = [(i, p, by_index[c]) for i, p, c, _, _ in store.members(index - 1, "positive")
               if by_index[c] in wanted]
    vectors = scoring.embed(call, [(i, p) for i, p, _ in members], spec, strategy, batch_size)
    labelled = {}
    for category_id in wanted:
        ids = [i for i, _, c in members if c == category_id and i in vectors]
        labelled[category_id] = (ids, np.asarray([vectors[i] for i in ids]))
    neighbors = nearest_labelled({t["image_id"]: (t["category_id"], task_vectors[t["image_id"]])
                                  for t in tasks if t["image_id"] in task_vectors}, labelled)
    for task in tasks:
        task["neighbors"] = neighbors.get(task["image_id"], [])
    store.open_tasks(index, tasks)
    return {"tasks": len(tasks), "selected": sum(t["selected"] for t in tasks),
            "uniform": sum(t["uniform"] for t in tasks), "gold": sum(t["gold"] for t in tasks)}
