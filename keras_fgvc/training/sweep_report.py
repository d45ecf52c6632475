"""The JSON report, tables and plots of a sweep (`keras_fgvc.training.sweep`).

A run's record holds flat metrics (`flat_metrics`); the seeds of one grid
candidate are summarised by `aggregate` (mean, sample std, the values). The
report (`build_report`) is the ``reproduce_<name>.json`` every script writes;
`publish` writes it with its bar plot (PNG beside it) and prints the table.

Print the table of a written report:

    python -m keras_fgvc.training.sweep_report benchmarks/results/reproduce_<name>.json \
        [--markdown]
"""

import argparse
import json
import math
import os
import platform
import sys

import numpy as np

SELECTION_NOTE = (
    "Hyperparameters (grid candidates) are chosen on the validation split by the mean over "
    "seeds of the selection metric; the test metrics reported are those of the chosen "
    "candidate. The test split is never used for choosing."
)


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


def _environment():
    import keras
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "machine": platform.machine(),
            "cpus": os.cpu_count(), "gpus": len(tf.config.list_physical_devices("GPU"))}


def build_report(args, argv, *, name, description, paper, setting_label, settings, declared,
                 metrics, select_metric, mode, results, paper_results, notes, seeds, elapsed):
    """The ``reproduce_<name>.json`` dict of a finished sweep (`args`: its command line)."""
    report = {
        "benchmark": f"reproduce_{name}",
        "description": description,
        "paper": paper,
        "command": "python " + " ".join([os.path.relpath(sys.argv[0]) if sys.argv else "",
                                         *(argv if argv is not None else sys.argv[1:])]),
        "quick": bool(args.quick),
        "seeds": seeds,
        "setting_label": setting_label,
        "settings": settings,
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
        "elapsed_seconds": round(elapsed, 1),
    }
    if args.quick:
        report["notes"].append("--quick: one seed, a few steps on small subsets; the numbers "
                               "only prove that the pipeline runs.")
    return report


def publish(report, path):
    """Write `report` to `path` and its plot beside it (``.png``); print the table."""
    write_json(path, report)
    png = os.path.splitext(path)[0] + ".png"
    plot(report, png)
    print(format_table(report))
    print(f"Wrote {path} and {png} ({report['elapsed_seconds']:.0f} s).")


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


def main(argv=None):
    """Print the table of a ``reproduce_<name>.json`` (``--markdown``: a Markdown table)."""
    table = argparse.ArgumentParser(description="Print the table of a reproduce_*.json.")
    table.add_argument("json", help="a reproduce_<name>.json written by a script")
    table.add_argument("--markdown", action="store_true", help="a Markdown table")
    table_args = table.parse_args(argv)
    with open(table_args.json) as f:
        print(format_table(json.load(f), markdown=table_args.markdown))


if __name__ == "__main__":
    main()
