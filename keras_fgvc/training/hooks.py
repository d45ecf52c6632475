"""Hooks: small objects the loop calls at fixed points (train / stage / epoch / step).

A hook overrides any of `Hook`'s methods (the base class lives in
`keras_fgvc.training.hook` and is importable from here too); the loop passes
itself (`trainer`) so a hook can read ``trainer.config``, ``trainer.task``, ``trainer.model``,
``trainer.global_step``, assign ``trainer.class_weights`` or call
``trainer.replace_order(indices)``. Hooks must be idempotent functions of
the step / epoch they are given: after a resume the loop calls
``on_train_begin`` and ``on_epoch_begin`` again at the restored position.

Built-in hooks (chosen from the config by `default_hooks`):

- `ProgressHook`: a `keras.utils.Progbar` per epoch (chief only; one line per
  epoch when stdout is not a terminal).
- `folder_report.FolderReportHook` (task ``image_folder_bg``): the task summary
  first, the test table, PR curves and ``predictions_test.csv`` last.
- `TensorBoardHook`: scalars under ``W/tensorboard`` (chief only).
- `DeferredReweightingHook`: DRW (Cao et al. 2019, the LDAM-DRW baseline of
  background splitting): per-class loss weights are 1 before `drw_epoch`
  and class-balanced (effective number, Eq. 5.2) from it on.
- `AnchorRefreshHook` (dissertation Sec. 2.4.1, quasi-online sampling):
  every M steps, embed the training set and re-mine triplets for the next M
  steps. The anchors are initialised by k-means once, before the first step
  (Sec. 2.3.4), and then learned by gradient (Sec. 2.3.5); re-initialising
  them at every refresh is an option (`Config.refresh_anchors`), off by default.
  On a training split with human hard negatives (dataset bootstrapping, Sec.
  2.4.3) each mined triplet carries one of them
  (`mining.mine_triplet_order_with_hard_negatives`).
- `hard_negatives.HardNegativeShareHook` (task ``bootstrap``, softmax + HNS /
  HNM): each epoch sees at most ``hard_negative_ratio`` hard negatives per
  image of S, a fresh seeded sample of them every epoch.
"""

import os
import sys

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from keras_fgvc.losses.class_balanced import BETA
from keras_fgvc.losses.mining import MARGIN, POSITIVE_FRACTION
from keras_fgvc.training import mining
from keras_fgvc.training.hook import Hook

# TensorBoard's scalar plugin metadata, so scalars are written with core TF
# ops (`tf.summary.write`) without the tensorboard package installed.
_SCALAR_METADATA = None


def _scalar_metadata():
    global _SCALAR_METADATA
    if _SCALAR_METADATA is None:
        from tensorflow.core.framework import summary_pb2

        _SCALAR_METADATA = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
        ).SerializeToString()
    return _SCALAR_METADATA


# Evaluation entries that are counts or settings, not metrics: left out of the epoch line.
_NOT_METRICS = ("head_threshold", "num_classes", "num_examples")


class ProgressHook(Hook):
    """A progress bar per epoch with loss and learning rate (chief only)."""

    def __init__(self, verbose=1):
        self.verbose = verbose
        self.bar = None
        self.said_batchnorm = False

    def on_epoch_begin(self, trainer, epoch):
        if trainer.chief and self.verbose:
            stage = trainer.stage
            print(f"Epoch {epoch + 1}/{trainer.total_epochs} ({stage.name})", flush=True)
            # A log that is not a terminal gets one line per epoch (verbose 2), not a bar
            # redrawn with escape codes.
            verbose = self.verbose if sys.stdout.isatty() else 2
            self.bar = keras.utils.Progbar(stage.steps_per_epoch, verbose=verbose,
                                           stateful_metrics=["learning_rate"])
            self.bar.update(trainer.step_in_epoch)

    def on_step_end(self, trainer, step, logs):
        if self.bar is not None:
            self.bar.update(trainer.step_in_epoch, values=list(logs.items()))

    def on_epoch_end(self, trainer, epoch, logs):
        if trainer.chief and self.verbose and logs:
            text = ", ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items())
                             if isinstance(v, float) and k not in _NOT_METRICS)
            count = logs.get("num_examples")
            on = f" ({int(count)} val images)" if isinstance(count, (int, float)) else ""
            print(f"Epoch {epoch + 1} evaluation{on}: {text}", flush=True)
            batches = getattr(trainer.config, "bn_reestimate_batches", 0)
            if batches and not self.said_batchnorm:
                # In a short run the moving averages lag the weights, so these figures
                # can sit near chance while the final, re-estimated ones are fine.
                print(f"  (per-epoch figures use the BatchNorm moving statistics as trained; "
                      f"each stage's end re-estimates them from {batches} training batches "
                      "before its final evaluation)", flush=True)
                self.said_batchnorm = True
        self.bar = None


