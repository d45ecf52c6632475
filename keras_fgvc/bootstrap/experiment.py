"""A bootstrapping project run with simulated labelers, and Table 2.3's comparison on its result.

The engine of ``benchmarks/reproduce_bootstrapping.py`` (and of anyone who
wants to know what the loop would give on a data set whose labels are
known): `run_simulated_rounds` runs every round of a project (train, score,
open tasks), labels each round through the HTTP API with
`keras_fgvc.bootstrap.simulate` (a server on a free loopback port) and
ingests it; `round_report` measures each round against the known truth;
`train_method` trains one of Table 2.3's methods on S_0, or on S_k with or
without H_k, and `test_accuracy` scores it on held-out images. Every step is
resumable: a finished round, a closed round's labels and a finished
training are reused.
"""

import json
import os
import threading

import numpy as np

# Table 2.3's methods: (config, training set, hard negatives used).
METHODS = {
    "Softmax (S0)": ("bootstrap_softmax", 0),
    "Softmax (Sk)": ("bootstrap_softmax", None),
    "Softmax + HNS": ("bootstrap_softmax_hns", None),
    "Softmax + HNM": ("bootstrap_softmax_hnm", None),
    "Triplet-A (S0)": ("bootstrap_triplet_a", 0),
    "Triplet-A (Sk)": ("bootstrap_triplet_a", None),
    "Triplet-A + HN": ("bootstrap_triplet_a_hn", None),
}


def _serve_and_label(db, error_rate, labeler, seed):
    from keras_fgvc.bootstrap.simulate import simulate
    from keras_fgvc.bootstrap.web import make_server

    server = make_server(db, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        return simulate(db, f"http://127.0.0.1:{server.server_port}", error_rate, labeler,
                        seed=seed)
    finally:
        server.shutdown()
        server.server_close()
        server.app.extensions["bootstrap_store"].close()
        thread.join(30)


def run_simulated_rounds(db, error_rate, labeler="simulated", seed=0, overrides=(), verbose=1):
    """Every round of the project in `db`: train, score, open, label (HTTP), ingest."""
    from keras_fgvc.bootstrap.rounds import run_round
    from keras_fgvc.bootstrap.store import open_store

    with open_store(db) as store:
        k = store.settings()["rounds"]
    for index in range(1, k + 1):
        with open_store(db) as store:
            state = store.round(index)
        if state and state["status"] == "closed":
            continue
        if not state or state["status"] != "labelling":
            run_round(db, overrides, verbose=verbose)
        labelled = _serve_and_label(db, error_rate, labeler, seed * 1000 + index)
        with open_store(db) as store:
            summary = store.ingest(index)
        if verbose:
            print(f"Round {index}: {labelled['decisions']} decisions "
                  f"({labelled['flipped']} flipped), {summary['accepted']} accepted, "
                  f"{summary['hard_negatives']} hard negatives.", flush=True)
    return round_report(db)


def round_report(db):
    """Per round, against the known truth: the > threshold selection's precision and
    recall, the uniform sample's estimate, human decisions per accepted image."""
    from keras_fgvc.bootstrap.store import open_store

    with open_store(db) as store:
        names = {c.id: c.name for c in store.categories()}
        decisions = {}
        for d in store.iter_decisions():
            decisions[d["round"]] = decisions.get(d["round"], 0) + 1
        report = []
        for state in store.rounds():
            index = state["index"]
            truth = {i: t for i, _, t in store.images(origin="pool", subset=index)}
            outcomes = store.outcomes(index)
            selected = [t for t, _ in outcomes if t["selected"]]
            right = sum(truth.get(t["image_id"]) == t["argmax_category"] for t in selected)
            in_categories = sum(t in names.values() for t in truth.values())
            accepted = sum(o == "accept" for _, o in outcomes)
            quality = store.selection_quality(index)["overall"]
            report.append({
                "round": index, "candidates": len(truth), "tasks": len(outcomes),
                "selected": len(selected),
                "precision": right / len(selected) if selected else None,
                "recall": right / in_categories if in_categories else None,
                "uniform_estimate": quality, "decisions": decisions.get(index, 0),
                "accepted": accepted,
                "decisions_per_accepted": decisions.get(index, 0) / accepted if accepted
                else None,
                "hard_negatives": sum(o == "reject" and t["selected"] and t["asks_argmax"]
                                      for t, o in outcomes)})
    return report


def write_training_manifest(db, path, through_round):
    """The manifest of S_r, background and H_r (r = `through_round`), validation carved."""
    from keras_fgvc.bootstrap.rounds import manifest_text, training_rows
    from keras_fgvc.bootstrap.store import open_store
    from keras_fgvc.training import artifacts

    with open_store(db) as store:
        rows, sizes = training_rows(store, through_round + 1, 0.1, seed=7919)
    artifacts.write_text(path, manifest_text(rows))
    return sizes


def train_method(config_name, manifest, workdir, overrides=(), verbose=0):
    """Train `config_name` on `manifest` in `workdir` (a finished training is reused)."""
    from keras_fgvc.training.experiments import resolve_config
    from keras_fgvc.training.loop import Trainer

    if os.path.exists(os.path.join(workdir, "metrics.json")):
        return workdir
    config = resolve_config(config_name, [*overrides, f"task_kwargs.manifest={manifest}"])
    Trainer(config, workdir=workdir, verbose=verbose).run()
    return workdir


def test_accuracy(workdir, images, labels, category_names, batch_size=512):
    """Top-1 accuracy over the categories of the model in `workdir` on in-memory images.

    Images are prepared with the model's evaluation preprocessing; only the
    categories' columns count (background and hard-negative classes are left
    out, Table 2.3: "only confidence scores from [the] categories").
    """
    import tensorflow as tf

    from keras_fgvc.bootstrap.scoring import load_round_model
    from keras_fgvc.data.preprocessing import prepare_image

    model, spec, classes = load_round_model(workdir)
    columns = [classes.index(n) for n in category_names]
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    predictions = []
    for start in range(0, len(images), batch_size):
        x = prepare_image(tf.constant(images[start:start + batch_size]), spec)
        probabilities = model(x, training=False)["probabilities"].numpy()
        predictions.append(np.argmax(probabilities[:, columns], axis=-1))
    return float(np.mean(np.concatenate(predictions) == np.asarray(labels)))


def save_json(path, value):
    from keras_fgvc.training import artifacts

    artifacts.write_json(path, value)


def load_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
