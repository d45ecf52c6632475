"""Dataset bootstrapping with humans in the loop (Cui et al., CVPR 2016; dissertation Table 2.3).

Fashion-MNIST stands in for flowers-620 + Instagram. Per seed:

- categories: 8 of the 10 classes; S_0 = ``--seed-per-class`` training
  images of each (seeded);
- the pool C: the rest of the training split, including every image of the
  2 held-out classes (``--outside``: Shirt and Ankle boot, each confusable with
  categories, as the paper's non-flower and other-species images), written
  as PNG files under ``--workdir`` with a truth CSV; C is cut into k = 3
  subsets, one per round;
- the loop (`keras_fgvc.bootstrap`, Triplet-A + HN rounds): each round trains,
  scores C_i, opens the tasks above 0.5 plus a 10% uniform sample, a simulated
  labeler answers through the HTTP API (0% and 5% of decisions flipped), the
  round is ingested;
- Table 2.3: each method trained on S_0 or on the grown S_k (and H_k), with
  the same budget, and its top-1 accuracy over the 8 categories on their
  Fashion-MNIST test images (8,000).

Reported per error rate (mean and std over seeds): the accuracy of every
method; the gain split into new positives (Triplet-A on S_k minus on S_0)
and hard negatives (Triplet-A + HN minus Triplet-A on S_k), as Table 2.3's
3.4 + 3.5 points, and the same for softmax; per round, the precision and
recall of the > 0.5 selection (against the known truth and as the uniform
sample estimates it) and the human decisions spent per accepted image.

    python benchmarks/reproduce_bootstrapping.py --workdir /tmp/bootstrap_repro \\
        [--seeds 3] [--first-seed 0] [--error-rates 0,0.05] [--quick] [--output PATH]

``--workdir`` makes a run resumable: data, rounds, labels and trainings
already done are reused. Each (seed, error rate) has its own folder under
``--workdir``, so cells can run as separate processes on one workdir
(``--first-seed 1 --seeds 1 --error-rates 0`` is seed 1 at 0% alone); a last
run over every cell then only reads their results and writes the table.
``--merge A.json B.json ...`` writes one table from the reports of cells run
apart (in other processes, or in sessions whose workdirs are gone); their
settings must agree (seeds and error rates aside), and no cell may appear twice.
``--quick``: 1 seed, 5% errors, 5 seed images per category, a pool of 120
in 2 rounds, threshold 0 (every candidate a task, so hard negatives exist),
one training step per model (TF functions run eagerly: cheaper than tracing
them for one step), 400 test images: proves the pipeline, the numbers mean
nothing.
"""

import argparse
import os
import platform
import re
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PAPER = {"Table 2.3, flowers-620 + Ins accuracy (%)": {
    "Softmax (620)": 68.9, "Softmax + HNS (621)": 70.3, "Softmax + HNM (1240)": 70.8,
    "Triplet-A (64)": 70.2, "Triplet-A + HN (64)": 73.7},
    "Table 2.1, flowers-620 (S_0) accuracy (%)": {"Softmax": 65.1, "Triplet-A": 66.8},
    "gain split (points)": {"new positives": 3.4, "hard negatives": 3.5}}
# Every final model gets the same budget (the registered round configs train 200 steps on the
# small S of a round); --set overrides them.
FINAL_BUDGET = ("epochs=5", "steps_per_epoch=200", "decay_epochs=(4,)")
QUICK = ("epochs=1", "steps_per_epoch=1", "batch_size=16", "refresh_every_steps=1",
         "refresh_max_examples=64", "bn_reestimate_batches=0", "warmup_epochs=0",
         "decay_epochs=()", "eval_batch_size=256")


