"""Batch size with a dominant background (Mullapudi et al., CVPR 2021, appendix E, Table 3).

Fashion-BG at 98% background: FT and BG-split trained with batch 128, 256,
512 and 1024 for the same number of epochs; the learning rate of each
(method, batch size) is chosen on val mAP from {0.025, 0.05, 0.1}.
Foreground AP, F1, precision and recall (argmax over N + 1) on test.

Paper claim (Table 3): FT needs a large batch (best at 512; 128 is far
worse), BG-split is robust to the batch size (best at 256); larger batches
raise precision and lower recall.

    python benchmarks/reproduce_batch_size.py [--seeds 3] [--quick]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_fgvc.training.sweep import Method, reproduce  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

BATCHES = (128, 256, 512, 1024)
LR_GRID = tuple((f"learning_rate={lr}",) for lr in (0.05, 0.1, 0.025))


def methods(setting, quick=False):
    batch = f"batch_size={int(setting.removeprefix('batch'))}"
    return [Method("FT", "fashion_bg_ft", (batch,), grid=LR_GRID),
            Method("BG-split", "fashion_bg_split", (batch,), grid=LR_GRID)]


# 5 epochs of 12,800 examples at every batch size (steps_per_epoch = 12800 // batch: 100, 50,
# 25, 12), so every run sees ~64,000 images as in study 1 (batch 128 is study 1's FT / BG-split
# budget) and larger batches take fewer steps, as in the paper; about 1.5 min per run on 2 CPU
# cores (~40 min for 3 seeds with --no-grid, ~2 h with the learning-rate grid). --full-scale:
# 5 passes over the whole pool at every batch size.
EXAMPLES_PER_EPOCH = 12800
BUDGET = {f"batch{b}": (f"steps_per_epoch={EXAMPLES_PER_EPOCH // b}",) for b in BATCHES}

PAPER = {"Table 3, iNat-BG N=100 (%): AP / F1 / recall / precision": {
    "FT": {"128": [28.4, 19.0, 53.8, 12.9], "256": [37.7, 30.8, 50.8, 24.7],
           "512": [38.3, 38.4, 42.5, 41.1], "1024": [36.0, 35.6, 35.2, 44.1]},
    "BG-SPLIT": {"128": [48.2, 44.8, 53.0, 44.0], "256": [48.8, 46.6, 42.8, 61.3],
                 "512": [47.9, 44.3, 37.4, 68.1], "1024": [47.2, 40.7, 33.4, 67.1]}}}

NOTES = [
    "Fashion-BG (3 rare classes, 98% background) stands in for iNat-BG N = 100.",
    "Same epochs (5) at every batch size, so larger batches take fewer steps; the learning "
    "rate is chosen per (method, batch size) on val mAP.",
    "Budget for 2 CPU cores: an epoch is 12,800 examples at every batch size (100 / 50 / 25 / "
    "12 steps), ~64,000 images per run (--full-scale: 5 passes over the whole pool).",
]


def main(argv=None):
    return reproduce(
        argv, name="batch_size", results_dir=RESULTS,
        description="FT vs BG-split at batch 128 / 256 / 512 / 1024 on Fashion-BG (98%).",
        paper="Mullapudi et al., Background Splitting, CVPR 2021, appendix E, Table 3",
        settings=[f"batch{b}" for b in BATCHES], quick_settings=("batch128", "batch1024"),
        methods=methods, metrics=("mAP", "macro_f1", "macro_precision", "macro_recall"),
        select_metric="mAP", mode="max", setting_label="batch size", paper_results=PAPER,
        notes=NOTES, budget=BUDGET)


if __name__ == "__main__":
    main()
