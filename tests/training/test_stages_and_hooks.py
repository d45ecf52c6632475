"""Example order, triplet mining, DRW, anchor refresh, two stages (LWS) and mixed precision."""

import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.training import hooks, inputs, mining, stages
from keras_fgvc.training.loop import Trainer
from keras_fgvc.training.strategy import make_strategy
from tests.training.conftest import make_toy_task, toy_config


def test_epoch_order():
    labels = np.repeat(np.arange(4), [70, 20, 8, 2])
    order = inputs.epoch_order(labels, epoch=3, num_steps=4, batch_size=25, seed=1)
    assert sorted(order.tolist()) == list(range(100))  # one permutation per epoch
    np.testing.assert_array_equal(order, inputs.epoch_order(labels, 3, 4, 25, seed=1))
    assert not np.array_equal(order, inputs.epoch_order(labels, 4, 4, 25, seed=1))
    longer = inputs.epoch_order(labels, 0, 10, 25)
    assert len(longer) == 250 and np.bincount(longer).min() >= 2
    balanced = inputs.epoch_order(labels, 0, 400, 25, sampling="class_balanced")
    share = np.bincount(labels[balanced], minlength=4) / len(balanced)
    np.testing.assert_allclose(share, 0.25, atol=0.02)  # uniform over classes, not 70/20/8/2