def slug(name):
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def write_data(folder, x, y, categories, outside, per_class, pool_size, seed):
    """SEED/rare/<category>/, POOL/ (nested) and truth.csv for one seed (written once).

    Written into FOLDER.tmp-<pid> and renamed: two processes (two error rates of one
    seed) may write it at once, and the one that renames second keeps the first's.
    """
    from keras_fgvc.data.fashion_mnist import CLASS_NAMES
    from keras_fgvc.training import artifacts

    done = os.path.join(folder, "DONE")
    if os.path.exists(done):
        return folder
    import tensorflow as tf

    tmp = f"{folder}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)

    rng = np.random.default_rng([seed, 23])
    seed_idx = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                               for c in categories])
    rest = np.setdiff1d(np.flatnonzero(np.isin(y, categories + outside)), seed_idx)
    if pool_size:
        rest = np.sort(rng.choice(rest, min(pool_size, len(rest)), replace=False))
    truth = []
    for i in seed_idx:
        path = os.path.join(tmp, "seed", "rare", slug(CLASS_NAMES[y[i]]), f"{i:05d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tf.io.write_file(path, tf.io.encode_png(x[i][..., None]))
    for i in rest:
        relative = os.path.join("pool", f"{i // 1000:02d}", f"{i:05d}.png")
        os.makedirs(os.path.dirname(os.path.join(tmp, relative)), exist_ok=True)
        tf.io.write_file(os.path.join(tmp, relative), tf.io.encode_png(x[i][..., None]))
        label = slug(CLASS_NAMES[y[i]]) if y[i] in categories else "none"
        truth.append(f"{os.path.join(folder, relative)},{label}\n")  # the final path
    artifacts.write_text(os.path.join(tmp, "truth.csv"), "path,label\n" + "".join(truth))
    artifacts.write_text(os.path.join(tmp, "DONE"), f"{len(seed_idx)} seed, {len(rest)} pool\n")
    if os.path.isdir(folder) and not os.path.exists(done):
        shutil.rmtree(folder)  # a partial folder written in place by an older version
    try:
        os.rename(tmp, folder)
    except OSError:
        if not os.path.exists(done):
            raise
        shutil.rmtree(tmp)  # another process renamed its copy first: the same data
    return folder


def _has_rounds(db):
    """Whether `db` holds a project whose first round has started (init must not rerun)."""
    if not os.path.exists(db):
        return False
    from keras_fgvc.bootstrap.store import open_store

    with open_store(db) as store:
        try:
            store.settings()
        except ValueError:  # killed during init: init reruns (it is idempotent)
            return False
        return bool(store.rounds())


def run_one(args, data, test, seed, error_rate, overrides, final_overrides):
    """One project (seed, error rate): the rounds, then every method's test accuracy."""
    from keras_fgvc.bootstrap import experiment
    from keras_fgvc.bootstrap.project import init_project

    folder = os.path.join(args.workdir, "runs", f"seed{seed}_err{error_rate:g}")
    cached = experiment.load_json(os.path.join(folder, "result.json"))
    if cached:
        return cached
    os.makedirs(folder, exist_ok=True)
    db = os.path.join(folder, "project.db")
    if not _has_rounds(db):  # a project whose rounds have begun resumes them as it is
        init_project(db, os.path.join(data, "seed"), os.path.join(data, "pool"), args.rounds,
                     truth=os.path.join(data, "truth.csv"), seed=seed,
                     uniform_share=args.uniform_share, probe_share=args.probe_share,
                     threshold=args.threshold, verbose=not args.quiet)
    rounds = experiment.run_simulated_rounds(db, error_rate, seed=seed, overrides=overrides,
                                             verbose=int(not args.quiet))
    images, labels, names = test
    accuracy = {}
    for method, (config, through) in experiment.METHODS.items():
        if args.methods and method not in args.methods:
            continue
        through = args.rounds if through is None else through
        manifest = os.path.join(folder, "final", f"manifest_s{through}.csv")
        sizes = experiment.write_training_manifest(db, manifest, through)
        workdir = os.path.join(folder, "final", slug(method))
        extra = [o for o in final_overrides if not o.startswith("refresh_")
                 or config.startswith("bootstrap_triplet")]
        experiment.train_method(config, manifest, workdir, extra)
        accuracy[method] = experiment.test_accuracy(workdir, images, labels, names)
        if not args.quiet:
            print(f"seed {seed}, error {error_rate:g}: {method}: {accuracy[method]:.4f} "
                  f"(S: {sum(v['positives'] for v in sizes['categories'].values())}, "
                  f"H: {sizes['hard_negatives_from_decisions']})", flush=True)
    result = {"seed": seed, "error_rate": error_rate, "accuracy": accuracy, "rounds": rounds}
    experiment.save_json(os.path.join(folder, "result.json"), result)
    return result


def _stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    # sample std (ddof 1), as every other table of RESULTS.md; 0 for a single seed
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "std": std, "n": len(values), "values": values}


