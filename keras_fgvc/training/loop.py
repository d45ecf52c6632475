"""The training loop: one custom loop for every tf.distribute strategy.

Keras 3 `Model.fit` fails under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585), so the trainer runs its own loop around a
`tf.function` train step (`train_step.make_train_step`). It only runs stages
and steps: task, model, loss recipe, optimizer and hooks come from `builders`,
the workdir check from `workdir`, the files it writes (layout: `artifacts`) from
`artifacts`. Everything that owns variables is built inside `strategy.scope()`.
Stages (two-stage fine-tuning, LWS) and hooks (DRW, anchor refresh, progress,
TensorBoard) are its extension points. A run resumes from the newest checkpoint
in ``W/checkpoints`` and finishes at the same step as an uninterrupted run.

Metrics (``W/metrics.json``, the dict `run` returns): final ``val`` / ``test``
(full), ``history`` (per-epoch val, before the stage's ``bn_reestimate_batches``
re-estimation) and ``stages``: one entry per stage
(``index``, ``name``, ``end_step``, ``val``, ``test``), the metrics of the
model at the end of that stage (e.g. before / after two-stage fine-tuning).

Example:

>>> trainer = Trainer(resolve_config("fashion_bg_ft", ["epochs=1"]),
...                   make_strategy("one_device"), workdir="/tmp/run")
>>> metrics = trainer.run()
"""

import math
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from keras_fgvc.training import artifacts, batchnorm, builders, evaluation, inputs, stages
from keras_fgvc.training.checkpointing import Checkpointer, latest_step
from keras_fgvc.training.config import validate_config
from keras_fgvc.training.strategy import is_chief, make_strategy, worker_index
from keras_fgvc.training.train_step import make_train_step
from keras_fgvc.training.workdir import check_resumable

_KEEP_VAL_BYTES = 256 * 2**20  # the last val predictions kept for the final evaluation


