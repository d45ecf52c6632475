"""The sweep engine behind the ``benchmarks/reproduce_*.py`` paper reproductions.

Every reproduction is a list of `Method`s (a registered config + ``key=value``
overrides + an optional grid of candidate overrides) evaluated in one or more
settings (background fraction, imbalance factor, batch size ...), each run
through `keras_fgvc.training.Trainer` for several seeds.

Model selection is on the validation split only: for every (setting,
method) each grid candidate is trained for every seed, the candidate with the
best *mean validation* score is chosen, and the *test* metrics reported are
those of the chosen candidate. Test numbers of the other candidates are kept
in the JSON for transparency but never used for choosing.

Command line (every script):

    python benchmarks/reproduce_<name>.py [--seeds 3] [--quick] [--output PATH]
        [--workdir DIR] [--methods a,b] [--settings x,y] [--no-grid] [--verbose]
        [--grid-with KEY=VALUE ...] [--set KEY=VALUE ...] [--full-scale]

``--quick``: one seed, a few steps on small subsets, the first grid candidate
only and the script's quick settings: proves the pipeline end to end (CI),
the numbers mean nothing. ``--no-grid``: only the default candidate of
every grid (cheaper; nothing chosen on val then). ``--grid-with KEY=VALUE``: only
the grid candidates that hold that override (a sub-grid, still chosen on val;
recorded in the JSON). ``--workdir``: keep each run's trainer workdir
(checkpoints, model.keras); a re-run then resumes / reuses finished runs, and a
method that declares ``stage2_only`` fields trains stage 1 once per seed: a new
candidate starts from a finished sibling run's stage-1 checkpoint when the two
configs differ only in those fields (without ``--workdir``, in a scratch folder).

Scale: a script may declare ``budget`` overrides (e.g. a fixed number of
steps per run, or a smaller training set) so that its full run at 3 seeds
fits 2 CPU cores; they are applied to every run, printed, and stored in the JSON
(``budget_overrides``). A dict ``{setting: overrides}`` gives each setting its own
(e.g. steps per epoch that keep the examples per epoch fixed across batch sizes).
``--full-scale`` drops them (the registered configs as they are); ``--set KEY=VALUE``
adds overrides to every run (after the method's own, so they win).
"""

import argparse
import dataclasses
import glob
import json
import math
import os
import platform
import sys
import tempfile
import time

import numpy as np

SELECTION_NOTE = (
    "Hyperparameters (grid candidates) are chosen on the validation split by the mean over "
    "seeds of the selection metric; the test metrics reported are those of the chosen "
    "candidate. The test split is never used for choosing."
)

# A few steps on small subsets: proves the pipeline, numbers are meaningless.
QUICK_OVERRIDES = (
    "epochs=1",
    "steps_per_epoch=1",
    "max_train_examples=512",
    "max_eval_examples=256",
    "eval_batch_size=256",
    "checkpoint_every_steps=1000000",
    "log_every_steps=1000000",
    "warmup_epochs=0",
    "decay_epochs=()",
)
# Fashion-BG in quick mode: a small pool and teacher (trained once per key, then cached).
QUICK_BG_TASK = ("task_kwargs.teacher_size=1000", "task_kwargs.teacher_epochs=1",
                 "task_kwargs.val_size=1000", "task_kwargs.num_background=3000")


EVAL_AT_END = "eval_every_epochs=1000000"


@dataclasses.dataclass
class Method:
    """One row of a table.

    Args:
        name: row label (JSON key).
        config: registered config name.
        overrides: ``key=value`` strings applied to `config`, or a callable
            ``(setting, seed, args) -> list`` for run-time values.
        grid: candidate override lists chosen on val (the first one is the
            default; ``--quick`` uses only it).
        hooks: optional ``() -> list of Hook`` added to the trainer.
        post: optional ``(trainer, record, context) -> None`` that may
            rewrite ``record["val"]`` / ``record["test"]`` (flat metric dicts);
            context: setting, seed, args, hooks and the trainer's ``result``.
        stage2_only: config fields that act only after the first training
            stage (two-stage fine-tuning's stage-2 settings). With ``--workdir``
            (without it, in a scratch folder), a new run starts from the newest
            stage-1 checkpoint of a finished run of the same setting and seed
            whose config differs from its own only in these fields (`share_stage1`),
            so a grid over them trains stage 1 once per seed, not once per candidate.
    """

    name: str
    config: str
    overrides: object = ()
    grid: tuple = ((),)
    hooks: object = None
    post: object = None
    stage2_only: tuple = ()


