"""The custom loop under one_device and mirrored: learning, clipping, artifacts, resume."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.training import inputs, tasks
from keras_fgvc.training.loop import Trainer
from keras_fgvc.training.strategy import make_strategy
from tests.training.conftest import TOY_LINEAR, make_toy_task, toy_config


def _weights(model):
    return [np.asarray(v) for v in model.weights]


@pytest.mark.parametrize("strategy_name", ["one_device", "mirrored"])
def test_loss_decreases_and_workdir_is_complete(strategy_name, tmp_path):
    strategy = make_strategy(strategy_name)
    assert strategy.num_replicas_in_sync == (2 if strategy_name == "mirrored" else 1)
    losses = []

    class Record:
        def __getattr__(self, name):
            return lambda *args: None

        def on_step_end(self, trainer, step, logs):
            losses.append(logs["loss"])

    config = toy_config(epochs=3, steps_per_epoch=5)
    trainer = Trainer(config, strategy, workdir=str(tmp_path), task=make_toy_task(),
                      hooks=[Record()], verbose=0)
    result = trainer.run()
    assert result["steps"] == 15 and len(losses) == 15
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
    # Background task: foreground mAP / F1 on validation, per epoch and at the end.
    assert result["val"]["mAP"] > 0.9 and result["val"]["macro_f1"] > 0.8
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3]

    files = sorted(os.listdir(tmp_path))
    for name in ("config.json", "checkpoints", "model.keras", "labels.txt", "thresholds.json",
                 "preprocessing.json", "metrics.json", "tensorboard"):
        assert name in files
    assert not [f for f in files if f.startswith(".tmp")]
    assert (tmp_path / "labels.txt").read_text().splitlines() == ["background", "rare1", "rare2"]
    thresholds = json.loads((tmp_path / "thresholds.json").read_text())
    assert thresholds["class_names"] == ["rare1", "rare2"]
    assert len(thresholds["thresholds"]) == 2
    assert json.loads((tmp_path / "preprocessing.json").read_text()) == {  # in-memory: no crop
        "image_size": [8, 8], "channels": 1, "aspect": "stretch", "crop_fraction": 1.0,
        "resize_method": "bilinear", "antialias": False, "has_background": True}
    assert json.loads((tmp_path / "config.json").read_text())["name"] == "toy"
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 15
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert latest.endswith("ckpt-15")
    reader = tf.train.load_checkpoint(latest)
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 15
    assert reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE") == 2  # 0-based, the last

    reloaded = keras.saving.load_model(str(tmp_path / "model.keras"))
    x = trainer.task.val.images[:5].astype("float32")
    np.testing.assert_allclose(reloaded(x)["probabilities"], trainer.model(x)["probabilities"],
                               rtol=1e-5, atol=1e-6)

    tags = set()
    for root, _, names in os.walk(tmp_path / "tensorboard"):
        for name in names:
            for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                tags.update(v.tag for v in event.summary.value)
    assert {"train/loss", "train/learning_rate", "eval/mAP"} <= tags


@pytest.mark.parametrize("strategy_name", ["one_device", "mirrored"])
def test_gradient_clipping_applies_to_the_global_gradient(strategy_name):
    # Ch. 3: every gradient element clipped to [-1, 1]. With SGD (no momentum, lr 1) and a
    # zero-initialised linear softmax model, one step moves the kernel by -clip(g, -c, c),
    # where g is the gradient of the mean loss over the *global* batch.
    task = make_toy_task(background=False)
    clip = 0.5
    config = toy_config(model=TOY_LINEAR, momentum=0.0, learning_rate=1.0, clip_value=clip,
                        steps_per_epoch=1, epochs=1, batch_size=32)
    trainer = Trainer(config, make_strategy(strategy_name), task=task, verbose=0)
    trainer.dry_run(steps=1)
    kernel = np.asarray(trainer.model.get_layer("classifier").kernel)

    order = inputs.epoch_order(task.train.labels, 0, 1, 32, seed=0)
    x = task.train.images[order].reshape(32, -1).astype(np.float64)
    y = np.eye(3)[task.train.labels[order]]
    grad = x.T @ (np.full((32, 3), 1.0 / 3) - y) / 32
    assert np.abs(grad).max() > 10 * clip  # the clip is active
    np.testing.assert_allclose(kernel, -np.clip(grad, -clip, clip), rtol=1e-5, atol=1e-6)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, capsys):
    task = make_toy_task()
    config = toy_config(epochs=2, steps_per_epoch=4, checkpoint_every_steps=3)
    straight = Trainer(config, make_strategy("one_device"), workdir=str(tmp_path / "a"),
                       task=task, verbose=0)
    straight.run()

    first = Trainer(config, make_strategy("one_device"), workdir=str(tmp_path / "b"), task=task,
                    verbose=0)
    assert first.run(max_steps=5) == {"step": 5, "stopped": True}
    assert not (tmp_path / "b" / "metrics.json").exists()
    second = Trainer(config, make_strategy("one_device"), workdir=str(tmp_path / "b"),
                     task=task, verbose=0)
    result = second.run()
    assert "Resuming from step 3" in capsys.readouterr().out
    assert result["resumed_from_step"] == 3 and result["steps"] == 8
    for a, b in zip(_weights(straight.model), _weights(second.model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_resuming_with_a_changed_config_is_refused_before_the_task_is_built(tmp_path,
                                                                            monkeypatch):
    task = make_toy_task()
    Trainer(toy_config(epochs=1, steps_per_epoch=4), workdir=str(tmp_path), task=task,
            verbose=0).run(max_steps=2)
    before = (tmp_path / "config.json").read_text()

    def build_task(config):
        raise AssertionError("the task was built before the config check")

    monkeypatch.setattr(tasks, "build_task", build_task)
    changed = Trainer(toy_config(epochs=1, steps_per_epoch=2, learning_rate=0.5),
                      workdir=str(tmp_path), verbose=0)
    with pytest.raises(ValueError, match=r"different config \(learning_rate: .* -> 0\.5, "
                                         r"steps_per_epoch: 4 -> 2\)"):
        changed.setup()
    assert (tmp_path / "config.json").read_text() == before  # nothing overwritten


def test_resuming_with_only_execution_settings_changed_is_allowed(tmp_path, capsys):
    task = make_toy_task()
    Trainer(toy_config(epochs=1, steps_per_epoch=4), workdir=str(tmp_path), task=task,
            verbose=0).run(max_steps=2)
    resumed = Trainer(toy_config(epochs=1, steps_per_epoch=4, eval_batch_size=7,
                                 log_every_steps=1, description="on another machine"),
                      workdir=str(tmp_path), task=task, verbose=0)
    assert resumed.run()["resumed_from_step"] == 2
    assert "Resuming from step 2" in capsys.readouterr().out


def test_a_config_json_from_before_a_new_field_still_resumes(tmp_path):
    task = make_toy_task()
    Trainer(toy_config(epochs=1, steps_per_epoch=4), workdir=str(tmp_path), task=task,
            verbose=0).run(max_steps=2)
    old = json.loads((tmp_path / "config.json").read_text())
    del old["refresh_max_examples"]  # as if written before the field existed (default kept)
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert Trainer(toy_config(epochs=1, steps_per_epoch=4), workdir=str(tmp_path), task=task,
                   verbose=0).run()["resumed_from_step"] == 2
    del old["seed"]  # but a missing field whose value now differs from the default counts
    (tmp_path / "config.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match="different config"):
        Trainer(toy_config(epochs=1, steps_per_epoch=4, seed=3), workdir=str(tmp_path),
                task=task, verbose=0).setup()


def test_checkpoint_beyond_the_config_is_refused(tmp_path):
    task = make_toy_task()
    Trainer(toy_config(epochs=1, steps_per_epoch=4), workdir=str(tmp_path), task=task,
            verbose=0).run()
    (tmp_path / "config.json").unlink()  # the config check needs it; this is the backstop
    shorter = Trainer(toy_config(epochs=1, steps_per_epoch=2), workdir=str(tmp_path), task=task,
                      verbose=0)
    with pytest.raises(ValueError, match="step 4, beyond this config's 2 steps"):
        shorter.run()


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    task = make_toy_task()
    Trainer(toy_config(epochs=1, steps_per_epoch=2), workdir=str(tmp_path), task=task,
            verbose=0).run(max_steps=2)
    (tmp_path / "config.json").unlink()  # the config check needs it; this is the backstop
    other = Trainer(toy_config(model=TOY_LINEAR, epochs=1, steps_per_epoch=4),
                    workdir=str(tmp_path), task=task, verbose=0)
    with pytest.raises(ValueError, match="does not match this run's model"):
        other.run()


def test_bad_task_input_is_refused_before_training(tmp_path):
    task = make_toy_task()
    task.train.labels[5] = 7  # a label outside [0, 2]
    with pytest.raises(ValueError, match="train label 7 is outside the class range"):
        Trainer(toy_config(), workdir=str(tmp_path), task=task, verbose=0).run()
    task = make_toy_task()
    task.train.labels[task.train.labels == 2] = 1  # class 2 has no training example
    with pytest.raises(ValueError, match="class 2 \\('rare2'\\) has no examples"):
        Trainer(toy_config(), workdir=str(tmp_path), task=task, verbose=0).run()
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.slow
def test_file_based_task_trains_through_the_data_pipeline(tmp_path):
    # JPEG files (one corrupt) -> keras_fgvc.data.pipeline: decode, random-resized crop,
    # flip; the unreadable file is skipped and counted, never fatal.
    from keras_fgvc.data.task import Split, Task

    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(48):
        label = i % 3
        pixels = np.clip(rng.normal(60 + 70 * label, 20, (20, 24, 3)), 0, 255).astype(np.uint8)
        path = str(tmp_path / f"img{i}.jpg")
        tf.io.write_file(path, tf.io.encode_jpeg(pixels))
        paths.append(path)
        labels.append(label)
    (tmp_path / "img0.jpg").write_bytes(b"not a jpeg")
    split = Split(labels=np.array(labels), paths=np.array(paths, dtype=object))
    task = Task("files", ["background", "a", "b"], split, split.subset(np.arange(12)),
                split.subset(np.arange(12)), has_background=True)
    config = toy_config(channels=3, image_size=8, augment=True, batch_size=8, epochs=2,
                        steps_per_epoch=6, checkpoint_every_steps=100)
    trainer = Trainer(config, workdir=str(tmp_path / "w"), task=task, verbose=0)
    result = trainer.run()
    assert result["steps"] == 12
    assert result["skipped_training_images"] >= 1  # img0 is in every epoch's order
    assert result["val"]["num_examples"] == 11  # the corrupt image is left out
    # augment=True: evaluation took the centred 0.875 square, and preprocessing.json says so.
    assert json.loads((tmp_path / "w" / "preprocessing.json").read_text()) == {
        "image_size": [8, 8], "channels": 3, "aspect": "center_square", "crop_fraction": 0.875,
        "resize_method": "bilinear", "antialias": False, "has_background": True}
    # The exported serving_default prepares the (20 x 24) files as evaluation did.
    from keras_fgvc.export import saved_model

    path = saved_model.export_from_workdir(str(tmp_path / "w"), str(tmp_path / "models"),
                                           "files", warmup_batch_sizes=())
    readable = task.val.subset(np.arange(1, 12))
    served = tf.saved_model.load(path).signatures["serving_default"](image_bytes=tf.constant(
        [tf.io.read_file(p).numpy() for p in readable.paths]))
    np.testing.assert_allclose(served["scores"].numpy(), trainer.predict(readable)[:, 1:],
                               rtol=0, atol=1e-5)
