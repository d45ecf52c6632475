"""The training loop: one custom loop for every tf.distribute strategy.

Keras 3 `Model.fit` fails under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585), so the trainer runs its own loop around a
`tf.function` train step (`train_step.make_train_step`: `strategy.run` over
a distributed dataset, GradientTape, `optimizer.apply`). Everything that
owns variables is built inside `strategy.scope()`. Stages (two-stage
fine-tuning, LWS) and hooks (DRW, anchor refresh, progress, TensorBoard)
are the loop's extension points.

Workdir layout: see `artifacts`. A run resumes from the newest checkpoint in
``W/checkpoints`` (the log names the step) and finishes at the same global
step as an uninterrupted run.

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

import inspect
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from keras_fgvc.models import batchnorm
from keras_fgvc.training import artifacts, evaluation, inputs, stages, tasks
from keras_fgvc.training.checkpointing import Checkpointer, latest_step
from keras_fgvc.training.components import build_optimizer, build_schedule
from keras_fgvc.training.config import (
    RESUME_SAFE_FIELDS,
    config_changes,
    validate_config,
    with_defaults,
)
from keras_fgvc.training.hooks import default_hooks
from keras_fgvc.training.loss_recipes import build_loss
from keras_fgvc.training.strategy import (
    default_precision,
    is_chief,
    make_strategy,
    worker_index,
)
from keras_fgvc.training.train_step import make_train_step


def _lws(model):
    from keras_fgvc.models.lws import build_lws_model

    return build_lws_model(model)


_TRANSFORMS = {"": lambda model: model, "lws": _lws}
# Epoch number (offset by the stage index) that seeds the order of the BN re-estimation
# batches: far from any training epoch, so they are drawn independently of training.
_BN_ORDER_EPOCH = 1_000_000
_KEEP_VAL_BYTES = 256 * 2**20  # the last val predictions kept for the final evaluation


class Trainer:
    """Trains `config` under `strategy`, writing checkpoints and artifacts to `workdir`.

    Args:
        config: a resolved `Config`.
        strategy: a `tf.distribute.Strategy` (default: one_device).
        workdir: output folder; None trains without writing anything.
        task: a prebuilt `Task` (default: `tasks.build_task(config)`).
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
        self.hooks = default_hooks(config, verbose) + list(hooks)
        self.model = None
        self.history = []
        self.stage_metrics = {}  # stage index -> {"val", "test"} at its end (metrics["stages"])
        self.global_step = 0
        self.step_in_epoch = 0
        self._is_setup = False
        self._predict_fns = {}
        self._last_val = None  # (weights fingerprint, probabilities, labels) of the last val

    # === Setup ===

    def setup(self):
        """Check the config and the data; plan the stages (no model yet)."""
        config = self.config
        validate_config(config)
        self._check_resumable()
        replicas = self.strategy.num_replicas_in_sync
        tpu = isinstance(self.strategy, tf.distribute.TPUStrategy)
        if config.jit_compile and replicas > 1 and not tpu:
            raise ValueError(
                f"jit_compile=true needs one replica; this strategy has {replicas}. XLA cannot "
                "compile one step function for several devices' variables (Keras turns XLA off "
                "under tf.distribute too); drop --set jit_compile=true, or use one_device (a TPU "
                "strategy compiles with XLA by itself).")
        if config.batch_size % replicas:
            raise ValueError(f"batch_size={config.batch_size} is not divisible by the "
                             f"{replicas} replicas of the strategy.")
        self.precision = (default_precision(self.strategy) if config.mixed_precision == "auto"
                          else config.mixed_precision)
        keras.config.set_dtype_policy(self.precision)
        task = self.task if self.task is not None else tasks.build_task(config)
        tasks.check_task(task)
        if config.max_train_examples or config.max_eval_examples:
            import dataclasses

            task = dataclasses.replace(
                task,
                train=tasks.limit_split(task.train, config.max_train_examples, config.seed),
                val=tasks.limit_split(task.val, config.max_eval_examples, config.seed),
                test=tasks.limit_split(task.test, config.max_eval_examples, config.seed),
            )
        self.task = task
        self.stages = stages.plan_stages(config, task)
        self.stage = self.stages[0]
        self.total_steps = self.stages[-1].end_step
        self.total_epochs = sum(s.epochs for s in self.stages)
        split = task.train
        if split.images is not None:
            native, channels = split.images.shape[1], (
                split.images.shape[3] if split.images.ndim == 4 else 1)
        else:
            native, channels = 224, config.channels
        self.image_size = config.image_size or native
        self.channels = channels
        self.skip_counter = None
        if split.images is None:
            from keras_fgvc.data.pipeline import SkipCounter

            self.skip_counter = SkipCounter()  # unreadable training images, over the run
        self._is_setup = True

    def _check_resumable(self):
        """Refuse a workdir whose checkpoints were trained with a different config.

        Resuming them would continue another run under this config's schedule (or fail
        later, deep in checkpoint restore). Only `RESUME_SAFE_FIELDS` may differ.
        Checked before the task is built, so a mistake costs nothing.
        """
        if not self.workdir or not latest_step(self.workdir):
            return
        path = os.path.join(self.workdir, "config.json")
        if not os.path.exists(path):
            return
        try:
            with open(path) as f:
                old = json.load(f)
        except (OSError, ValueError) as error:
            raise ValueError(f"{path} is unreadable ({error}); it describes the checkpoints "
                             "in this workdir, so use a new --workdir.") from None
        old = with_defaults(old)  # fields added to Config since then: their defaults
        changed = config_changes(old, self.config, ignore=RESUME_SAFE_FIELDS)
        if changed:
            detail = ", ".join(f"{k}: {old.get(k)!r} -> {getattr(self.config, k, None)!r}"
                               for k in changed[:6])
            more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
            raise ValueError(
                f"{self.workdir} holds checkpoints of a different config ({detail}{more}); "
                "resuming them would mix two runs. Use a new --workdir, or the same config "
                "and --set overrides as before.")

    def _builder_accepts(self, name):
        from keras_fgvc.models import get_builder

        params = inspect.signature(get_builder(self.config.model)).parameters
        return name in params

    def build_model(self):
        """The config's model for the task (call inside `strategy.scope()`)."""
        from keras_fgvc.models import create_model

        config, task = self.config, self.task
        kwargs = dict(config.model_kwargs)
        if task.teacher_class_names and self._builder_accepts("num_teacher_classes"):
            kwargs.setdefault("num_teacher_classes", len(task.teacher_class_names))
        if config.weight_decay:
            kwargs.setdefault("weight_decay", config.weight_decay)
        if config.adapt_examples:
            sample = tasks.limit_split(task.train, config.adapt_examples, config.seed)
            batch = next(iter(inputs.eval_dataset(sample, config.adapt_examples,
                                                  self.image_size, self.channels)))
            kwargs["sample"] = batch["images"].numpy()
        return create_model(config.model, num_classes=task.num_classes,
                            input_shape=(self.image_size, self.image_size, self.channels),
                            **kwargs)

    def _trunk_path(self):
        """The model file `config.init_trunk` names (the task's teacher for "teacher")."""
        source = self.config.init_trunk
        if source != "teacher":
            return source
        if not self.task.teacher_model:
            raise ValueError(
                f"init_trunk='teacher': task {self.task.name!r} has no saved teacher model to "
                "start the trunk from; set init_trunk='' (train from the builder's "
                "initialisation) or a path to a .keras model.")
        return self.task.teacher_model

    def _trunk_source(self):
        """The model whose trunk the new model starts from (`Config.init_trunk`), or None."""
        if not self.config.init_trunk:
            return None
        from keras_fgvc.models.transfer import load_trunk_source

        return load_trunk_source(self._trunk_path())

    def _build_stage(self, stage):
        """A fresh optimizer, checkpointer and train step for `stage`."""
        config = self.config
        self.stage = stage
        replicas = self.strategy.num_replicas_in_sync
        explicit_clip = bool(config.clip_value) and replicas > 1
        variables = self.model.trainable_variables
        if stage.trainable:
            variables = [v for v in variables if any(p in v.path for p in stage.trainable)]
        if not variables:
            raise ValueError(f"Stage {stage.name!r} has no trainable variables "
                             f"(finetune_trainable={stage.trainable}).")
        with self.strategy.scope():
            schedule = build_schedule(config, stage.steps_per_epoch, stage.learning_rate,
                                      stage.schedule)
            self.optimizer = build_optimizer(config, schedule, self.precision,
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
        self._train_step = self._make_train_step(variables, explicit_clip)

    def _make_train_step(self, variables, explicit_clip):
        return make_train_step(self.model, self.optimizer, self.recipe, self.strategy, variables,
                               self.config.batch_size, self.config.clip_value, explicit_clip,
                               jit_compile=self.config.jit_compile)

    def _build(self, resume_step):
        """Model, loss, per-class weights and step counter; the stage of `resume_step`."""
        stage = stages.stage_for_step(self.stages, resume_step)
        trunk_source = self._trunk_source()  # loaded outside the scope: only read from
        keras.utils.set_random_seed(self.config.seed)
        with self.strategy.scope():
            self.model = self.build_model()
            if trunk_source is not None:
                from keras_fgvc.models.transfer import copy_trunk

                copied = copy_trunk(trunk_source, self.model)
                if self.chief:
                    print(f"Trunk ({', '.join(copied)}) initialised from "
                          f"{self._trunk_path()}.", flush=True)
            for earlier in self.stages[1:stage.index + 1]:
                self.model = _TRANSFORMS[earlier.transform](self.model)
            self.step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self.epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.class_weights = tf.Variable(
                tf.ones([self.task.num_classes]), trainable=False, name="class_weights"
            )
        self.recipe = build_loss(self.config, self.task, self.class_weights)
        missing = [t for t in self.recipe.targets
                   if t == "teacher_labels" and self.task.train.teacher_labels is None]
        if missing:
            raise ValueError(f"Loss {self.config.loss!r} needs teacher labels; task "
                             f"{self.task.name!r} has none.")
        self._build_stage(stage)
        return stage

    # === Loop ===

    def replace_order(self, indices):
        """Hooks: use `indices` (tiled as needed) for the rest of the current epoch."""
        batch = self.config.batch_size
        head = self._order[: self.step_in_epoch * batch]
        need = len(self._order) - len(head)
        indices = np.asarray(indices, np.int64)
        tail = np.resize(indices, need) if len(indices) else self._order[len(head):]
        self._order = np.concatenate([head, tail])
        self._reset = True

    def _call_hooks(self, method, *args):
        for hook in self.hooks:
            getattr(hook, method)(self, *args)

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

    def _run_epoch(self, stage, max_steps=None):
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
                        f"(now {stage.learning_rate}) or set clip_value."
                    )
                self.global_step += 1
                self.step_in_epoch += 1
                logs = {"loss": loss, "learning_rate": learning_rate}
                self._call_hooks("on_step_end", self.global_step, logs)
            self.step_var.assign(self.global_step)
            if self.checkpointer is not None:
                self.checkpointer.maybe_save(self.global_step)
        self.train_seconds += time.perf_counter() - started
        logs = {}
        last_of_stage = self.global_step == stage.end_step
        if (self.epoch + 1) % config.eval_every_epochs == 0 or last_of_stage:
            logs = self.evaluate("val")
            self.history.append({"epoch": self.epoch + 1, "step": self.global_step, **logs})
        self._call_hooks("on_epoch_end", self.epoch, logs)
        return True

    def _predict_fn(self, output):
        key = (id(self.model), output)
        if key not in self._predict_fns:
            self._predict_fns[key] = evaluation.predict_function(self.model, output)
        return self._predict_fns[key]

    def predict(self, split, output="probabilities"):
        """The model's `output` on `split` (float32 NumPy, rows aligned with ``split.labels``)."""
        return evaluation.predict(self.model, split, self.config.eval_batch_size,
                                  self.image_size, self.channels, output,
                                  call=self._predict_fn(output), augment=self.config.augment)

    def predict_with_labels(self, split, output="probabilities"):
        """``(outputs, labels)`` on `split`; unreadable images are left out of both."""
        return evaluation.predict_with_labels(
            self.model, split, self.config.eval_batch_size, self.image_size, self.channels,
            output, call=self._predict_fn(output), augment=self.config.augment)

    def evaluate(self, split_name="val", full=False):
        """Metrics of the current model on a split of the task (see `evaluation.evaluate`)."""
        split = getattr(self.task, split_name)
        if not len(split):
            return {}
        probabilities, labels = self.predict_with_labels(split)
        if split_name == "val" and probabilities.nbytes <= _KEEP_VAL_BYTES:
            # The final evaluation reuses it while the weights are the same.
            self._last_val = (self._weights_fingerprint(), probabilities, labels)
        return evaluation.evaluate(self.task, labels, probabilities, full=full)

    def _weights_fingerprint(self):
        """The model and the sum of each of its variables: changes when any weight changes."""
        sums = tf.nest.map_structure(lambda v: tf.reduce_sum(tf.cast(v, tf.float64)),
                                     [v.value for v in self.model.variables])
        return id(self.model), tuple(float(x) for x in sums)

    def _final_val_predictions(self):
        """``(probabilities, labels)`` on val: the last epoch's, if the model has not changed."""
        last, self._last_val = self._last_val, None
        if last is not None and last[0] == self._weights_fingerprint():
            return last[1], last[2]
        return self.predict_with_labels(self.task.val)

    def run(self, max_steps=None):
        """Train (resuming from ``W/checkpoints``), evaluate, write the workdir; returns metrics.

        Args:
            max_steps: stop after this global step without finishing (tests).
        """
        if not self._is_setup:
            self.setup()
        resume = latest_step(self.workdir) if self.workdir else 0
        if resume > self.total_steps:
            raise ValueError(
                f"{self.workdir}: the newest checkpoint is at step {resume}, beyond this "
                f"config's {self.total_steps} steps; use a new --workdir."
            )
        stage = self._build(resume)
        if resume:
            path = self.checkpointer.restore(resume)
            epoch, in_epoch = stage.position(resume)
            logging.info("Resuming from checkpoint %s at step %d (epoch %d, step %d of it).",
                         path, resume, epoch + 1, in_epoch)
            print(f"Resuming from step {resume} ({path}).", flush=True)
        if self.workdir and self.chief:
            artifacts.write_text(os.path.join(self.workdir, "config.json"),
                                 self.config.to_json() + "\n")
        self.global_step = resume
        self.train_seconds = 0.0  # in the step loop (this process): steps, hooks, checkpoints
        self.stage_metrics = {}
        self._call_hooks("on_train_begin")
        for current in self.stages[stage.index:]:
            if current is not stage:
                with self.strategy.scope():
                    self.model = _TRANSFORMS[current.transform](self.model)
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

    def _reestimate_batchnorm(self, stage):
        """`config.bn_reestimate_batches` > 0: BN statistics from that many batches of `stage`.

        Run once at the end of every stage, after its checkpoints (which keep the statistics
        as trained) and before its evaluation, so a resumed run does the same. The batches
        follow the stage's split and sampling (`bn_reestimate_data="train"`: the first
        stage's) with an order of their own (seeded): the distribution the stage's moving
        averages were estimating.
        """
        count = self.config.bn_reestimate_batches
        if not count:
            return
        config, batch = self.config, self.config.batch_size
        data = stage if config.bn_reestimate_data == "stage" else self.stages[0]
        order = inputs.epoch_order(data.split.labels, _BN_ORDER_EPOCH + stage.index, count,
                                   batch, config.seed, data.sampling)
        iterator = iter(inputs.distributed_dataset(
            self.strategy, data.split, order, batch, self.image_size, self.channels,
            augment=config.augment, seed=config.seed + _BN_ORDER_EPOCH))
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
        path = os.path.join(self.workdir, "stage_metrics.json") if self.workdir else None
        if self.global_step == stage.end_step:
            self.stage_metrics[stage.index] = {"val": self.evaluate("val", full=True),
                                               "test": self.evaluate("test", full=True)}
            if path and self.chief:
                artifacts.write_json(path, {str(k): v for k, v in self.stage_metrics.items()})
        elif path and os.path.exists(path):
            with open(path) as f:
                saved = json.load(f)
            self.stage_metrics.update({int(k): v for k, v in saved.items()})

    def _finish(self, resume):
        if self.checkpointer is not None:
            self.checkpointer.maybe_save(self.global_step, force=True)
        self._reestimate_batchnorm(self.stages[-1])
        val_probs, val_labels = self._final_val_predictions()
        test_probs, test_labels = (self.predict_with_labels(self.task.test)
                                   if len(self.task.test) else (None, None))
        # The final model's outputs, for hooks that report on them (no second predict).
        self.final_predictions = {"val": (val_probs, val_labels),
                                  "test": (test_probs, test_labels)}
        result = {
            "config": self.config.name,
            "steps": self.global_step,
            "epochs": self.total_epochs,
            "resumed_from_step": resume,
            "precision": self.precision,
            "replicas": self.strategy.num_replicas_in_sync,
            "val": evaluation.evaluate(self.task, val_labels, val_probs, full=True),
            "test": (evaluation.evaluate(self.task, test_labels, test_probs, full=True)
                     if test_probs is not None else {}),
            "history": self.history,
            "train_seconds": round(self.train_seconds, 3),
        }
        # metrics["stages"][i]: the model at the end of stage i (the last one = val / test).
        result["stages"] = [
            {"index": s.index, "name": s.name, "end_step": s.end_step,
             **({"val": result["val"], "test": result["test"]} if s is self.stages[-1]
                else self.stage_metrics.get(s.index, {"val": None, "test": None}))}
            for s in self.stages
        ]
        if self.skip_counter is not None:
            result["skipped_training_images"] = self.skip_counter.skipped
        thresholds = evaluation.thresholds(self.task, val_labels, val_probs)
        self.final_thresholds = thresholds
        if self.workdir:
            self._write_artifacts(result, thresholds)
        self._call_hooks("on_train_end", result)
        return result

    def _write_artifacts(self, result, thresholds):
        join = lambda name: os.path.join(self.workdir, name)
        if not self.chief:
            # Saving reads every variable; do it on every worker, keep only the chief's.
            scratch = join(os.path.join(".scratch", f"worker_{self.worker}", "model.keras"))
            # Kept (small) so that workers' final weights can be compared.
            artifacts.write_model(scratch, self.model)
            self.checkpointer.cleanup()
            return
        artifacts.write_model(join("model.keras"), self.model)
        artifacts.write_labels(join("labels.txt"), self.task.class_names)
        artifacts.write_json(join("thresholds.json"), thresholds)
        # The spec validation (hence the thresholds) was evaluated with; the exported
        # serving_default prepares images with it (keras_fgvc.data.preprocessing).
        artifacts.write_json(join("preprocessing.json"), {
            **inputs.eval_preprocessing(self.task.val, self.image_size, self.channels,
                                        self.config.augment),
            "has_background": bool(self.task.has_background),
        })
        artifacts.write_json(join("metrics.json"), result)

    # === Dry run ===

    def dry_run(self, steps=1, forward=True):
        """Build task, model, loss and input pipeline; run `steps` train steps (0 = one batch).

        Writes nothing. With `forward`, also predicts 4 validation examples.
        Returns ``{"losses": [...], "batch_shape": [...], "probabilities_shape": [...]}``.
        """
        if not self._is_setup:
            self.setup()
        stage = self._build(0)
        self.global_step, self.epoch, self.step_in_epoch = 0, 0, 0
        batch = self.config.batch_size
        self._order = inputs.epoch_order(stage.split.labels, 0, max(steps, 1), batch,
                                         self.config.seed, stage.sampling)
        iterator = iter(inputs.distributed_dataset(
            self.strategy, stage.split, self._order, batch, self.image_size, self.channels,
            augment=self.config.augment, seed=self.config.seed, counter=self.skip_counter,
        ))
        losses = (self._train_step(iterator, tf.constant(steps, tf.int32)).numpy().tolist()
                  if steps else [])
        result = {"losses": losses}
        if not steps:
            first = next(iterator)["images"]
            parts = self.strategy.experimental_local_results(first)
            result["batch_shape"] = [sum(int(p.shape[0]) for p in parts),
                                     *[int(d) for d in parts[0].shape[1:]]]
        if forward:
            probe = self.task.val.subset(np.arange(min(4, len(self.task.val))))
            result["probabilities_shape"] = list(self.predict(probe).shape)
        return result
