"""Checkpoint listing and copying (`keras_fgvc.training.checkpointing`)."""

import os

import pytest
import tensorflow as tf

from keras_fgvc.training import checkpointing


def _save(workdir, steps):
    step = tf.Variable(0, dtype=tf.int64)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(step=step),
                                         os.path.join(workdir, "checkpoints"), max_to_keep=None)
    for s in steps:
        step.assign(s)
        manager.save(checkpoint_number=s)


def test_listing_and_copying_one_checkpoint(tmp_path):
    source, target = str(tmp_path / "a"), str(tmp_path / "b")
    _save(source, [2, 4, 6])
    (tmp_path / "a" / "checkpoints" / "ckpt-x.index").write_text("not a step")
    assert checkpointing.checkpoint_steps(source) == [2, 4, 6]
    assert checkpointing.checkpoint_steps(str(tmp_path / "none")) == []

    checkpointing.copy_checkpoint(source, 4, target)
    assert checkpointing.checkpoint_steps(target) == [4]
    assert checkpointing.latest_step(target) == 4  # the state file names it
    restored = tf.Variable(0, dtype=tf.int64)
    tf.train.Checkpoint(step=restored).restore(
        tf.train.latest_checkpoint(os.path.join(target, "checkpoints"))).expect_partial()
    assert int(restored) == 4
    assert not os.path.exists(os.path.join(target, "checkpoints.partial"))


def test_copy_refuses_a_missing_step_and_an_occupied_workdir(tmp_path):
    source, target = str(tmp_path / "a"), str(tmp_path / "b")
    _save(source, [2])
    with pytest.raises(ValueError, match="no checkpoint at step 3"):
        checkpointing.copy_checkpoint(source, 3, target)
    checkpointing.copy_checkpoint(source, 2, target)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        checkpointing.copy_checkpoint(source, 2, target)
    assert checkpointing.checkpoint_steps(target) == [2]