def summarise(results, error_rates):
    out = {}
    for error_rate in error_rates:
        runs = [r for r in results if r["error_rate"] == error_rate]
        methods = sorted({m for r in runs for m in r["accuracy"]})
        acc = {m: _stats([r["accuracy"].get(m) for r in runs]) for m in methods}

        def gain(a, b, runs=runs):
            return _stats([r["accuracy"][a] - r["accuracy"][b] for r in runs
                           if a in r["accuracy"] and b in r["accuracy"]])

        rounds = {}
        for r in runs:
            for entry in r["rounds"]:
                cell = rounds.setdefault(entry["round"], {})
                for key in ("precision", "recall", "decisions_per_accepted", "selected",
                            "accepted", "hard_negatives", "decisions"):
                    cell.setdefault(key, []).append(entry[key])
                estimate = (entry["uniform_estimate"] or {}).get("precision") or {}
                cell.setdefault("precision_uniform_estimate", []).append(estimate.get("value"))
        out[f"{error_rate:g}"] = {
            "accuracy": acc,
            "gain_triplet_a": {"new_positives": gain("Triplet-A (Sk)", "Triplet-A (S0)"),
                               "hard_negatives": gain("Triplet-A + HN", "Triplet-A (Sk)")},
            "gain_softmax": {"new_positives": gain("Softmax (Sk)", "Softmax (S0)"),
                             "hns": gain("Softmax + HNS", "Softmax (Sk)"),
                             "hnm": gain("Softmax + HNM", "Softmax (Sk)")},
            "rounds": {i: {k: _stats(v) for k, v in cell.items()}
                       for i, cell in sorted(rounds.items())}}
    return out


# Settings that cells run apart may differ in (what a merge puts together); every other setting
# must agree. Reports written before a setting existed hold its default.
MERGE_VARIES = ("seeds", "error_rates")
SETTING_DEFAULTS = {"probe_share": 0.0}


def merge_reports(reports, names):
    """One report from per-cell `reports` (loaded JSON; `names` label them in errors).

    Refused (ValueError): settings that disagree beyond seeds and error rates, and a (seed,
    error rate) cell found twice. The summary is recomputed over every run.
    """
    if not reports:
        raise ValueError("--merge needs at least one report")
    settings = [{**SETTING_DEFAULTS, **r["settings"]} for r in reports]
    for key in sorted(set().union(*settings) - set(MERGE_VARIES)):
        values = {name: s.get(key) for name, s in zip(names, settings)}
        if len({repr(v) for v in values.values()}) > 1:
            raise ValueError(f"cannot merge reports whose setting {key!r} differs: "
                             + ", ".join(f"{n}: {v!r}" for n, v in values.items()))
    runs, seen = [], {}
    for name, report in zip(names, reports):
        for run in report["runs"]:
            cell = (run["seed"], run["error_rate"])
            if cell in seen:
                raise ValueError(f"seed {cell[0]} at error rate {cell[1]:g} is in both "
                                 f"{seen[cell]} and {name}")
            seen[cell] = name
            runs.append(run)
    runs.sort(key=lambda r: (r["seed"], r["error_rate"]))
    error_rates = sorted({r["error_rate"] for r in runs})
    merged = dict(reports[0])
    merged["settings"] = {**settings[0], "seeds": sorted({r["seed"] for r in runs}),
                          "error_rates": error_rates}
    merged.update(summary=summarise(runs, error_rates), runs=runs,
                  seconds=sum(r["seconds"] for r in reports), merged_from=list(names))
    return merged