def test_mined_triplets():
    rng = np.random.default_rng(0)
    centres = np.eye(3, 8)
    labels = np.repeat(np.arange(3), 20)
    emb = centres[labels] + rng.normal(0, 0.3, size=(60, 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    order = mining.mine_triplet_order(emb, labels, count=300, margin=0.2, seed=0)
    assert len(order) == 300
    d = ((emb[:, None] - emb[None]) ** 2).sum(-1)
    for r, p, n in order.reshape(-1, 3):
        assert labels[r] == labels[p] and r != p and labels[n] != labels[r]
        same = np.flatnonzero((labels == labels[r]) & (np.arange(60) != r))
        nearest = same[np.argsort(d[r, same])][: int(np.ceil(0.6 * len(same)))]
        assert p in nearest  # local positive (Sec. 2.3.3)
        others = np.flatnonzero(labels != labels[r])
        if (d[r, others] < d[r, p] + 0.2).any():
            assert d[r, n] < d[r, p] + 0.2  # a margin violator (hard negative)
        else:
            assert n == others[np.argmin(d[r, others])]
    with pytest.raises(ValueError, match="two classes"):
        mining.mine_triplet_order(emb[:5], np.zeros(5), 3)


def test_deferred_reweighting_switches_at_its_epoch():
    task = make_toy_task(n_train=96)
    task.train.labels[:60] = 0  # imbalanced: 60 / 18 / 18
    config = toy_config(drw_epoch=1, drw_beta=0.999, epochs=2, steps_per_epoch=1)
    seen = []

    class Spy(hooks.Hook):
        def on_step_end(self, trainer, step, logs):
            seen.append(trainer.class_weights.numpy().copy())

    Trainer(config, task=task, hooks=[Spy()], verbose=0).run()
    np.testing.assert_allclose(seen[0], 1.0)
    counts = np.bincount(task.train.labels)
    expected = (1 - 0.999) / (1 - 0.999 ** counts)
    np.testing.assert_allclose(seen[1], expected / expected.sum() * 3, rtol=1e-5)


def test_two_stage_plan_and_boundary():
    task = make_toy_task(n_train=96)
    config = toy_config(epochs=2, steps_per_epoch=3, finetune_epochs=1,
                        finetune_learning_rate=1e-3, finetune_max_per_class=4)
    plan = stages.plan_stages(config, task)
    assert [(s.start_step, s.end_step, s.start_epoch) for s in plan] == [(0, 6, 0), (6, 9, 2)]
    assert np.bincount(plan[1].split.labels).max() == 4  # the balanced subset
    assert stages.stage_for_step(plan, 6).index == 0  # the boundary step ends stage 0
    assert stages.stage_for_step(plan, 7).index == 1
    assert plan[1].position(7) == (2, 1)


def test_lws_second_stage_trains_only_the_scales_and_resumes(tmp_path, capsys):
    task = make_toy_task()
    config = toy_config(epochs=1, steps_per_epoch=3, finetune_epochs=1, finetune_transform="lws",
                        finetune_sampling="class_balanced", finetune_learning_rate=0.5,
                        checkpoint_every_steps=2)
    first = Trainer(config, workdir=str(tmp_path), task=task, verbose=0)
    first.run(max_steps=5)  # stopped inside stage 2 (checkpoint at step 4)
    scales = np.asarray(first.model.get_layer("lws").scale)
    second = Trainer(config, workdir=str(tmp_path), task=task, verbose=0)
    result = second.run()
    assert "Resuming from step 4" in capsys.readouterr().out
    assert result["steps"] == 6 and second.model.get_layer("lws") is not None
    trainable = [v.path for v in second.model.trainable_variables]
    assert trainable == [second.model.get_layer("lws").scale.path]
    assert not np.allclose(np.asarray(second.model.get_layer("lws").scale), 1.0)
    assert scales.shape == (3,)


def _anchor_run(monkeypatch, *extra):
    """A short Triplet-A run with M = 2; records k-means calls and anchors around refreshes."""
    from keras_fgvc.layers import AnchorSoftVote
    from keras_fgvc.training import tasks
    from keras_fgvc.training.experiments import resolve_config

    calls, around_refresh = [], []
    original_init = AnchorSoftVote.init_from_embeddings
    original_refresh = hooks.AnchorRefreshHook.refresh

    def spy_init(layer, embeddings, labels, seed=0):
        calls.append((np.asarray(embeddings).shape, np.asarray(labels).copy()))
        result = original_init(layer, embeddings, labels, seed=seed)
        calls[-1] += (np.array(layer.anchors),)
        return result

    def spy_refresh(hook, trainer):
        before = np.array(trainer.model.get_layer("anchors").anchors)
        original_refresh(hook, trainer)
        after = np.array(trainer.model.get_layer("anchors").anchors)
        around_refresh.append((trainer.global_step, before, after))

    monkeypatch.setattr(AnchorSoftVote, "init_from_embeddings", spy_init)
    monkeypatch.setattr(hooks.AnchorRefreshHook, "refresh", spy_refresh)
    config = resolve_config("fashion_metric_triplet_anchors", [
        "max_train_examples=300", "max_eval_examples=30", "batch_size=30", "epochs=2",
        "steps_per_epoch=3", "refresh_every_steps=2", "refresh_max_examples=120",
        "eval_batch_size=30", *extra,
    ])
    task = tasks.build_task(config)
    orders = []

    class Spy(hooks.Hook):
        def on_step_end(self, trainer, step, logs):
            orders.append(trainer._order.copy())

    trainer = Trainer(config, task=task, hooks=[Spy()], verbose=0)
    result = trainer.run()
    return trainer, result, calls, around_refresh, orders


def test_anchor_refresh_remines_and_keeps_learned_anchors(monkeypatch):
    trainer, result, calls, around_refresh, orders = _anchor_run(monkeypatch)
    refresh_hook = next(h for h in trainer.hooks if isinstance(h, hooks.AnchorRefreshHook))
    assert result["steps"] == 6
    # Epoch 1 begins with a refresh, then at step 2 and step 4 (M = 2).
    assert refresh_hook.refreshes == 3
    assert [step for step, _, _ in around_refresh] == [0, 2, 4]
    # k-means (Sec. 2.3.4) once, before the first step, from 64-d embeddings of the subset
    # topped up to min(n_c, 32) rows of every class (~12 of each of the 10 are in the 120).
    assert len(calls) == 1 and calls[0][0][1] == 64
    counts = np.bincount(trainer.task.train.labels, minlength=10)
    init_counts = np.bincount(calls[0][1], minlength=10)
    assert (init_counts >= np.minimum(counts, hooks.AnchorRefreshHook.INIT_MIN_PER_CLASS)).all()
    assert calls[0][0][0] == refresh_hook.init_rows > 120
    kmeans_start = calls[0][2]
    # A refresh after training has started re-mines triplets and leaves the anchors as learned.
    for step, before, after in around_refresh[1:]:
        np.testing.assert_array_equal(before, after, err_msg=f"refresh at step {step}")
    # The anchors are learned by gradient (Sec. 2.3.5): they moved away from the k-means start.
    final = np.array(trainer.model.get_layer("anchors").anchors)
    assert np.abs(final - kmeans_start).max() > 1e-4
    # Each refresh embeds a new random subset: over the run, the mined triplets reach more of
    # the training set than one subset of refresh_max_examples (120) images.
    assert len(np.unique(np.concatenate(orders))) > 120
    # Triplets: each (reference, positive) pair shares a class, the negative does not.
    labels = trainer.task.train.labels
    triple = orders[0][:30].reshape(-1, 3)
    assert (labels[triple[:, 0]] == labels[triple[:, 1]]).all()
    assert (labels[triple[:, 0]] != labels[triple[:, 2]]).all()


class _StubStage:
    def __init__(self, split):
        self.split, self.steps_per_epoch = split, 1


class _StubTrainer:
    """What `AnchorRefreshHook.refresh` reads of a trainer; embeddings looked up by row."""

    def __init__(self, split, embeddings, model, num_classes):
        from types import SimpleNamespace

        self.stage, self.model, self.chief = _StubStage(split), model, False
        self.task = SimpleNamespace(num_classes=num_classes)
        self.config = SimpleNamespace(seed=0, batch_size=3)
        self.global_step = self.step_in_epoch = 0
        self.table, self.predicted = embeddings, 0

    def predict(self, split, output):
        assert output == "embedding"
        rows = split.images[:, 0, :, 0].astype(np.int64) @ np.array([1, 256])
        self.predicted += len(rows)
        return self.table[rows]

    def replace_order(self, order):
        self.order = order


def test_anchor_kmeans_start_covers_every_class_of_a_many_class_set():
    # 620 classes x 25 images (flowers-620's scale): a random 2,048 of the 15,500 rows misses
    # classes, from which k-means cannot start. Every class gets min(25, 32) = all its rows.
    import keras

    from keras_fgvc.data.task import Split
    from keras_fgvc.layers import AnchorSoftVote

    classes, per_class, dim = 620, 25, 8
    labels = np.repeat(np.arange(classes), per_class)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(classes, dim)) * 10
    embeddings = (centres[labels] + rng.normal(size=(len(labels), dim)) * 0.1).astype("float32")
    rows = np.arange(len(labels))
    images = np.zeros((len(labels), 1, 2, 1), np.uint8)
    images[:, 0, 0, 0], images[:, 0, 1, 0] = rows % 256, rows // 256
    split = Split(labels=labels, images=images)
    vote = AnchorSoftVote(classes, anchors_per_class=3, name="anchors")
    inputs = keras.Input((dim,))
    model = keras.Model(inputs, vote(inputs))
    trainer = _StubTrainer(split, embeddings, model, classes)
    hook = hooks.AnchorRefreshHook(every_steps=1, max_examples=2048)
    hook.refresh(trainer)  # raised "class ... has no embedding" before the fix
    assert hook.anchor_inits == 1 and hook.init_rows == len(labels)
    anchors = np.array(vote.anchors)
    # each class's anchors are k-means centres of its own embeddings (within its spread)
    dist = np.linalg.norm(anchors - centres[:, None, :], axis=-1)
    assert dist.max() < 1.0
    # the mining subset stays 2,048 rows; only the start embedded the others
    assert len(hook.subset) == 2048 and trainer.predicted == len(labels)


def test_anchors_receive_gradients():
    from keras_fgvc.models import create_model
    from keras_fgvc.training.experiments import resolve_config
    from keras_fgvc.training.loss_recipes import build_loss

    model = create_model("anchor_metric", num_classes=10)
    anchors = model.get_layer("anchors").anchors
    assert anchors.trainable and any(v is anchors for v in model.trainable_variables)
    config = resolve_config("fashion_metric_triplet_anchors")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 3)
    task = make_toy_task(num_classes=10, background=False)
    recipe = build_loss(config, task)
    images = tf.constant(rng.uniform(0, 255, (30, 28, 28, 1)).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(recipe({"labels": tf.constant(labels)},
                                     model(images, training=True)))
    grad = tape.gradient(loss, anchors.value)
    assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0.0


def test_refresh_anchors_option_reinitialises_at_every_refresh(monkeypatch):
    _, _, calls, around_refresh, _ = _anchor_run(monkeypatch, "refresh_anchors=true")
    assert len(calls) == 3 and all(shape[0] > 120 and shape[1] == 64 for shape, _, _ in calls)
    for step, before, after in around_refresh[1:]:
        assert not np.allclose(before, after), f"refresh at step {step} kept the anchors"


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_step(policy):
    trainer = Trainer(toy_config(mixed_precision=policy, clip_value=1.0), task=make_toy_task(),
                      strategy=make_strategy("mirrored"), verbose=0)
    result = trainer.dry_run(steps=2)
    assert np.isfinite(result["losses"]).all()
    assert trainer.model.get_layer("classifier").compute_dtype == policy.split("_")[1]
    assert (type(trainer.optimizer).__name__ == "LossScaleOptimizer") == (policy ==
                                                                         "mixed_float16")


def test_progress_line_shows_metrics_and_says_once_that_batchnorm_comes_later(capsys):
    """The epoch line leaves out counts and settings; with BN re-estimation on, it says once
    that these figures use the statistics as trained (they can read near chance)."""
    import types

    trainer = types.SimpleNamespace(chief=True,
                                    config=types.SimpleNamespace(bn_reestimate_batches=20))
    logs = {"top1_accuracy": 0.125, "mAP": 0.25, "head_threshold": 100.0, "num_classes": 8.0,
            "num_examples": 1386.0}
    hook = hooks.ProgressHook(verbose=1)
    hook.on_epoch_end(trainer, 0, logs)
    hook.on_epoch_end(trainer, 1, logs)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Epoch 1 evaluation (1386 val images): mAP=0.2500, top1_accuracy=0.1250"
    assert "BatchNorm moving statistics as trained" in lines[1] and "20 training" in lines[1]
    assert lines[2].startswith("Epoch 2 evaluation") and len(lines) == 3
    trainer.config.bn_reestimate_batches = 0
    hooks.ProgressHook(verbose=1).on_epoch_end(trainer, 0, logs)
    assert "BatchNorm" not in capsys.readouterr().out
