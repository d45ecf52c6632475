"""Checkpoints under ``W/checkpoints`` (tf.train.CheckpointManager) and resume.

A checkpoint holds the model, the optimizer (of the current stage), the
global step, the epoch and the per-class loss weights. The data position
follows from the global step: each epoch's example order is seeded by
``(seed, epoch)`` (`inputs.epoch_order`) and the batches already seen are
skipped (`stages.Stage.position`). Checkpoint numbers are global
steps, so the step to resume from is known before anything is built.

Under multi-worker training every worker saves (saving may run collectives);
only the chief writes to ``W/checkpoints``, the others to a scratch folder
that is deleted afterwards (the TensorFlow multi-worker recipe).
"""

import glob
import os
import re
import shutil

import tensorflow as tf

CHECKPOINT_DIR = "checkpoints"


def checkpoint_dir(workdir, chief=True, worker=0):
    """``W/checkpoints`` for the chief, ``W/.scratch/worker_<i>/checkpoints`` for the others."""
    if chief:
        return os.path.join(workdir, CHECKPOINT_DIR)
    return os.path.join(workdir, ".scratch", f"worker_{worker}", CHECKPOINT_DIR)


def latest_step(workdir):
    """Global step of the newest checkpoint in ``W/checkpoints`` (0 when there is none)."""
    path = tf.train.latest_checkpoint(os.path.join(workdir, CHECKPOINT_DIR))
    if not path:
        return 0
    match = re.search(r"ckpt-(\d+)$", path)
    return int(match.group(1)) if match else 0


def checkpoint_steps(workdir):
    """Steps of the checkpoints in ``W/checkpoints`` (``ckpt-N.index`` files), ascending."""
    names = glob.glob(os.path.join(glob.escape(workdir), CHECKPOINT_DIR, "ckpt-*.index"))
    steps = (re.fullmatch(r"ckpt-(\d+)\.index", os.path.basename(n)) for n in names)
    return sorted(int(m.group(1)) for m in steps if m)


def copy_checkpoint(source, step, workdir):
    """Make ``source``'s checkpoint at `step` the only one in ``workdir/checkpoints``.

    Copied aside and then moved in whole, so an interrupted copy leaves no half
    checkpoint; the state file names it, so the trainer resumes from `step`.
    Refuses a `workdir` that already holds a checkpoint.
    """
    if checkpoint_steps(workdir):
        raise ValueError(f"{workdir} already holds checkpoints; not replacing them.")
    prefix = f"ckpt-{step}"
    files = glob.glob(os.path.join(glob.escape(os.path.join(source, CHECKPOINT_DIR)),
                                   prefix + ".*"))
    if not any(f.endswith(".index") for f in files):
        raise ValueError(f"{source} has no checkpoint at step {step}.")
    target = os.path.join(workdir, CHECKPOINT_DIR)
    partial = target + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    for name in files:
        shutil.copy(name, partial)
    with open(os.path.join(partial, "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "{prefix}"\nall_model_checkpoint_paths: "{prefix}"\n')
    shutil.rmtree(target, ignore_errors=True)  # holds no checkpoint (checked above)
    os.replace(partial, target)
    return target


class Checkpointer:
    """Saves `objects` every `every_steps` steps and restores the newest checkpoint.

    Args:
        workdir: the run's workdir.
        objects: dict of trackables (model, optimizer, step variable, ...).
        every_steps: save period in global steps.
        keep: checkpoints kept.
        chief, worker: from the strategy (non-chief workers write to scratch).
    """

    def __init__(self, workdir, objects, every_steps, keep=3, chief=True, worker=0):
        self.workdir = workdir
        self.every_steps = int(every_steps)
        self.chief = chief
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.directory = checkpoint_dir(workdir, chief, worker)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=keep)

    def restore(self, step):
        """Restore the chief's checkpoint of global `step` (every worker reads the chief's)."""
        path = os.path.join(self.workdir, CHECKPOINT_DIR, f"ckpt-{step}")
        try:
            status = self.checkpoint.restore(path)
            status.assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as error:
            first = str(error).strip().splitlines()[0][:300]
            raise ValueError(
                f"The checkpoint {path} does not match this run's model / optimizer "
                f"({first}); was the config changed? Use a new --workdir."
            ) from None
        status.expect_partial()
        return path

    def maybe_save(self, step, force=False):
        """Save when `step` is a multiple of the period (or `force`); returns the path or None."""
        if not force and step % self.every_steps:
            return None
        if self.manager.latest_checkpoint and self.manager.latest_checkpoint.endswith(
            f"ckpt-{step}"
        ):
            return None
        return self.manager.save(checkpoint_number=step)

    def cleanup(self):
        """Remove a non-chief worker's scratch checkpoints (no-op on the chief)."""
        if not self.chief:
            shutil.rmtree(self.directory, ignore_errors=True)