# === Command line ===


def parse_args(argv, description, name, results_dir="benchmarks/results"):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per configuration")
    parser.add_argument("--quick", action="store_true",
                        help="one seed, few steps, small subsets (CI smoke run)")
    parser.add_argument("--output", default=os.path.join(results_dir, f"reproduce_{name}.json"),
                        help="JSON path (the PNG is written beside it)")
    parser.add_argument("--workdir", default=None,
                        help="keep each run's trainer workdir under this folder")
    parser.add_argument("--methods", default="", help="comma-separated subset of methods")
    parser.add_argument("--settings", default="", help="comma-separated subset of settings")
    parser.add_argument("--no-grid", action="store_true",
                        help="only the first (registered default) candidate of every grid")
    parser.add_argument("--grid-with", dest="grid_with", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="keep only the grid candidates that hold this override "
                             "(repeatable; a sub-grid when the full one is too long)")
    parser.add_argument("--verbose", action="store_true", help="trainer progress bars")
    parser.add_argument("--set", dest="set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every run (repeatable)")
    parser.add_argument("--full-scale", action="store_true",
                        help="drop the script's budget overrides (registered configs as is)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    for flag, values in (("--set", args.set), ("--grid-with", args.grid_with)):
        bad = [o for o in values if "=" not in o]
        if bad:
            parser.error(f"{flag} takes KEY=VALUE, got {', '.join(bad)}")
    if args.grid_with and (args.no_grid or args.quick):
        parser.error("--grid-with picks a sub-grid; --no-grid / --quick run no grid")
    if args.quick:
        args.seeds = 1
    args.budget = ()
    return args


def budget_for(args, setting):
    """The budget overrides of `setting` (``args.budget``: a tuple or ``{setting: tuple}``)."""
    budget = getattr(args, "budget", ())
    return tuple(budget.get(str(setting), ())) if isinstance(budget, dict) else tuple(budget)


def _pick(names, wanted, what):
    if not wanted:
        return list(names)
    chosen = [w.strip() for w in wanted.split(",") if w.strip()]
    unknown = [c for c in chosen if c not in names]
    if unknown:
        raise ValueError(f"Unknown {what} {', '.join(unknown)}; choose from {', '.join(names)}.")
    return [n for n in names if n in chosen]


# === One run ===

_TASKS = {}


def _task_for(config):
    """The config's task, built once per (task, task_kwargs, seed) in this process."""
    from keras_fgvc.training import tasks

    key = (config.task, json.dumps(config.task_kwargs, sort_keys=True), config.seed,
           config.data_dir)
    if key not in _TASKS:
        if len(_TASKS) >= 6:
            _TASKS.pop(next(iter(_TASKS)))
        _TASKS[key] = tasks.build_task(config)
    return _TASKS[key]


def resolve(config_name, overrides, seed, quick):
    """The registered config with `overrides`, the seed and (quick) the smoke-run overrides."""
    from keras_fgvc.training import resolve_config

    overrides = [*overrides, f"seed={seed}"]
    base = resolve_config(config_name, overrides)
    if quick:
        extra = list(QUICK_OVERRIDES)
        if base.task == "fashion_bg":
            extra += [o for o in QUICK_BG_TASK if o.split("=")[0].split(".")[1]
                      not in base.task_kwargs]
        if base.finetune_epochs:
            extra.append("finetune_epochs=1")
        if base.refresh_every_steps:
            extra += ["refresh_every_steps=1", "refresh_max_examples=256"]
        if base.bn_reestimate_batches:  # still exercised, at a smoke run's cost
            extra.append("bn_reestimate_batches=2")
        overrides = [*overrides, *extra]
    return resolve_config(config_name, overrides)


def _check_same_config(workdir, config):
    """Refuse to resume a run whose workdir was written by a different config."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        old = json.load(f)
    from keras_fgvc.training.config import config_changes, with_defaults

    # Fields added to Config since the run was written: their defaults (as in the trainer).
    changed = config_changes(with_defaults(old), config)
    if changed:
        raise ValueError(
            f"{workdir} holds a run of a different config (differs in {', '.join(changed)}); "
            "use another --workdir (or the same --set / --full-scale as before).")


def share_stage1(workdir, config, fields, root, setting):
    """Start `workdir` from a finished sibling run's stage 1; its path, or None.

    Looks at the finished runs (``metrics.json``) under ``root/setting/*/*/`` with
    `workdir`'s seed folder name, takes the first whose ``config.json`` differs from
    `config` only in `fields` (and in fields that never change a run's numbers), and
    copies its newest checkpoint at or before the end of its first stage into
    ``workdir/checkpoints``. The trainer then resumes from that step: the same
    computation as training stage 1 again, since nothing that acts in stage 1
    differs. Does nothing when `workdir` already holds a checkpoint.
    """
    from keras_fgvc.training.checkpointing import checkpoint_steps, copy_checkpoint
    from keras_fgvc.training.config import RESUME_SAFE_FIELDS, config_changes, with_defaults

    if checkpoint_steps(workdir):
        return None
    ignore = set(fields) | set(RESUME_SAFE_FIELDS)
    pattern = os.path.join(glob.escape(os.path.join(root, str(setting))), "*", "*",
                           glob.escape(os.path.basename(workdir)), "metrics.json")
    for metrics_path in sorted(glob.glob(pattern)):
        source = os.path.dirname(metrics_path)
        if os.path.abspath(source) == os.path.abspath(workdir):
            continue
        try:
            with open(os.path.join(source, "config.json")) as f:
                old = with_defaults(json.load(f))
            with open(metrics_path) as f:
                stages = json.load(f).get("stages") or []
        except (OSError, ValueError):
            continue
        if len(stages) < 2 or config_changes(old, config, ignore=ignore):
            continue
        end = int(stages[0]["end_step"])
        steps = [s for s in checkpoint_steps(source) if s <= end]
        if not steps:
            continue
        copy_checkpoint(source, steps[-1], workdir)
        print(f"Stage 1 shared: starting from step {steps[-1]} of {source} (stage 1 ends at "
              f"step {end}; the configs differ at most in {', '.join(sorted(fields))}).",
              flush=True)
        return source
    return None


def flat_metrics(metrics):
    """Float scalars of a metrics dict; nested dicts (head / tail) as ``outer.inner``."""
    out = {}
    for key, value in (metrics or {}).items():
        if isinstance(value, dict):
            for inner, v in flat_metrics(value).items():
                out[f"{key}.{inner}"] = v
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
                value, bool):
            out[key] = float(value)
    return out


def run_one(method, setting, seed, args, candidate=()):
    """Train `method` (+ `candidate` overrides) for `setting` and `seed`; a JSON-safe record."""
    import keras

    from keras_fgvc.training import Trainer, make_strategy

    base = method.overrides(setting, seed, args) if callable(method.overrides) else \
        list(method.overrides)
    overrides = [*budget_for(args, setting), *base, *candidate, *getattr(args, "set", ())]
    # Validation only at the end of each stage (the per-epoch history is not reported).
    config = resolve(method.config, [EVAL_AT_END, *overrides], seed, args.quick)
    workdir = shared = None
    # Without --workdir, a method that shares stage 1 keeps its runs in the scratch folder.
    root = args.workdir or (getattr(args, "scratch", None) if method.stage2_only else None)
    if root:
        label = "_".join(c.replace("=", "-").replace("/", "_") for c in candidate) or "default"
        workdir = os.path.join(root, str(setting), method.name, label[:120], f"seed{seed}")
        _check_same_config(workdir, config)
        if method.stage2_only:
            shared = share_stage1(workdir, config, method.stage2_only, root, setting)
    hooks = method.hooks() if method.hooks else []
    start = time.time()
    keras.utils.clear_session(free_memory=True)
    trainer = Trainer(config, make_strategy("one_device"), workdir=workdir,
                      task=_task_for(config), hooks=hooks, verbose=int(args.verbose))
    result = trainer.run()
    record = {
        "seed": seed,
        "overrides": overrides,
        "steps": int(result["steps"]),
        "val": flat_metrics(result["val"]),
        "test": flat_metrics(result["test"]),
    }
    if shared:
        record["stage1_from"] = os.path.relpath(shared, root)
    if method.post:
        method.post(trainer, record, {"setting": setting, "seed": seed, "args": args,
                                      "hooks": hooks, "result": result})
    record["seconds"] = round(time.time() - start, 2)
    print(f"  [{setting}] {method.name} {' '.join(candidate)} seed={seed}: "
          f"{record['steps']} steps, {record['seconds']:.1f}s", flush=True)
    return record


# === Aggregation and selection ===


def aggregate(records, split):
    """``{metric: {"mean", "std", "values"}}`` over seeds (std: sample std, 0 for one seed)."""
    keys = sorted(set().union(*(r[split] for r in records))) if records else []
    out = {}
    for key in keys:
        values = [r[split].get(key) for r in records]
        finite = [v for v in values if v is not None and math.isfinite(v)]
        mean = float(np.mean(finite)) if finite else None
        std = float(np.std(finite, ddof=1)) if len(finite) > 1 else (0.0 if finite else None)
        out[key] = {"mean": mean, "std": std, "values": values}
    return out


def select(candidates, metric, mode):
    """Index of the candidate with the best mean validation `metric` (`mode` "max" / "min")."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}.")
    scores = []
    for cand in candidates:
        value = cand["val"].get(metric, {}).get("mean")
        if value is None or not math.isfinite(value):
            value = -math.inf if mode == "max" else math.inf
        scores.append(value)
    return int(np.argmax(scores) if mode == "max" else np.argmin(scores))


def evaluate_method(method, setting, seeds, args, select_metric, mode):
    """All grid candidates x seeds of `method` in `setting`; the val-selected summary."""
    grid = list(method.grid)[:1] if args.quick or args.no_grid else list(method.grid)
    wanted = set(getattr(args, "grid_with", ()))
    if wanted and len(grid) > 1:
        grid = [c for c in grid if wanted <= set(c)]
        if not grid:
            raise ValueError(
                f"--grid-with {' '.join(sorted(wanted))} matches no grid candidate of "
                f"{method.name!r}; its candidates are: "
                + "; ".join(" ".join(c) for c in method.grid))
    candidates = []
    for candidate in grid:
        runs = [run_one(method, setting, seed, args, tuple(candidate)) for seed in seeds]
        candidates.append({"overrides": list(candidate), "val": aggregate(runs, "val"),
                           "test": aggregate(runs, "test"), "runs": runs})
    best = select(candidates, select_metric, mode)
    chosen = candidates[best]
    return {
        "config": method.config,
        "overrides": [] if callable(method.overrides) else list(method.overrides),
        "selected_overrides": chosen["overrides"],
        "selected_on": f"val {select_metric} ({mode})",
        "val": chosen["val"],
        "test": chosen["test"],
        "seeds": list(seeds),
        "candidates": [{k: c[k] for k in ("overrides", "val", "test")} for c in candidates],
        "runs": chosen["runs"],
    }


# === Driver ===


def _environment():
    import keras
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "machine": platform.machine(),
            "cpus": os.cpu_count(), "gpus": len(tf.config.list_physical_devices("GPU"))}


