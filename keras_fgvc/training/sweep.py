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

The command line every script takes (``--quick``, ``--workdir``, ``--grid-with``,
budgets ...) is `sweep_cli`'s; the JSON report, tables and plots are `sweep_report`'s.
"""

import dataclasses
import functools
import glob
import json
import math
import os
import tempfile
import time

import numpy as np

from keras_fgvc.training.sweep_cli import budget_for, parse_args, pick
from keras_fgvc.training.sweep_report import aggregate, build_report, flat_metrics, publish
from keras_fgvc.training.workdir import RESUME_SAFE_FIELDS, check_resumable, read_config

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
# A run folder is reused only by the same config in every field (stricter than the
# trainer's resume check): a table must never mix runs of two settings.
check_workdir = functools.partial(check_resumable, ignore=(), require_checkpoints=False)


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
        if base.head_epochs:
            extra.append("head_epochs=1")
        if base.refresh_every_steps:
            extra += ["refresh_every_steps=1", "refresh_max_examples=256"]
        if base.bn_reestimate_batches:  # still exercised, at a smoke run's cost
            extra.append("bn_reestimate_batches=2")
        overrides = [*overrides, *extra]
    return resolve_config(config_name, overrides)


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
    from keras_fgvc.training.config import config_changes

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
            old = read_config(source)
            with open(metrics_path) as f:
                stages = json.load(f).get("stages") or []
        except (OSError, ValueError):
            continue
        names = [s.get("name") for s in stages]
        if (old is None or "train" not in names[:-1]
                or config_changes(old, config, ignore=ignore)):
            continue
        end = int(stages[names.index("train")]["end_step"])  # a head stage may come first
        steps = [s for s in checkpoint_steps(source) if s <= end]
        if not steps:
            continue
        copy_checkpoint(source, steps[-1], workdir)
        print(f"Stage 1 shared: starting from step {steps[-1]} of {source} (stage 1 ends at "
              f"step {end}; the configs differ at most in {', '.join(sorted(fields))}).",
              flush=True)
        return source
    return None


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
        check_workdir(workdir, config)
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
    run_settings = pick([str(s) for s in all_settings], args.settings, "settings")
    methods_of = methods if callable(methods) else (lambda setting, quick: methods)
    seeds = list(range(args.seeds))
    plan = {}  # setting -> (its methods, the names of those run)
    for setting in run_settings:
        rows = methods_of(setting, args.quick)
        plan[setting] = (rows, pick([m.name for m in rows], args.methods, "methods"))
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
    report = build_report(
        args, argv, name=name, description=description, paper=paper,
        setting_label=setting_label, settings=run_settings, declared=declared, metrics=metrics,
        select_metric=select_metric, mode=mode, results=results, paper_results=paper_results,
        notes=notes, seeds=seeds, elapsed=time.time() - start)
    publish(report, args.output)
    return report


if __name__ == "__main__":
    # python -m keras_fgvc.training.sweep benchmarks/results/reproduce_<name>.json [--markdown]
    from keras_fgvc.training.sweep_report import main

    main()
