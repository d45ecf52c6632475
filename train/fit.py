r"""Train a registered experiment: ``python train/fit.py --config NAME --workdir W``.

Examples:

    python train/fit.py --config fashion_bg_ft --strategy one_device --workdir /tmp/fbg
    python train/fit.py --config fashion_bg_split --strategy mirrored --workdir /tmp/split \
        --set epochs=2 --set steps_per_epoch=50
    TF_CONFIG='{"cluster": {"worker": ["localhost:12345", "localhost:12346"]},
                "task": {"type": "worker", "index": 0}}' \
        python train/fit.py --config fashion_lt100_cb --strategy multi_worker --workdir /tmp/lt
    python train/fit.py --config folder_bg_split --set data_dir=DIR \
        --set task_kwargs.teacher_model=teacher.keras --workdir /tmp/mine

Rerunning the same command after a crash or ``kill -9`` resumes from the last
checkpoint in ``W/checkpoints``. ``--dry_run`` builds the task, model, loss and
input pipeline and runs one step without writing anything.
"""

import sys

from keras_fgvc.startup import quiet_tensorflow_import

quiet_tensorflow_import()  # before absl and TF print their CPU-only start-up noise

from absl import app, flags  # noqa: E402

from keras_fgvc.training.experiments import list_configs, resolve_config  # noqa: E402

_STRATEGIES = ("one_device", "mirrored", "multi_worker", "tpu")

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "config", None, f"Registered experiment. One of: {', '.join(list_configs())}."
)
flags.DEFINE_enum("strategy", "one_device", _STRATEGIES, "tf.distribute strategy.")
flags.DEFINE_string("tpu", None, "TPU name or grpc://HOST:PORT (--strategy=tpu).")
flags.DEFINE_string("workdir", None, "Output folder: checkpoints, model.keras, metrics, ...")
flags.DEFINE_multi_string(
    "set", [], "Config override key=value (repeatable; dict entries as field.key=value)."
)
flags.DEFINE_bool("dry_run", False, "Build everything, run one training step, write nothing.")
flags.DEFINE_integer(
    "num_cpu_devices", 2, "Logical CPU devices for --strategy=mirrored on a host without GPUs."
)
flags.mark_flag_as_required("config")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        config = resolve_config(FLAGS.config, FLAGS.set)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    if not FLAGS.workdir and not FLAGS.dry_run:
        raise app.UsageError("--workdir is required (or pass --dry_run).")

    from keras_fgvc.training import strategy as strategy_lib

    if FLAGS.strategy == "mirrored":
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            strategy_lib.configure_logical_cpus(FLAGS.num_cpu_devices)
    try:
        strategy = strategy_lib.make_strategy(FLAGS.strategy, tpu=FLAGS.tpu)
    except strategy_lib.StrategyError as error:
        sys.exit(f"error: {error}")

    print(f"Strategy {FLAGS.strategy}: {strategy.num_replicas_in_sync} replica(s).", flush=True)
    from keras_fgvc.training.loop import Trainer

    trainer = Trainer(config, strategy, workdir=None if FLAGS.dry_run else FLAGS.workdir)
    try:
        trainer.setup()
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    if FLAGS.dry_run:
        print(trainer.dry_run(steps=1))
        return
    result = trainer.run()
    scalars = {k: v for k, v in result["val"].items() if isinstance(v, float)}
    print(f"Finished {config.name} at step {result['steps']}; validation: {scalars}")


if __name__ == "__main__":
    app.run(main)