def reproduce(argv, *, name, description, paper, settings, methods, metrics,
              select_metric, mode, quick_settings=None, setting_label="setting",
              paper_results=None, notes=(), budget=(), results_dir="benchmarks/results"):
    """Run every (setting, method), write JSON + PNG, print the table; returns the JSON dict.

    Args:
        argv: command-line arguments (None = sys.argv[1:]).
        name: results/reproduce_<name>.json.
        description, paper: what is reproduced (text).
        settings: list of setting labels, or a callable ``(quick) -> list``.
        methods: list of `Method`, or a callable ``(setting, quick) -> list of Method``.
        metrics: test metrics shown in the table and the plot.
        select_metric, mode: the validation metric (and "max" / "min") for choosing.
        quick_settings: the settings used with ``--quick`` (default: the first one).
        paper_results: the paper's numbers, copied into the JSON beside ours.
        notes: deviations / caveats, copied into the JSON.
        budget: overrides applied to every full (not ``--quick``) run unless
            ``--full-scale``, so that 3 seeds fit 2 CPU cores; stored in the JSON.
            A tuple (every setting) or a dict ``{setting: tuple}``.
        results_dir: where ``--output`` defaults to (``reproduce_<name>.json``).
    """
    args = parse_args(argv, description, name, results_dir)
    if not args.quick and not args.full_scale:
        args.budget = ({str(k): tuple(v) for k, v in budget.items()}
                       if isinstance(budget, dict) else tuple(budget))
    if isinstance(args.budget, dict):
        for setting, overrides in args.budget.items():
            print(f"Budget overrides for {setting}: {' '.join(overrides)}", flush=True)
        if args.set:
            print(f"Overrides on every run: {' '.join(args.set)}", flush=True)
    elif args.budget or args.set:
        print(f"Overrides on every run: {' '.join([*args.budget, *args.set])}", flush=True)
    start = time.time()
    all_settings = list(settings)
    if args.quick and not args.settings:
        all_settings = list(quick_settings or all_settings[:1])
    run_settings = _pick([str(s) for s in all_settings], args.settings, "settings")
    methods_of = methods if callable(methods) else (lambda setting, quick: methods)
    seeds = list(range(args.seeds))
    plan = {}  # setting -> (its methods, the names of those run)
    for setting in run_settings:
        rows = methods_of(setting, args.quick)
        plan[setting] = (rows, _pick([m.name for m in rows], args.methods, "methods"))
    if args.grid_with and not any(len(m.grid) > 1 for rows, chosen in plan.values()
                                  for m in rows if m.name in chosen):
        raise ValueError(f"--grid-with {' '.join(args.grid_with)}: none of the methods run "
                         "has a grid to pick candidates from.")
    results, declared = {}, {}
    scratch = None
    if not args.workdir:
        scratch = tempfile.TemporaryDirectory(prefix=f"reproduce_{name}_")
        args.scratch = scratch.name
    else:
        args.scratch = args.workdir
    try:
        for setting, (rows, chosen) in plan.items():
            declared[setting] = chosen
            results[setting] = {}
            for method in rows:
                if method.name in chosen:
                    results[setting][method.name] = evaluate_method(
                        method, setting, seeds, args, select_metric, mode)
    finally:
        if scratch is not None:
            scratch.cleanup()
    report = {
        "benchmark": f"reproduce_{name}",
        "description": description,
        "paper": paper,
        "command": "python " + " ".join([os.path.relpath(sys.argv[0]) if sys.argv else "",
                                         *(argv if argv is not None else sys.argv[1:])]),
        "quick": bool(args.quick),
        "seeds": seeds,
        "setting_label": setting_label,
        "settings": run_settings,
        "methods": declared,
        "metrics": list(metrics),
        "split_reported": "test",
        "selection": SELECTION_NOTE + (" --no-grid / --quick: only the first (default) "
                                       "candidate of every grid was run."
                                       if args.no_grid or args.quick else "")
                     + (" --grid-with: only the grid candidates holding "
                        + ", ".join(args.grid_with) + " were run."
                        if args.grid_with else ""),
        "grid_with": list(args.grid_with),
        "select_metric": f"val {select_metric} ({mode})",
        "budget_overrides": ({k: list(v) for k, v in args.budget.items()}
                             if isinstance(args.budget, dict) else list(args.budget)),
        "extra_overrides": list(args.set),
        "results": results,
        "paper_results": paper_results or {},
        "notes": list(notes),
        "environment": _environment(),
        "elapsed_seconds": round(time.time() - start, 1),
    }
    if args.quick:
        report["notes"].append("--quick: one seed, a few steps on small subsets; the numbers "
                               "only prove that the pipeline runs.")
    write_json(args.output, report)
    png = os.path.splitext(args.output)[0] + ".png"
    plot(report, png)
    print(format_table(report))
    print(f"Wrote {args.output} and {png} ({report['elapsed_seconds']:.0f} s).")
    return report


