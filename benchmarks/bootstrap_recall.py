"""The selection's recall estimate on real scores: recall probes vs argmax-only questions.

A finished bootstrapping round whose pool has known labels (a project of
`reproduce_bootstrapping.py`, made with ``init --truth``) is scored again with
its own model, keeping every candidate's category probabilities. The true
recall of the round's selection (top confidence > threshold, argmax category)
is counted from the labels; then ``--repeats`` uniform samples of
``uniform_share`` of the candidates are drawn, each candidate asks its recall
probe (`selection.draw_probes` at each ``--probe-shares`` value; 0 = the
argmax only), a simulated labeler answers from the labels (``--error-rate``
of the answers flipped), and `Store.selection_quality`'s estimator turns
the answers into a recall estimate with its 95% interval. With ``--gold G``
(default 200) the labeler also answers G gold items, half of whose right
answer is reject, flipped alike, and the estimates corrected by the error
rates measured on them (`stats.corrected_ratio`, `corrected_proportion`)
are reported beside the raw ones. Reported per probe share: the estimates'
mean, bias, standard deviation, the interval's coverage of the true value
and its mean width, for recall and precision, raw and corrected.

The project database is copied first (opening it migrates an older schema;
the original is left as it is).

    python benchmarks/bootstrap_recall.py --db /tmp/bootstrap_repro/runs/seed0_err0/project.db
"""

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def simulate(probabilities, truth, threshold, probe_share, uniform_share, error_rate, repeats,
             seed=0, gold=0):
    """Estimates of the selection's precision and recall over `repeats` uniform samples.

    probabilities: [n, N] category probabilities; truth: [n] category index, -1 for an
    image of none; gold: gold items answered per sample (half right answer reject), whose
    error rates correct the estimates (0: no correction). Returns the true values and, per
    quantity, the list of estimate dicts.
    """
    from keras_fgvc.bootstrap import selection
    from keras_fgvc.bootstrap.stats import proportion
    from keras_fgvc.bootstrap.store_reports import _quality

    p = np.asarray(probabilities, np.float64)
    truth = np.asarray(truth)
    argmax, selected = p.argmax(axis=1), p.max(axis=1) > threshold
    hit = selected & (argmax == truth)
    true = {"recall": hit.sum() / max((truth >= 0).sum(), 1),
            "precision": hit.sum() / max(selected.sum(), 1)}
    if gold:
        true.update(recall_corrected=true["recall"], precision_corrected=true["precision"])
    rng = np.random.default_rng(seed)
    size = max(2, int(round(uniform_share * len(p))))
    estimates = {key: [] for key in true}
    for _ in range(repeats):
        sample = rng.choice(len(p), size, replace=False)
        column, q, _ = selection.draw_probes(p[sample], probe_share, rng.random(size))
        right = truth[sample] == column
        flip = rng.random(size) < error_rate
        rows = [(bool(selected[i]), bool(c == argmax[i]),
                 "accept" if r != f else "reject", float(chance))
                for i, c, chance, r, f in zip(sample, column, q, right, flip)]
        errors = None
        if gold:
            negatives = gold // 2
            errors = {"false_accept": proportion(int(rng.binomial(negatives, error_rate)),
                                                 negatives),
                      "false_reject": proportion(
                          int(rng.binomial(gold - negatives, error_rate)), gold - negatives)}
        quality = _quality({}, rows, errors)
        for key in estimates:
            estimates[key].append(quality[key])
    return true, estimates


def summarise(true, estimates):
    """Mean, bias, std and mean width over the draws that gave an estimate; coverage over
    all draws (one without an estimate counts as a miss); how many gave none."""
    out = {}
    for key, values in estimates.items():
        value = np.array([e["value"] for e in values if e["value"] is not None])
        covered = [e["value"] is not None and e["low"] <= true[key] <= e["high"]
                   for e in values]
        width = [e["high"] - e["low"] for e in values if e["value"] is not None]
        out[key] = {"true": float(true[key]), "mean": float(value.mean()),
                    "bias": float(value.mean() - true[key]), "std": float(value.std()),
                    "coverage_95": float(np.mean(covered)), "mean_width": float(np.mean(width)),
                    "repeats": len(value), "no_estimate": len(values) - len(value)}
    return out


def score_round(db, round_index, batch_size=256):
    """(probabilities [n, N], truth index [n], threshold, uniform share) of one round."""
    from keras_fgvc.bootstrap import scoring
    from keras_fgvc.bootstrap.store import open_store

    with open_store(db) as store:
        state = store.round(round_index)
        if state is None or not state["workdir"]:
            raise ValueError(f"{db} has no trained round {round_index}")
        settings, categories = store.settings(), store.categories()
        rows = [(i, p, t) for i, p, t in store.images(origin="pool", subset=round_index)]
    if not any(t is not None for _, _, t in rows):
        raise ValueError(f"{db} records no truth for round {round_index}'s pool (init --truth)")
    rows = [r for r in rows if r[2] is not None]
    model, spec, labels = scoring.load_round_model(os.path.join(state["workdir"], "train"))
    columns = scoring.category_columns(labels, categories)
    call = scoring.confidence_call(model, columns, with_probabilities=True)
    names = [c.name for c in categories]
    index = {i: k for k, (i, _, _) in enumerate(rows)}
    probabilities = np.zeros((len(rows), len(names)))
    seen = np.zeros(len(rows), bool)
    for keys, outputs in scoring.predict_files(call, [p for _, p, _ in rows],
                                               [i for i, _, _ in rows], spec,
                                               batch_size=batch_size):
        at = [index[k] for k in keys.tolist()]
        probabilities[at], seen[at] = outputs[2], True
    truth = np.array([names.index(t) if t in names else -1 for _, _, t in rows])
    return (probabilities[seen], truth[seen], settings["threshold"],
            settings["uniform_share"])


def _non_negative(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="a bootstrapping project with --truth")
    parser.add_argument("--round", type=int, default=1)
    parser.add_argument("--probe-shares", default="0,0.25,0.5")
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--gold", type=_non_negative, default=200,
                        help="gold items answered per sample, to correct for errors (0: none)")
    parser.add_argument("--output", default=os.path.join(HERE, "results",
                                                         "bootstrap_recall.json"))
    args = parser.parse_args(argv)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bootstrap_recall_") as scratch:
        copy = os.path.join(scratch, "project.db")
        shutil.copy(args.db, copy)
        probabilities, truth, threshold, uniform_share = score_round(copy, args.round)
    results = {}
    for share in [float(s) for s in args.probe_shares.split(",")]:
        true, estimates = simulate(probabilities, truth, threshold, share, uniform_share,
                                   args.error_rate, args.repeats, gold=args.gold)
        results[f"{share:g}"] = summarise(true, estimates)
        print(f"probe_share {share:g}: " + ", ".join(
            f"{k} true {v['true']:.3f} mean {v['mean']:.3f} coverage {v['coverage_95']:.2f} "
            f"width {v['mean_width']:.3f}" for k, v in results[f"{share:g}"].items()),
            flush=True)
    report = {"benchmark": "bootstrap_recall", "db": os.path.abspath(args.db),
              "round": args.round, "candidates": int(len(truth)),
              "in_categories": int((truth >= 0).sum()), "threshold": threshold,
              "uniform_share": uniform_share, "error_rate": args.error_rate,
              "gold": args.gold,
              "repeats": args.repeats, "by_probe_share": results,
              "seconds": round(time.time() - started, 1),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "python": sys.version.split()[0]}}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=1)
    print(f"Wrote {args.output}")
    return report


if __name__ == "__main__":
    main()
