"""Teacher pseudo-labels for the folder task: any saved classifier, cached, resumable."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.training import pseudo_labels, tasks
from keras_fgvc.training.experiments import resolve_config
from keras_fgvc.training.loss_recipes import build_loss
from tests.folder_images import make_folder, make_teacher


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    make_folder(str(root), {"background": 16, "red_spot": 6, "blue_spot": 5})
    return str(root)


def _images(paths, size):
    spec = pseudo_labels.make_spec(size, 3, crop_fraction=1.0)
    return np.concatenate(list(pseudo_labels.teacher_dataset(paths, spec, 8)))


def test_probabilities_match_the_teacher_and_are_cached(folder, tmp_path, monkeypatch):
    teacher = make_teacher(str(tmp_path / "t.keras"), num_classes=5, size=32)
    paths = sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs
                   if not f.startswith("broken"))
    probs, cache = pseudo_labels.teacher_probabilities(teacher, paths, batch_size=4,
                                                       shard_size=7, cache_dir=str(tmp_path))
    model = keras.saving.load_model(teacher)
    expected = model.predict(_images(paths, 32), verbose=0)  # fed at the teacher's 32 x 32
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    assert len(os.listdir(cache)) == -(-len(paths) // 7)

    # A second run reads the cache; a killed run recomputes only its missing shards.
    calls = []
    real = pseudo_labels.Teacher.__call__
    monkeypatch.setattr(pseudo_labels.Teacher, "__call__",
                        lambda self, x: calls.append(len(x)) or real(self, x))
    again, same = pseudo_labels.teacher_probabilities(teacher, paths, batch_size=4, shard_size=7,
                                                      cache_dir=str(tmp_path))
    assert same == cache and calls == []
    np.testing.assert_array_equal(again, probs)
    os.remove(os.path.join(cache, sorted(os.listdir(cache))[1]))
    resumed, _ = pseudo_labels.teacher_probabilities(teacher, paths, batch_size=4, shard_size=7,
                                                     cache_dir=str(tmp_path))
    assert sum(calls) == 7
    np.testing.assert_allclose(resumed, probs, atol=1e-6)

    # A changed teacher file invalidates the cache.
    make_teacher(teacher, num_classes=5, size=32, seed=1)
    changed, other = pseudo_labels.teacher_probabilities(teacher, paths, batch_size=4,
                                                         shard_size=7, cache_dir=str(tmp_path))
    assert other != cache and not np.allclose(changed, probs)


def test_savedmodel_teacher_with_logits(folder, tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((40, 40, 3))
    logits = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(inputs / 255.0))
    model = keras.Model(inputs, logits)
    model.export(str(tmp_path / "sm"), verbose=False)
    paths = sorted(os.path.join(r, f) for r, _, fs in os.walk(os.path.join(folder, "rare"))
                   for f in fs)
    probs, _ = pseudo_labels.teacher_probabilities(str(tmp_path / "sm"), paths,
                                                   cache_dir=str(tmp_path))
    expected = tf.nn.softmax(model.predict(_images(paths, 40), verbose=0)).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_folder_task_with_teacher_hard_and_soft(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_FGVC_CACHE", str(tmp_path))
    teacher = make_teacher(str(tmp_path / "t.keras"), num_classes=4, size=24)
    overrides = [f"data_dir={folder}", f"task_kwargs.teacher_model={teacher}"]
    task = tasks.build_task(resolve_config("folder_bg_split", overrides))
    assert task.teacher_class_names == [f"teacher_{i}" for i in range(4)]
    assert (task.train.teacher_labels >= 0).all() and (task.test.teacher_labels == -1).all()
    assert task.train.teacher_probabilities is None
    soft_config = resolve_config("folder_bg_split", overrides + ["task_kwargs.teacher_mode=soft"])
    soft = tasks.build_task(soft_config)
    np.testing.assert_array_equal(soft.train.teacher_probabilities.argmax(-1),
                                  task.train.teacher_labels)
    recipe = build_loss(soft_config, soft)
    assert "teacher_probabilities" in recipe.targets


def test_split_without_teacher_says_how_to_pass_one(folder):
    config = resolve_config("folder_bg_split_fixed", [f"data_dir={folder}"])
    with pytest.raises(ValueError, match="--set task_kwargs.teacher_model="):
        tasks.build_task(config)
    with pytest.raises(FileNotFoundError, match="--set data_dir=DIR"):
        tasks.build_task(resolve_config("folder_bg_ft", []))


def test_a_shard_another_worker_finished_is_read_not_computed(folder, tmp_path, monkeypatch):
    teacher = make_teacher(str(tmp_path / "t.keras"), num_classes=5, size=32)
    paths = sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs
                   if not f.startswith("broken"))
    probs, cache = pseudo_labels.teacher_probabilities(teacher, paths, batch_size=4,
                                                       shard_size=7, cache_dir=str(tmp_path),
                                                       verbose=0)
    files = sorted(os.listdir(cache))
    kept = {f: open(os.path.join(cache, f), "rb").read() for f in files[:2]}
    for f in files[:2]:
        os.remove(os.path.join(cache, f))

    def other_worker_finishes_shard_1(missing):  # while this worker starts on shard 0
        with open(os.path.join(cache, files[1]), "wb") as f:
            f.write(kept[files[1]])
        return list(missing)

    calls = []
    real = pseudo_labels.Teacher.__call__
    monkeypatch.setattr(pseudo_labels.Teacher, "__call__",
                        lambda self, x: calls.append(len(x)) or real(self, x))
    monkeypatch.setattr(pseudo_labels, "work_order", other_worker_finishes_shard_1)
    again, _ = pseudo_labels.teacher_probabilities(teacher, paths, batch_size=4, shard_size=7,
                                                   cache_dir=str(tmp_path), verbose=0)
    assert sum(calls) == 7  # shard 0 only
    np.testing.assert_allclose(again, probs, atol=1e-6)


def test_folder_task_with_records(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_FGVC_CACHE", str(tmp_path))
    teacher = make_teacher(str(tmp_path / "t.keras"), num_classes=4, size=24)
    overrides = [f"data_dir={folder}", f"task_kwargs.teacher_model={teacher}",
                 f"task_kwargs.records={tmp_path / 'records'}", "task_kwargs.records_shard_size=8"]
    task = tasks.build_task(resolve_config("folder_bg_split", overrides))
    assert all(getattr(task, s).records for s in ("train", "val", "test"))
    assert task.metadata["records"] == str(tmp_path / "records")
    for positional in (["sampling=class_balanced"], ["refresh_every_steps=5"],
                       ["finetune_epochs=1", "finetune_sampling=class_balanced"]):
        with pytest.raises(ValueError, match="cannot realise"):
            tasks.build_task(resolve_config("folder_bg_split", overrides + positional))