def write_json(path, report):
    """Atomically write `report` (NaN -> null)."""
    from keras_fgvc.files import write_json as write

    write(path, _json_safe(report), sort_keys=False, allow_nan=False)


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _cell(stats, scale):
    if not stats or stats.get("mean") is None:
        return "-"
    return f"{scale * stats['mean']:.1f}±{scale * (stats['std'] or 0.0):.1f}"


def format_table(report, scale=100.0, markdown=False):
    """A table of methods x (setting, metric), test mean ± std in percent (plain or Markdown)."""
    settings, metrics = report["settings"], report["metrics"]
    methods = []
    for setting in settings:
        methods += [m for m in report["results"].get(setting, {}) if m not in methods]
    header = ["method"] + [f"{s}:{m}" for s in settings for m in metrics]
    rows = [header]
    for method in methods:
        row = [method]
        for setting in settings:
            entry = report["results"].get(setting, {}).get(method)
            for metric in metrics:
                row.append(_cell(entry["test"].get(metric) if entry else None, scale))
        rows.append(row)
    title = (f"{report['benchmark']} (test, %, mean±std over {len(report['seeds'])} seed(s); "
             "hyperparameters chosen on val)")
    if markdown:
        lines = [title, "", "| " + " | ".join(header) + " |",
                 "| " + " | ".join("---" for _ in header) + " |"]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [title]
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(report, path, scale=100.0):
    """Grouped bars (one panel per metric): settings on x, one bar per method, ± std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings, metrics = report["settings"], report["metrics"]
    methods = []
    for setting in settings:
        methods += [m for m in report["results"].get(setting, {}) if m not in methods]
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(6, 1.2 * len(methods)
                                                            * len(settings) / 2 + 3)
                                                        * len(metrics) / 1.5, 4.5),
                             squeeze=False)
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(settings))
    for ax, metric in zip(axes[0], metrics):
        for j, method in enumerate(methods):
            means, stds = [], []
            for setting in settings:
                stats = report["results"].get(setting, {}).get(method, {}).get("test", {}).get(
                    metric) or {}
                means.append(scale * (stats.get("mean") if stats.get("mean") is not None
                                      else np.nan))
                stds.append(scale * (stats.get("std") or 0.0))
            ax.bar(x + (j - (len(methods) - 1) / 2) * width, means, width, yerr=stds,
                   label=method, capsize=2)
        ax.set_xticks(x)
        ax.set_xticklabels(settings, rotation=0)
        ax.set_xlabel(report.get("setting_label", "setting"))
        ax.set_ylabel(f"test {metric} (%)")
        ax.set_title(metric)
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"{report['benchmark']}" + (" (--quick)" if report["quick"] else "")
                 + f", {len(report['seeds'])} seed(s), mean ± std")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    # python -m keras_fgvc.training.sweep benchmarks/results/reproduce_<name>.json [--markdown]
    table = argparse.ArgumentParser(description="Print the table of a reproduce_*.json.")
    table.add_argument("json", help="a reproduce_<name>.json written by a script")
    table.add_argument("--markdown", action="store_true", help="a Markdown table")
    table_args = table.parse_args()
    with open(table_args.json) as f:
        print(format_table(json.load(f), markdown=table_args.markdown))