class TensorBoardHook(Hook):
    """Scalars (loss, learning rate, evaluation metrics) under ``W/tensorboard``."""

    def __init__(self, every_steps=10):
        self.every_steps = max(1, int(every_steps))
        self.writer = None

    def on_train_begin(self, trainer):
        if trainer.chief and trainer.workdir:
            self.writer = tf.summary.create_file_writer(
                os.path.join(trainer.workdir, "tensorboard")
            )

    def _write(self, step, values, prefix):
        if self.writer is None:
            return
        with self.writer.as_default(step=step):
            for key, value in values.items():
                if isinstance(value, (int, float, np.floating)):
                    tf.summary.write(f"{prefix}/{key}", tf.constant(float(value), tf.float32),
                                     step=step, metadata=_scalar_metadata())
        self.writer.flush()

    def on_step_end(self, trainer, step, logs):
        if step % self.every_steps == 0:
            self._write(step, logs, "train")

    def on_epoch_end(self, trainer, epoch, logs):
        self._write(trainer.global_step, {**logs, "epoch": epoch + 1}, "eval")

    def on_train_end(self, trainer, logs):
        if self.writer is not None:
            self.writer.close()


class DeferredReweightingHook(Hook):
    """DRW: class-balanced loss weights (effective number, `beta`) from epoch `start_epoch` on."""

    def __init__(self, start_epoch, beta=BETA):
        self.start_epoch = int(start_epoch)
        self.beta = float(beta)

    def weights_for(self, trainer, epoch):
        """The per-class weights of `epoch` (`losses.drw_class_weights`: ones before
        `start_epoch`, class-balanced from it on): the schedule the Keras callback uses."""
        from keras_fgvc.losses.ldam import drw_class_weights

        counts = trainer.task.class_counts("train").tolist()
        return np.asarray(drw_class_weights(counts, epoch, self.start_epoch, self.beta),
                          np.float32)

    def on_epoch_begin(self, trainer, epoch):
        weights = self.weights_for(trainer, epoch)
        if not np.allclose(trainer.class_weights.numpy(), weights):
            if epoch == self.start_epoch and trainer.chief:
                logging.info("DRW: class-balanced loss weights from epoch %d.", epoch + 1)
            trainer.class_weights.assign(weights)


def _anchor_layers(model):
    return [layer for layer in model._flatten_layers() if type(layer).__name__ == "AnchorSoftVote"]


