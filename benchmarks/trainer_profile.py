r"""Where the trainer's time goes: a breakdown of issue 19's comparison run, part by part.

The run: `train/fit.py --config fashion_lt10_softmax --set epochs=1 --set
steps_per_epoch=150 --set bn_reestimate_batches=0` (``small_cnn``, batch 128, one
CPU device). Each part is timed on its own in one process (wall, user and
system CPU from ``getrusage``), per step where it is per step:

- ``setup``: config checks, the task (Fashion-MNIST from the Debian files), the
  stage plan; ``build``: model, optimizer, checkpointer, the step function;
- ``input_pipeline``: 150 batches of the training input alone, as the trainer
  iterates them (`inputs.distributed_dataset`), and through
  ``OneDeviceStrategy.distribute_datasets_from_function`` (what it used before);
- ``step_compute``: the training step on one fixed batch (model, loss, gradient,
  SGD update), the floor for any trainer;
- ``step_loop``: the trainer's step function over its own iterator (K = 1),
  and the same over the distributed iterator of before: the difference in
  system time is the cost that iterator's background threads added to every step;
- ``hooks``: the default hooks' ``on_step_end`` (progress bar, TensorBoard);
- ``checkpoint``: one save;
- ``evaluation``: one prediction over val and over test (the final evaluation
  needs both; the last epoch's val prediction is reused when the weights have
  not changed since).

    python benchmarks/trainer_profile.py   # -> benchmarks/results/trainer_profile.json
    python benchmarks/trainer_profile.py --steps 10 --output /tmp/p.json   # quick
"""

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_fgvc.startup import quiet_tensorflow_import  # noqa: E402

quiet_tensorflow_import()

import tensorflow as tf  # noqa: E402

from keras_fgvc.training import inputs  # noqa: E402
from keras_fgvc.training.experiments import resolve_config  # noqa: E402
from keras_fgvc.training.loop import Trainer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = "fashion_lt10_softmax"


class Clock:
    """Wall, user and system seconds of a block (this process)."""

    def __enter__(self):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self._start = (time.perf_counter(), usage.ru_utime, usage.ru_stime)
        return self

    def __exit__(self, *exc):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        now = (time.perf_counter(), usage.ru_utime, usage.ru_stime)
        self.wall, self.user, self.system = (b - a for a, b in zip(self._start, now))

    def row(self, per=1):
        return {"wall_s": round(self.wall / per, 4), "user_s": round(self.user / per, 4),
                "system_s": round(self.system / per, 4)}


def _distributed_iterator(trainer, split, order):
    """The iterator the trainer used before: OneDeviceStrategy's distributed dataset."""
    batch = trainer.config.batch_size
    load = inputs._in_memory_loader(split, trainer.image_size)

    def dataset_fn(context):
        ds = tf.data.Dataset.from_tensor_slices(order).batch(batch, drop_remainder=True)
        return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    return iter(trainer.strategy.distribute_datasets_from_function(dataset_fn))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval_limit", type=int, default=0,
                        help="val / test images (0 = all; smoke runs)")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "trainer_profile.json"))
    args = parser.parse_args()
    steps = args.steps
    config = resolve_config(CONFIG, ["epochs=1", f"steps_per_epoch={steps}",
                                     "bn_reestimate_batches=0",
                                     f"max_eval_examples={args.eval_limit}"])
    parts = {}
    with tempfile.TemporaryDirectory() as workdir:
        trainer = Trainer(config, workdir=workdir, verbose=1)
        with Clock() as c:
            trainer.setup()
        parts["setup"] = c.row()
        with Clock() as c:
            stage = trainer._build(0)
        parts["build"] = c.row()
        split, batch = stage.split, config.batch_size
        order = inputs.epoch_order(split.labels, 0, steps, batch, config.seed, stage.sampling)
        make = lambda: iter(inputs.distributed_dataset(  # noqa: E731
            trainer.strategy, split, order, batch, trainer.image_size, trainer.channels,
            augment=config.augment, seed=config.seed))

        with Clock() as c:
            count = sum(1 for _ in make())
        parts["input_pipeline"] = {"batches": count, **c.row()}

        one = tf.constant(1, tf.int32)
        fixed = next(make())
        repeat = iter(tf.data.Dataset.from_tensors(fixed).repeat())
        trainer._train_step(repeat, one)  # trace
        with Clock() as c:
            for _ in range(steps):
                trainer._train_step(repeat, one).numpy()
        parts["step_compute_per_step"] = c.row(steps)

        def step_loop(iterator):
            trainer._train_step(iterator, one).numpy()
            with Clock() as c:
                for _ in range(steps - 1):
                    trainer._train_step(iterator, one).numpy()
            return c.row(steps - 1)

        parts["step_loop_per_step"] = step_loop(make())

        trainer._call_hooks("on_train_begin")
        trainer._call_hooks("on_epoch_begin", 0)
        with Clock() as c:
            for step in range(1, steps + 1):
                trainer._call_hooks("on_step_end", step, {"loss": 1.0, "learning_rate": 0.1})
        trainer._call_hooks("on_train_end", {})
        parts["hooks_per_step"] = c.row(steps)

        with Clock() as c:
            trainer.checkpointer.maybe_save(100, force=True)
        parts["checkpoint_save"] = c.row()

        for name in ("val", "test"):
            part = getattr(trainer.task, name)
            trainer.predict_with_labels(part)  # trace
            with Clock() as c:
                trainer.predict_with_labels(part)
            parts[f"predict_{name}"] = {"examples": len(part), **c.row()}

        # Last: once a distributed iterator exists, its threads tax everything after it.
        with Clock() as c:
            count = sum(1 for _ in _distributed_iterator(trainer, split, order))
        parts["input_pipeline_distributed_before"] = {"batches": count, **c.row()}
        parts["step_loop_per_step_distributed_before"] = step_loop(
            _distributed_iterator(trainer, split, order))

    step = parts["step_loop_per_step"]
    before = parts["step_loop_per_step_distributed_before"]
    compute = parts["step_compute_per_step"]
    report = {
        "benchmark": "trainer_profile", "config": CONFIG, "steps": steps, "batch_size": batch,
        "parts": parts,
        "findings": {
            "distributed_iterator_system_s_per_step": round(
                before["system_s"] - step["system_s"], 4),
            "step_loop_overhead_over_compute_cpu_s_per_step": round(
                step["user_s"] + step["system_s"] - compute["user_s"] - compute["system_s"], 4),
            "input_pipeline_share_of_training_wall": round(
                parts["input_pipeline"]["wall_s"] / (step["wall_s"] * steps), 4),
            "hooks_share_of_training_wall": round(
                parts["hooks_per_step"]["wall_s"] / step["wall_s"], 4),
            "repeated_val_prediction_avoided_s": parts["predict_val"]["wall_s"],
        },
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "tensorflow": tf.__version__,
                    "load_average_1min": round(os.getloadavg()[0], 2)},
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report["findings"], indent=1))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