def _default_output(seeds, error_rates, quick=False):
    """benchmarks/results/reproduce_bootstrapping[_quick][_seeds<a>-<b>_err<rates>].json: the
    suffix names the cells unless they are the whole table (seeds 0-2 at 0% and 5%)."""
    whole = quick or (list(seeds) == [0, 1, 2] and list(error_rates) == [0.0, 0.05])
    cell = "" if whole else (
        f"_seeds{seeds[0]}-{seeds[-1]}_err{'-'.join(f'{e:g}' for e in error_rates)}")
    return os.path.join(HERE, "results",
                        f"reproduce_bootstrapping{'_quick' if quick else ''}{cell}.json")


def _merge_main(paths, output):
    from keras_fgvc.bootstrap.experiment import load_json, save_json

    reports = []
    for path in paths:
        if not os.path.isfile(path):
            raise SystemExit(f"--merge: {path} not found")
        try:
            report = load_json(path)
        except ValueError as error:  # json.JSONDecodeError
            raise SystemExit(f"--merge: {path} is not JSON ({error})") from None
        if not isinstance(report, dict) or report.get("benchmark") != "reproduce_bootstrapping":
            raise SystemExit(f"--merge: {path} is not a reproduce_bootstrapping report")
        reports.append(report)
    try:
        merged = merge_reports(reports, [os.path.basename(p) for p in paths])
    except ValueError as error:
        raise SystemExit(f"--merge: {error}") from None
    if output is None:
        output = _default_output(merged["settings"]["seeds"], merged["settings"]["error_rates"])
    save_json(output, merged)
    print(f"Wrote {output} ({len(merged['runs'])} cells from {len(paths)} reports)")
    return merged


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=None, help="data, projects, models (resumable)")
    parser.add_argument("--output", default=None,
                        help="JSON (default benchmarks/results/reproduce_bootstrapping.json; "
                        "a run of some cells only: ..._seeds<a>-<b>_err<rates>.json)")
    parser.add_argument("--seeds", type=int, default=None, help="3 (--quick: 1)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="run seeds first-seed .. first-seed + seeds - 1 (0)")
    parser.add_argument("--error-rates", default=None, help="0,0.05 (--quick: 0.05)")
    parser.add_argument("--rounds", type=int, default=None, help="k (3; --quick: 2)")
    parser.add_argument("--seed-per-class", type=int, default=None, help="S_0 per category (50)")
    parser.add_argument("--pool-size", type=int, default=None, help="cap on C (0 = all)")
    parser.add_argument("--outside", default="6,9", help="held-out classes (Shirt, Ankle boot)")
    parser.add_argument("--uniform-share", type=float, default=0.1)
    parser.add_argument("--probe-share", type=float, default=0.0,
                        help="init --probe_share (0: uniform tasks ask the argmax, as every "
                             "cell of RESULTS.md's table did; the probes' recall estimate is "
                             "measured by benchmarks/bootstrap_recall.py)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="selection threshold (0.5; --quick: 0, every candidate a task)")
    parser.add_argument("--test-images", type=int, default=None,
                        help="test images used (all 8,000; --quick: 400)")
    parser.add_argument("--methods", default="", help="comma-separated subset of the methods")
    parser.add_argument("--set", action="append", default=[], help="training override")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--merge", nargs="+", metavar="REPORT", default=None,
                        help="write one table from these per-cell reports (no training)")
    args = parser.parse_args(argv)
    if args.merge:
        return _merge_main(args.merge, args.output)
    args.methods = [m for m in args.methods.split(",") if m]
    if args.first_seed < 0:
        parser.error(f"--first-seed must be >= 0, got {args.first_seed}")
    seeds = range(args.first_seed, args.first_seed + (args.seeds or (1 if args.quick else 3)))
    args.rounds = args.rounds or (2 if args.quick else 3)
    error_rates = [float(e) for e in (args.error_rates or ("0.05" if args.quick else "0,0.05"))
                   .split(",")]
    per_class = args.seed_per_class or (5 if args.quick else 50)
    pool_size = args.pool_size if args.pool_size is not None else (120 if args.quick else 0)
    args.threshold = args.threshold if args.threshold is not None else (
        0.0 if args.quick else 0.5)
    overrides = [*(QUICK if args.quick else ()), *args.set]
    final_overrides = [*(QUICK if args.quick else FINAL_BUDGET), *args.set]
    scratch = None
    if not args.workdir:
        scratch = tempfile.TemporaryDirectory(prefix="bootstrap_repro_")
        args.workdir = scratch.name
    output = args.output or _default_output(seeds, error_rates, args.quick)

    from keras_fgvc.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist

    (x, y), (xt, yt) = load_fashion_mnist()
    outside = [int(c) for c in args.outside.split(",")]
    categories = [c for c in range(10) if c not in outside]
    names = sorted(slug(CLASS_NAMES[c]) for c in categories)
    keep = np.isin(yt, categories)
    test_count = args.test_images or (400 if args.quick else 0)
    if test_count:  # a seeded subset (the same for every method and seed)
        chosen = np.random.default_rng(29).choice(np.flatnonzero(keep), test_count,
                                                  replace=False)
        keep = np.isin(np.arange(len(yt)), chosen)
    test_labels = [names.index(slug(CLASS_NAMES[c])) for c in yt[keep]]
    test = (xt[keep], np.asarray(test_labels), names)
    started = time.time()
    results = []
    import tensorflow as tf

    eager = tf.config.functions_run_eagerly()
    # --quick: one step per model, cheaper run eagerly than traced into a graph.
    tf.config.run_functions_eagerly(eager or args.quick)
    try:
        for seed in seeds:
            data = write_data(os.path.join(args.workdir, "data", f"seed{seed}"), x, y,
                              categories, outside, per_class, pool_size, seed)
            for error_rate in error_rates:
                results.append(run_one(args, data, test, seed, error_rate, overrides,
                                       final_overrides))
    finally:
        tf.config.run_functions_eagerly(eager)
    report = {
        "benchmark": "reproduce_bootstrapping",
        "paper": "Cui et al., Fine-grained categorization and dataset bootstrapping using deep "
                 "metric learning with humans in the loop, CVPR 2016 (dissertation Ch. 2, "
                 "Sec. 2.2.2, 2.4.3, Table 2.3)",
        "paper_results": PAPER,
        "settings": {"seeds": list(seeds), "error_rates": error_rates, "rounds": args.rounds,
                     "seed_per_class": per_class, "pool_size": pool_size or "all",
                     "categories": names, "outside": [slug(CLASS_NAMES[c]) for c in outside],
                     "uniform_share": args.uniform_share, "probe_share": args.probe_share,
                     "threshold": args.threshold,
                     "round_overrides": overrides,
                     "final_overrides": final_overrides, "quick": args.quick,
                     "test_images": int(keep.sum())},
        "summary": summarise(results, error_rates), "runs": results,
        "seconds": time.time() - started, "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    from keras_fgvc.bootstrap.experiment import save_json

    save_json(output, report)
    print(f"Wrote {output} ({report['seconds']:.0f} s)")
    if scratch is not None:
        scratch.cleanup()
    return report


if __name__ == "__main__":
    main()
