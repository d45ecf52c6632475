"""The command line of every ``benchmarks/reproduce_*.py`` script (`sweep.reproduce`).

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
import os


def parse_args(argv, description, name, results_dir="benchmarks/results"):
    """The parsed flags (``args.budget`` empty: `sweep.reproduce` sets it)."""
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


def pick(names, wanted, what):
    """The names in `wanted` (comma-separated; empty: all), in `names`' order."""
    if not wanted:
        return list(names)
    chosen = [w.strip() for w in wanted.split(",") if w.strip()]
    unknown = [c for c in chosen if c not in names]
    if unknown:
        raise ValueError(f"Unknown {what} {', '.join(unknown)}; choose from {', '.join(names)}.")
    return [n for n in names if n in chosen]