class AnchorRefreshHook(Hook):
    """Every `every_steps`: embed the training set and re-mine triplets; anchors stay learned.

    The k-means start embeds the mining subset plus, for a class with fewer than
    `INIT_MIN_PER_CLASS` rows in it, more of that class's rows (all it has, up to that).

    Dissertation Sec. 2.4.1: "after every 1,000 iterations, we pause the
    training process and extract features on the training set, then ... do
    triplet sampling (local positives and hard negatives) to generate a list
    of triplets for next 1,000 iterations". Sec. 2.3.4-2.3.5: the anchors are
    initialised as k-means centres per class, then learned by gradient with
    the rest of the network. So k-means runs once, before the first training
    step of a fresh run (a resumed run restores the learned anchors from its
    checkpoint); a refresh only re-mines triplets.

    Args:
        every_steps: M.
        max_examples: training examples embedded at a refresh (a new seeded random subset
            each time; the triplets until the next refresh are mined from it).
        margin, positive_fraction: triplet margin and local-positive share.
        reinit_anchors: also re-initialise the anchors by k-means at every
            refresh (not the paper's procedure; off by default).
    """

    INIT_MIN_PER_CLASS = 32

    def __init__(self, every_steps, max_examples=2048, margin=MARGIN,
                 positive_fraction=POSITIVE_FRACTION,
                 reinit_anchors=False):
        self.every_steps = int(every_steps)
        self.max_examples = int(max_examples)
        self.margin = float(margin)
        self.positive_fraction = float(positive_fraction)
        self.reinit_anchors = bool(reinit_anchors)
        self.step_period = self.every_steps
        self.refreshes = 0
        self.anchor_inits = 0
        self.init_rows = 0

    def refresh(self, trainer):
        """Embed the subset and re-mine the rest of the epoch (k-means: see the class doc)."""
        split = trainer.stage.split
        # A new random subset at every refresh (seeded by the step), so that over training the
        # mined triplets cover the whole training set (Sec. 2.4.1 extracts features "on the
        # training set"); the subset only bounds the n x n distances of one mining.
        rng = np.random.default_rng([trainer.config.seed, 7, trainer.global_step])
        if split.num_hard_negatives:  # up to max_examples of S and of H each (Sec. 2.4.3)
            human = split.hard_negative_for >= 0
            self.subset = np.sort(np.concatenate([
                rows[rng.permutation(len(rows))[: self.max_examples]]
                for rows in (np.flatnonzero(~human), np.flatnonzero(human))]))
        else:
            self.subset = np.sort(rng.permutation(len(split))[: self.max_examples])
        self.embeddings = trainer.predict(split.subset(self.subset), output="embedding")
        self.labels = split.labels[self.subset]
        self.hard_negative_for = (None if not split.num_hard_negatives
                                  else split.hard_negative_for[self.subset])
        initialise = ((self.reinit_anchors or trainer.global_step == 0)
                      and bool(_anchor_layers(trainer.model)))
        if initialise:
            self.init_anchors(trainer, rng)
        self.remine(trainer)
        self.refreshes += 1
        if trainer.chief:
            logging.info("Step %d: triplets re-mined on %d examples%s.", trainer.global_step,
                         len(self.subset), " (anchors initialised by k-means)" if initialise
                         else "")

    def init_anchors(self, trainer, rng):
        """Per-class k-means (Sec. 2.3.4: "on the training set in feature space") on the mining
        subset, topped up so that every class has min(its size, `INIT_MIN_PER_CLASS`) rows:
        a random subset of a many-class training set misses classes (620 classes x 25 images:
        2,048 rows miss ~20), which k-means could not start from."""
        split = trainer.stage.split
        labelled = self.labels >= 0  # a hard negative of label -1 has no class
        embeddings, labels = self.embeddings[labelled], self.labels[labelled]
        extra = []
        have = np.bincount(labels, minlength=trainer.task.num_classes)
        chosen = np.zeros(len(split), bool)
        chosen[self.subset] = True
        for c in np.flatnonzero(have < self.INIT_MIN_PER_CLASS):
            rows = np.flatnonzero((split.labels == c) & ~chosen)
            extra.append(rng.permutation(rows)[: self.INIT_MIN_PER_CLASS - have[c]])
        extra = np.sort(np.concatenate(extra)) if extra else np.zeros(0, np.int64)
        if len(extra):
            embeddings = np.concatenate(
                [embeddings, trainer.predict(split.subset(extra), output="embedding")])
            labels = np.concatenate([labels, split.labels[extra]])
        for layer in _anchor_layers(trainer.model):
            layer.init_from_embeddings(embeddings, labels, seed=trainer.config.seed)
        self.anchor_inits += 1
        self.init_rows = len(labels)

    def remine(self, trainer):
        """Triplets for the rest of the current epoch from the last embeddings."""
        remaining = trainer.stage.steps_per_epoch - trainer.step_in_epoch
        kwargs = dict(margin=self.margin, positive_fraction=self.positive_fraction,
                      seed=(trainer.config.seed, trainer.global_step))
        count = remaining * trainer.config.batch_size
        if self.hard_negative_for is not None:  # + a human hard negative per triplet
            order = mining.mine_triplet_order_with_hard_negatives(
                self.embeddings, self.labels, self.hard_negative_for, count, **kwargs)
        else:
            order = mining.mine_triplet_order(self.embeddings, self.labels, count, **kwargs)
        trainer.replace_order(self.subset[order])

    def on_train_begin(self, trainer):
        self.embeddings = self.hard_negative_for = None

    def on_epoch_begin(self, trainer, epoch):
        # First epoch of this process (fresh or resumed): refresh; later epochs
        # continue with triplets mined from the last embeddings.
        if self.embeddings is None:
            self.refresh(trainer)
        else:
            self.remine(trainer)

    def on_step_end(self, trainer, step, logs):
        if step % self.every_steps == 0 and trainer.step_in_epoch < trainer.stage.steps_per_epoch:
            self.refresh(trainer)


def default_hooks(config, verbose=1):
    """The hooks `config` asks for (progress, TensorBoard, DRW, anchor refresh)."""
    hooks = [ProgressHook(verbose), TensorBoardHook(config.log_every_steps)]
    if config.drw_epoch >= 0:
        hooks.append(DeferredReweightingHook(config.drw_epoch, config.drw_beta))
    if config.refresh_every_steps > 0:
        hooks.append(AnchorRefreshHook(
            config.refresh_every_steps, config.refresh_max_examples,
            margin=float(config.loss_kwargs.get("margin", MARGIN)),
            positive_fraction=float(config.loss_kwargs.get("positive_fraction", 0.6)),
            reinit_anchors=config.refresh_anchors,
        ))
    if config.task == "image_folder_bg":
        from keras_fgvc.training.folder_report import FolderReportHook

        hooks.append(FolderReportHook())
    if config.task == "bootstrap" and config.refresh_every_steps <= 0:
        from keras_fgvc.training.hard_negatives import HardNegativeShareHook

        hooks.append(HardNegativeShareHook())
    return hooks