class Trainer:
    """Trains `config` under `strategy`, writing checkpoints and artifacts to `workdir`.

    `setup` checks the config and plans the stages, `run` builds the model and
    trains (resuming), `dry_run` runs a few steps and writes nothing.

    Args:
        config: a resolved `Config`.
        strategy: a `tf.distribute.Strategy` (default: one_device).
        workdir: output folder; None trains without writing anything.
        task: a prebuilt `Task` (default: built from the config by `setup`).
        hooks: extra `Hook`s, after the config's default ones.
        verbose: 1 shows a progress bar on the chief.
    """

    def __init__(self, config, strategy=None, workdir=None, task=None, hooks=(), verbose=1):
        self.config = config
        self.strategy = strategy or make_strategy("one_device")
        self.workdir = workdir
        self.chief = is_chief(self.strategy)
        self.worker = worker_index(self.strategy)
        self.task = task
        self.hooks = builders.build_hooks(config, verbose, hooks)
        # The plan (`setup`): precision, stages, input shape.
        self.precision = self.stages = self.total_steps = self.total_epochs = None
        self.image_size = self.channels = None
        self.skip_counter = None  # counts unreadable training images (file-based tasks)
        # What owns variables (`_build`); the optimizer, checkpointer and step of a stage.
        self.model = self.recipe = None
        self.step_var = self.epoch_var = self.class_weights = None
        self.stage = self.optimizer = self.checkpointer = self._train_step = None
        # Where the loop is, and what it measured.
        self.global_step = self.epoch = self.step_in_epoch = 0
        self._order = None  # the current epoch's example order (hooks may replace it)
        self._reset = True  # the input iterator must follow a new `_order`
        self.train_seconds = 0.0  # in the step loop (this process): steps, hooks, checkpoints
        self.history = []
        self.stage_metrics = {}  # stage index -> {"val", "test"} at its end (metrics["stages"])
        self.final_predictions = None  # {"val" / "test": (probabilities, labels)} at the end
        self.final_thresholds = None
        self._predict_functions = evaluation.PredictFunctions(flip=config.eval_flip)
        self._last_val = None  # (weights fingerprint, probabilities, labels) of the last val

    # === Setup ===

    def setup(self):
        """Check the config, the strategy and the data; plan the stages (no model yet)."""
        config = self.config
        validate_config(config)
        check_resumable(self.workdir, config)  # before the task is built: costs nothing
        builders.check_strategy(config, self.strategy)
        self.precision = builders.resolve_precision(config, self.strategy)
        keras.config.set_dtype_policy(self.precision)
        self.task = builders.prepare_task(config, self.task)
        self.stages = stages.plan_stages(config, self.task)
        self.stage = self.stages[0]
        self.total_steps = self.stages[-1].end_step
        self.total_epochs = sum(s.epochs for s in self.stages)
        self.image_size, self.channels = builders.input_shape(config, self.task.train)
        if self.task.train.images is None:
            from keras_fgvc.data.pipeline import SkipCounter

            self.skip_counter = SkipCounter()  # unreadable training images, over the run

    def _build(self, resume_step):
        """Model, loss, per-class weights and step counter; the stage of `resume_step`."""
        config, task = self.config, self.task
        stage = stages.stage_for_step(self.stages, resume_step)
        trunk, trunk_source = builders.load_trunk(config, task)  # outside the scope
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.model = builders.build_model(config, task, self.image_size, self.channels)
            if trunk_source is not None:
                builders.copy_trunk(trunk_source, self.model, trunk, verbose=self.chief,
                                    config=config, task=task)
            for earlier in self.stages[1:stage.index + 1]:
                self.model = stages.transform_model(earlier, self.model)
            self.step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self.epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.class_weights = tf.Variable(
                tf.ones([task.num_classes]), trainable=False, name="class_weights")
        self.recipe = builders.build_loss(config, task, self.class_weights)
        self._build_stage(stage)
        return stage

    def _build_stage(self, stage):
        """A fresh optimizer, checkpointer and train step for `stage`."""
        config = self.config
        self.stage = stage
        # Several replicas: clip the all-reduced gradient (Keras would clip each part).
        explicit_clip = bool(config.clip_value) and self.strategy.num_replicas_in_sync > 1
        variables = builders.trainable_variables(self.model, stage)
        with self.strategy.scope():
            self.optimizer = builders.build_optimizer(config, stage, self.precision,
                                                      clip_in_optimizer=not explicit_clip)
            self.optimizer.build(variables)
        self.checkpointer = None
        if self.workdir:
            self.checkpointer = Checkpointer(
                self.workdir,
                {"model": self.model, "optimizer": self.optimizer, "step": self.step_var,
                 "epoch": self.epoch_var, "class_weights": self.class_weights},
                config.checkpoint_every_steps, config.keep_checkpoints, self.chief, self.worker,
            )
        self._train_step = make_train_step(
            self.model, self.optimizer, self.recipe, self.strategy, variables,
            config.batch_size, config.clip_value, explicit_clip, jit_compile=config.jit_compile,
            steps_per_execution=1 if config.steps_per_execution == 1 else None,
            training=stage.training)

    # === Run ===

    def run(self, max_steps=None):
        """Train (resuming from ``W/checkpoints``), evaluate, write the workdir; returns metrics.

        Args:
            max_steps: stop after this global step without finishing (tests).
        """
        if self.stages is None:
            self.setup()
        resume = latest_step(self.workdir) if self.workdir else 0
        if resume > self.total_steps:
            raise ValueError(
                f"{self.workdir}: the newest checkpoint is at step {resume}, beyond this "
                f"config's {self.total_steps} steps; use a new --workdir.")
        stage = self._build(resume)
        if resume:
            path = self.checkpointer.restore(resume)
            epoch, in_epoch = stage.position(resume)
            logging.info("Resuming from checkpoint %s at step %d (epoch %d, step %d of it).",
                         path, resume, epoch + 1, in_epoch)
            print(f"Resuming from step {resume} ({path}).", flush=True)
        if self.workdir and self.chief:
            artifacts.write_config(self.workdir, self.config)
        self.global_step = resume
        self.train_seconds = 0.0
        self.stage_metrics = {}
        self._call_hooks("on_train_begin")
        for current in self.stages[stage.index:]:
            if current is not stage:
                with self.strategy.scope():
                    self.model = stages.transform_model(current, self.model)
                self._build_stage(current)
            self.stage = current
            if current.index > 0:
                self._evaluate_stage_end(self.stages[current.index - 1])
            self._call_hooks("on_stage_begin", current)
            while self.global_step < current.end_step:
                if not self._run_epoch(current, max_steps):
                    return {"step": self.global_step, "stopped": True}
            if current is not self.stages[-1]:
                # Before the next stage's transform (LWS freezes the trained model).
                self._reestimate_batchnorm(current)
        return self._finish(resume)

    def _run_epoch(self, stage, max_steps=None):
        """Train the rest of the epoch at ``global_step``; False when `max_steps` stops it."""
        config, batch = self.config, self.config.batch_size
        self.epoch, self.step_in_epoch = stage.position(self.global_step)
        self._order = inputs.epoch_order(stage.split.labels, self.epoch, stage.steps_per_epoch,
                                         batch, config.seed, stage.sampling)
        self._reset = True
        self.epoch_var.assign(self.epoch)
        self._call_hooks("on_epoch_begin", self.epoch)
        iterator = None
        started = time.perf_counter()
        while self.step_in_epoch < stage.steps_per_epoch:
            if max_steps is not None and self.global_step >= max_steps:
                self.train_seconds += time.perf_counter() - started
                return False
            if self._reset:
                iterator = iter(inputs.distributed_dataset(
                    self.strategy, stage.split, self._order[self.step_in_epoch * batch:], batch,
                    self.image_size, self.channels, augment=config.augment,
                    seed=config.seed + 1000 * self.epoch, counter=self.skip_counter,
                ))
                self._reset = False
            count = self._block_size(stage, max_steps)
            losses = self._train_step(iterator, tf.constant(count, tf.int32)).numpy()
            learning_rate = float(self.optimizer.learning_rate)
            for loss in losses.tolist():
                if not math.isfinite(loss) and self.precision != "mixed_float16":
                    raise FloatingPointError(
                        f"Loss is {loss} at step {self.global_step + 1}; lower learning_rate "
                        f"(now {stage.learning_rate}) or set clip_value.")
                self.global_step += 1
                self.step_in_epoch += 1
                self._call_hooks("on_step_end", self.global_step,
                                 {"loss": loss, "learning_rate": learning_rate})
            self.step_var.assign(self.global_step)
            if self.checkpointer is not None:
                self.checkpointer.maybe_save(self.global_step)
        self.train_seconds += time.perf_counter() - started
        logs = {}
        if (self.epoch + 1) % config.eval_every_epochs == 0 or self.global_step == stage.end_step:
            logs = self.evaluate("val")
            self.history.append({"epoch": self.epoch + 1, "step": self.global_step, **logs})
        self._call_hooks("on_epoch_end", self.epoch, logs)
        return True

    def _block_size(self, stage, max_steps):
        """Steps the next train-step call runs: `steps_per_execution`, never past a boundary.

        Boundaries: the end of the epoch, `max_steps`, the next checkpoint and the period of
        every hook that acts between steps (`Hook.step_period`, e.g. triplet re-mining), so
        each of them sees the trainer exactly at its step, whatever K is.
        """
        count = min(self.config.steps_per_execution, stage.steps_per_epoch - self.step_in_epoch)
        if max_steps is not None:
            count = min(count, max_steps - self.global_step)
        periods = [p for p in (getattr(h, "step_period", None) for h in self.hooks)
                   if isinstance(p, int) and p > 0]  # duck-typed hooks may answer anything
        if self.checkpointer is not None:
            periods.append(self.config.checkpoint_every_steps)
        for period in periods:
            count = min(count, period - self.global_step % period)
        return max(count, 1)

    def replace_order(self, indices):
        """Hooks: use `indices` (tiled as needed) for the rest of the current epoch."""
        head = self._order[: self.step_in_epoch * self.config.batch_size]
        need = len(self._order) - len(head)
        indices = np.asarray(indices, np.int64)
        tail = np.resize(indices, need) if len(indices) else self._order[len(head):]
        self._order = np.concatenate([head, tail])
        self._reset = True

    def _call_hooks(self, method, *args):
        for hook in self.hooks:
            getattr(hook, method)(self, *args)

    # === Stage ends ===

    def _reestimate_batchnorm(self, stage):
        """`config.bn_reestimate_batches` > 0: BN statistics from that many batches of `stage`.

        Run once at the end of every stage, after its checkpoints (which keep the statistics
        as trained) and before its evaluation, so a resumed run does the same. The batches
        follow the stage's split and sampling (`bn_reestimate_data="train"`: the first
        stage's) with an order of their own (seeded): the distribution the stage's moving
        averages were estimating.
        """
        config = self.config
        count = config.bn_reestimate_batches
        if not count or not stage.training:  # an inference-mode stage left BatchNorm as it was
            return
        data = stage if config.bn_reestimate_data == "stage" else self.stages[0]
        iterator = inputs.batchnorm_batches(self.strategy, stage, data, count, config.batch_size,
                                            self.image_size, self.channels, config.augment,
                                            config.seed)
        started = time.time()
        try:
            layers = batchnorm.reestimate_batchnorm(self.model, iterator, count, self.strategy)
        except ValueError as error:
            raise ValueError(f"Stage {stage.name!r}, bn_reestimate_batches={count}: "
                             f"{error}") from None
        if self.chief and layers:
            print(f"Stage {stage.name!r}: BatchNorm statistics of {layers} layers re-estimated "
                  f"from {count} training batches ({time.time() - started:.1f} s).", flush=True)

    def _evaluate_stage_end(self, stage):
        """Full val / test metrics of the model that finished `stage` -> ``self.stage_metrics``.

        Run when the next stage begins; kept in ``W/stage_metrics.json`` so a run
        resumed inside a later stage still reports them (None if they were lost).
        """
        if self.global_step == stage.end_step:
            self.stage_metrics[stage.index] = {"val": self.evaluate("val", full=True),
                                               "test": self.evaluate("test", full=True)}
            if self.workdir and self.chief:
                artifacts.write_stage_metrics(self.workdir, self.stage_metrics)
        elif self.workdir:
            self.stage_metrics.update(artifacts.read_stage_metrics(self.workdir))

    def _finish(self, resume):
        """The last stage's end: final metrics and thresholds; the workdir's files."""
        if self.checkpointer is not None:
            self.checkpointer.maybe_save(self.global_step, force=True)
        self._reestimate_batchnorm(self.stages[-1])
        (val_probs, val_labels), test = self._final_val_predictions(), (None, None)
        if len(self.task.test):
            test = self.predict_with_labels(self.task.test)
        # The final model's outputs, for hooks that report on them (no second predict).
        self.final_predictions = {"val": (val_probs, val_labels), "test": test}
        final = {"val": evaluation.evaluate(self.task, val_labels, val_probs, full=True),
                 "test": ({} if test[0] is None else
                          evaluation.evaluate(self.task, test[1], test[0], full=True))}
        result = {"config": self.config.name, "steps": self.global_step,
                  "epochs": self.total_epochs, "resumed_from_step": resume,
                  "precision": self.precision, "replicas": self.strategy.num_replicas_in_sync,
                  **final, "history": self.history,
                  "train_seconds": round(self.train_seconds, 3),
                  "stages": stages.stage_results(self.stages, self.stage_metrics, final)}
        if self.skip_counter is not None:
            result["skipped_training_images"] = self.skip_counter.skipped
        self.final_thresholds = evaluation.thresholds(self.task, val_labels, val_probs)
        if self.workdir:
            self._write_results(result)
        self._call_hooks("on_train_end", result)
        return result

    def _write_results(self, result):
        if not self.chief:
            artifacts.write_worker_model(self.workdir, self.worker, self.model)
            self.checkpointer.cleanup()
            return
        # The spec validation (hence the thresholds) was evaluated with, which the exported
        # serving_default applies (data.preprocessing), and the classes it serves.
        preprocessing = {**inputs.eval_preprocessing(self.task.val, self.image_size,
                                                     self.channels, self.config.augment),
                         **evaluation.served_layout(self.task, self.config.eval_flip)}
        artifacts.write_results(self.workdir, self.model, self.task.class_names,
                                self.final_thresholds, preprocessing, result)

    # === Prediction ===

    def predict(self, split, output="probabilities"):
        """The model's `output` on `split` (float32 NumPy, rows aligned with ``split.labels``)."""
        return evaluation.predict(self.model, split, self.config.eval_batch_size,
                                  self.image_size, self.channels, output,
                                  call=self._predict_functions.get(self.model, output),
                                  augment=self.config.augment)

    def predict_with_labels(self, split, output="probabilities"):
        """``(outputs, labels)`` on `split`; unreadable images are left out of both."""
        return evaluation.predict_with_labels(
            self.model, split, self.config.eval_batch_size, self.image_size, self.channels,
            output, call=self._predict_functions.get(self.model, output),
            augment=self.config.augment)

    def evaluate(self, split_name="val", full=False):
        """Metrics of the current model on a split of the task (see `evaluation.evaluate`)."""
        split = getattr(self.task, split_name)
        if not len(split):
            return {}
        probabilities, labels = self.predict_with_labels(split)
        if split_name == "val" and probabilities.nbytes <= _KEEP_VAL_BYTES:
            # The final evaluation reuses it while the weights are the same.
            self._last_val = (evaluation.weights_fingerprint(self.model), probabilities, labels)
        return evaluation.evaluate(self.task, labels, probabilities, full=full)

    def _final_val_predictions(self):
        """``(probabilities, labels)`` on val: the last epoch's, if the model has not changed."""
        last, self._last_val = self._last_val, None
        if last is not None and last[0] == evaluation.weights_fingerprint(self.model):
            return last[1], last[2]
        return self.predict_with_labels(self.task.val)

    # === Dry run ===

    def dry_run(self, steps=1, forward=True):
        """Build everything and run `steps` train steps, writing nothing (`dry_run.dry_run`)."""
        from keras_fgvc.training.dry_run import dry_run

        return dry_run(self, steps, forward)
