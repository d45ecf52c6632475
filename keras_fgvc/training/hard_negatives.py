"""How many human hard negatives an epoch of the softmax baselines sees (Table 2.3).

Dissertation Sec. 2.4.3, Softmax + HNS / HNM: "To make the number of flower
images and hard negatives to be balanced in each batch during training, the
number of epochs we go through on all hard negatives is set to be 10% of" the
epochs over the flower images: 240,338 hard negatives against 27,004 images,
so an epoch saw about 24k hard negatives, about as many as images. The rule
kept here is the balance it aims at: an epoch holds every image of S and at
most ``hard_negative_ratio`` hard negatives per image of S (the task's
``task_kwargs.hard_negative_ratio``, default 1.0; the paper's 10% is 0.89
there), a fresh seeded sample of them every epoch. With fewer hard negatives
than that, every one of them is in every epoch (the trainer's own order).

Triplet-A + HN balances hard negatives inside each batch instead
(`keras_fgvc.training.mining.mine_triplet_order_with_hard_negatives`).
"""

import numpy as np

from keras_fgvc.training.hook import Hook


def epoch_rows(hard_negative_for, ratio, seed, epoch):
    """Row indices of one epoch: every non-hard-negative row + a seeded sample of the rest.

    Args:
        hard_negative_for: int [n], -1 = not a hard negative.
        ratio: hard negatives kept per other row, at most.
        seed, epoch: seed the sample.

    Returns:
        Sorted int64 row indices.
    """
    marks = np.asarray(hard_negative_for)
    human = np.flatnonzero(marks >= 0)
    others = np.flatnonzero(marks < 0)
    keep = min(len(human), int(np.floor(ratio * len(others))))
    rng = np.random.default_rng([int(seed), int(epoch), 13])
    chosen = rng.choice(human, size=keep, replace=False) if keep < len(human) else human
    return np.sort(np.concatenate([others, chosen]).astype(np.int64))


class HardNegativeShareHook(Hook):
    """Caps each epoch's hard negatives at ``hard_negative_ratio`` per image of S (module doc).

    Resuming mid-epoch recomputes the same epoch order (seeded by the epoch) and
    continues it at the same position.
    """

    def on_epoch_begin(self, trainer, epoch):
        split = trainer.stage.split
        if not split.num_hard_negatives:
            return
        ratio = float((trainer.task.metadata or {}).get("hard_negative_ratio", 1.0))
        rows = epoch_rows(split.hard_negative_for, ratio, trainer.config.seed, epoch)
        if len(rows) == len(split):
            return  # every hard negative fits: the trainer's order stands
        batch = trainer.config.batch_size
        total = trainer.stage.steps_per_epoch * batch
        rng = np.random.default_rng([int(trainer.config.seed), int(epoch), 17])
        reps = -(-total // len(rows))
        order = np.concatenate([rows[rng.permutation(len(rows))] for _ in range(reps)])[:total]
        trainer.replace_order(order[trainer.step_in_epoch * batch:])
