"""Dataset bootstrapping rounds (dissertation Sec. 2.2.2, 2.4.3, Table 2.3).

Each round of ``python -m keras_fgvc.bootstrap round`` trains one of these on
S_{i-1} and H_{i-1}, written by the round to ``<round>/manifest.csv``
(`keras_fgvc.data.bootstrap_manifest`); the same training runs by hand with
``python train/fit.py --config NAME --set task_kwargs.manifest=FILE.csv``.
Defaults are Fashion-MNIST sized (28 x 28 grey, small CNN, 200 steps) so a
round trains in a few minutes on 2 CPU cores; for your own photos add e.g.
``--set image_size=64 --set channels=3`` (``init --image_size 64 --channels 3``
records them for every round).

| config | Table 2.3 row | hard negatives |
| --- | --- | --- |
| bootstrap_softmax | Softmax | left out |
| bootstrap_softmax_hns | Softmax + HNS | all in one extra class (N + 1 outputs) |
| bootstrap_softmax_hnm | Softmax + HNM | one extra class per category (2N outputs) |
| bootstrap_triplet_a | Triplet-A | left out |
| bootstrap_triplet_a_hn | Triplet-A + HN (default) | one per mined triplet, in the triplet loss |

Triplet-A (Sec. 2.3.5, Eq. 2.5): 64-d embedding, K = 3 anchors per category
(k-means initialised, then learned), gamma 5, margin 0.2, 60% local
positives, omega 0.1; triplets re-mined every 50 steps (Sec. 2.4.1). With
hard negatives every batch of 160 holds 40 (reference, positive, negative,
human hard negative) groups: as many human hard negatives as negatives mined
from other categories (Sec. 2.4.3), and in the loss the violating triplets with
a human negative and those with another category's weigh half each
(`keras_fgvc.losses.triplet`); the classification term is a mean over the
labelled rows. The softmax baselines see at most one
hard negative per image of S in an epoch (`keras_fgvc.training.hard_negatives`).
"""

import dataclasses

from keras_fgvc.training.config import Config, register_config

BOOTSTRAP_SOFTMAX = Config(
    task="bootstrap",
    task_kwargs={"hard_negatives": "none", "background": "class", "val_fraction": 0.1,
                 "hard_negative_ratio": 1.0},
    image_size=28,
    channels=1,
    augment=False,
    model="small_cnn",
    loss="softmax",
    optimizer="sgd",
    learning_rate=0.05,
    momentum=0.9,
    weight_decay=1e-4,
    schedule="warmup_step",
    warmup_epochs=0.5,
    decay_epochs=(3,),
    batch_size=120,
    epochs=4,
    steps_per_epoch=50,
    eval_batch_size=256,
    checkpoint_every_steps=50,
    log_every_steps=50,
    bn_reestimate_batches=20,
)

BOOTSTRAP_TRIPLET_A = dataclasses.replace(
    BOOTSTRAP_SOFTMAX,
    model="anchor_metric",
    model_kwargs={"embedding_dim": 64, "anchors_per_class": 3, "gamma": 5.0},
    loss="triplet_anchor",
    loss_kwargs={"margin": 0.2, "positive_fraction": 0.6, "omega": 0.1},
    refresh_every_steps=50,
    refresh_max_examples=2048,
)


def _register(base, name, summary, **changes):
    command = (f"python -m keras_fgvc.bootstrap round --db DB --set ... (init --config {name}); "
               f"by hand: python train/fit.py --config {name} "
               f"--set task_kwargs.manifest=ROUND/manifest.csv --workdir /tmp/{name}")
    config = dataclasses.replace(base, name=name, **changes)
    return register_config(dataclasses.replace(config, description=f"{summary}\nRun: {command}"))


_register(BOOTSTRAP_SOFTMAX, "bootstrap_softmax",
          "Bootstrapping round, softmax on S_{i-1} (Table 2.3 'Softmax').")
_register(BOOTSTRAP_SOFTMAX, "bootstrap_softmax_hns",
          "Bootstrapping round, softmax + all hard negatives as one extra class (Softmax + HNS, "
          "N + 1 outputs; confidence of category c = its softmax probability).",
          task_kwargs={"hard_negatives": "one_class", "background": "class",
                       "val_fraction": 0.1, "hard_negative_ratio": 1.0})
_register(BOOTSTRAP_SOFTMAX, "bootstrap_softmax_hnm",
          "Bootstrapping round, softmax + one hard-negative class per category (Softmax + HNM, "
          "2N outputs; confidence of category c = its softmax probability).",
          task_kwargs={"hard_negatives": "per_class", "background": "class",
                       "val_fraction": 0.1, "hard_negative_ratio": 1.0})
_register(BOOTSTRAP_TRIPLET_A, "bootstrap_triplet_a",
          "Bootstrapping round, Triplet-A (anchor soft vote, Eq. 2.5) on S_{i-1} alone.")
_register(BOOTSTRAP_TRIPLET_A, "bootstrap_triplet_a_hn",
          "Bootstrapping round, Triplet-A + human hard negatives: each batch of 160 carries 40 "
          "human hard negatives, as many as the negatives mined from other categories, and "
          "their triplets weigh half of the triplet loss (Sec. 2.4.3). The default of "
          "`python -m keras_fgvc.bootstrap init`.",
          batch_size=160,
          task_kwargs={"hard_negatives": "pairs", "background": "class", "val_fraction": 0.1,
                       "hard_negative_ratio": 1.0})
