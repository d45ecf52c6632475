"""What a folder-of-images run shows its user: the task first, the test results last.

`FolderReportHook` (added by `hooks.default_hooks` for ``task="image_folder_bg"``):

- at the start: the task summary (images per rare class and split, the
  background share, skipped files) on stdout, and ``W/skipped.txt`` listing
  every skipped file with the reason (``path<TAB>reason``; empty when none);
- at the end: the test table (per-class AP, and precision / recall / F1 at the
  per-class thresholds chosen on validation, the ones the export applies),
  ``W/pr_<class>.png`` (one precision-recall curve per rare class) and
  ``W/predictions_test.csv``: ``path``, ``label``, then one score column per
  rare class named by the class, the scores the exported ``serving_default``
  gives for the same files (foreground probabilities, columns in label order).
"""

import csv
import io
import os
import re

import numpy as np

from keras_fgvc import metrics
from keras_fgvc.training import artifacts
from keras_fgvc.training.hook import Hook


def _slug(name):
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "class"


def plot_pr_curves(scores, labels, class_names, directory, average_precision):
    """``directory/pr_<class>.png`` for each foreground class; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for c, name in enumerate(class_names):
        precision, recall = metrics.precision_recall_curve(labels == c + 1, scores[:, c])
        fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
        ax.step(recall, precision, where="post", label=f"AP {average_precision[c]:.3f}")
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
               title=f"test: {name} ({int(np.sum(labels == c + 1))} images)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left")
        fig.tight_layout()
        path = os.path.join(directory, f"pr_{_slug(name)}.png")
        artifacts.atomic_write(path, lambda tmp, f=fig: f.savefig(tmp, format="png"),
                               suffix=".png")
        plt.close(fig)
        paths.append(path)
    return paths


def predictions_csv(paths, labels, scores, class_names):
    """The text of ``predictions_test.csv`` (scores written with 9 significant digits)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "label", *class_names])
    all_names = ["background", *class_names]
    for path, label, row in zip(paths, labels, scores):
        writer.writerow([path, all_names[int(label)], *(f"{v:.9g}" for v in row)])
    return out.getvalue()


class FolderReportHook(Hook):
    """The task summary first; the test table, PR curves and test predictions last."""

    def on_train_begin(self, trainer):
        if not trainer.chief:
            return
        from keras_fgvc.data.folder_task import describe

        print(describe(trainer.task), flush=True)
        if trainer.workdir:
            skipped = (trainer.task.metadata or {}).get("skipped") or []
            artifacts.write_text(os.path.join(trainer.workdir, "skipped.txt"),
                                 "".join(f"{p}\t{why}\n" for p, why in skipped))

    def on_train_end(self, trainer, result):
        if not trainer.chief:
            return
        task = trainer.task
        names = task.class_names[1:]
        # The trainer's final predictions and thresholds (computed once, in `_finish`); the
        # folder task has dropped unreadable files, so rows align with the paths.
        thresholds = trainer.final_thresholds["thresholds"]
        test_probabilities, labels = trainer.final_predictions["test"]
        if len(labels) != len(task.test):
            raise ValueError(f"{len(task.test) - len(labels)} test image(s) became unreadable "
                             "during training; predictions_test.csv would not align.")
        scores = test_probabilities[:, 1:]
        ap = result["test"].get("average_precision") or [float("nan")] * len(names)
        # A class with no test image reads 0 here (metrics leave it NaN, out of the means).
        rows = np.nan_to_num(np.stack(metrics.f1_at_thresholds(
            test_probabilities, labels, thresholds), axis=1), nan=0.0).tolist()
        width = max(12, *(len(n) for n in names))
        lines = [f"Test ({len(labels)} images): mAP {result['test'].get('mAP', float('nan')):.3f}",
                 f"  {'class':<{width}} {'images':>6} {'AP':>6} {'thresh':>7} {'prec':>6} "
                 f"{'recall':>6} {'F1':>6}"]
        for c, name in enumerate(names):
            precision, recall, f1 = rows[c]
            lines.append(f"  {name:<{width}} {int(np.sum(labels == c + 1)):>6} {ap[c]:>6.3f} "
                         f"{thresholds[c]:>7.3f} {precision:>6.3f} {recall:>6.3f} {f1:>6.3f}")
        lines.append(f"  F1 at the validation thresholds (the exported detector's); mean "
                     f"{np.mean([r[2] for r in rows]):.3f}")
        result["test_f1_at_val_thresholds"] = [r[2] for r in rows]
        if trainer.workdir:
            artifacts.write_text(os.path.join(trainer.workdir, "predictions_test.csv"),
                                 predictions_csv(task.test.paths, labels, scores, names))
            plots = plot_pr_curves(scores, labels, names, trainer.workdir, ap)
            lines.append(f"  wrote predictions_test.csv and {len(plots)} PR curve(s) "
                         f"(pr_*.png) in {trainer.workdir}")
        print("\n".join(lines), flush=True)
