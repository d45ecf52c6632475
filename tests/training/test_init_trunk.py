"""init_trunk: every Fashion-BG method fine-tunes the teacher's trunk, fresh heads (BG paper)."""

import dataclasses

import numpy as np
import pytest

from keras_fgvc.models import create_model
from keras_fgvc.models.transfer import copy_trunk
from keras_fgvc.training.experiments import get_config, list_configs
from keras_fgvc.training.loop import Trainer
from tests.training.conftest import make_toy_task, toy_config

TEACHER_CLASSES = 5


def _weights(layer):
    return [np.array(w) for w in layer.weights]


def _task_with_teacher(tmp_path, seed=7):
    task = make_toy_task(n_train=64, n_eval=16, size=28)
    teacher = create_model("small_cnn", num_classes=TEACHER_CLASSES, input_shape=(28, 28, 1))
    rng = np.random.default_rng(seed)
    for w in teacher.weights:  # unlike any fresh initialisation
        value = rng.normal(size=w.shape) * 0.1
        w.assign((np.abs(value) + 0.5 if "variance" in w.path else value).astype("float32"))
    path = str(tmp_path / "teacher.keras")
    teacher.save(path)
    task.train.teacher_labels = np.arange(len(task.train)) % TEACHER_CLASSES
    task = dataclasses.replace(task, teacher_model=path,
                               teacher_class_names=[f"t{i}" for i in range(TEACHER_CLASSES)])
    return task, teacher


def _built(config, task):
    trainer = Trainer(config, task=task, verbose=0)
    trainer.setup()
    trainer._build(0)
    return trainer


@pytest.mark.parametrize("model, loss", [("small_cnn", "softmax"), ("bg_split", "bg_split")])
def test_teacher_trunk_copied_heads_fresh(tmp_path, model, loss):
    task, teacher = _task_with_teacher(tmp_path)
    config = toy_config(model=model, loss=loss, epochs=1, steps_per_epoch=2)
    student = _built(dataclasses.replace(config, init_trunk="teacher"), task).model
    scratch = _built(config, task).model
    for got, want in zip(_weights(student.get_layer("backbone")),
                         _weights(teacher.get_layer("backbone"))):
        np.testing.assert_array_equal(got, want)
    assert not np.allclose(_weights(scratch.get_layer("backbone"))[0],
                           _weights(teacher.get_layer("backbone"))[0])
    # The heads are not the teacher's: the same fresh initialisation as a from-scratch run.
    heads = ["classifier"] + (["aux_classifier"] if model == "bg_split" else [])
    for name in heads:
        for got, want in zip(_weights(student.get_layer(name)), _weights(scratch.get_layer(name))):
            np.testing.assert_array_equal(got, want)
    teacher_head = _weights(teacher.get_layer("classifier"))[0]
    if model == "bg_split":  # same shape as the teacher's head, still not copied
        assert not np.allclose(_weights(student.get_layer("aux_classifier"))[0], teacher_head)


def test_the_whole_network_is_fine_tuned(tmp_path):
    task, teacher = _task_with_teacher(tmp_path)
    config = toy_config(model="small_cnn", init_trunk="teacher", epochs=1, steps_per_epoch=2,
                        learning_rate=0.05)
    trainer = Trainer(config, task=task, verbose=0)
    trainer.run()
    moved = [not np.allclose(a, b) for a, b in zip(_weights(trainer.model.get_layer("backbone")),
                                                     _weights(teacher.get_layer("backbone")))]
    assert any(moved)  # the trunk trains too (fine-tuning, not a frozen feature extractor)


def test_errors(tmp_path):
    task = make_toy_task(n_train=64, n_eval=16, size=28)
    config = toy_config(model="small_cnn", init_trunk="teacher")
    with pytest.raises(ValueError, match="no saved teacher model"):
        _built(config, task)
    other = create_model("small_cnn", num_classes=3, input_shape=(32, 32, 3))
    path = str(tmp_path / "rgb.keras")
    other.save(path)
    with pytest.raises(ValueError, match="shape"):
        _built(dataclasses.replace(config, init_trunk=path), task)
    with pytest.raises(ValueError, match="init_trunk"):
        _built(dataclasses.replace(config, init_trunk="imagenet"), task)
    source = create_model("classifier", num_classes=3, input_shape=(28, 28, 1),
                          reduce_channels=8)
    target = create_model("small_cnn", num_classes=3)
    with pytest.raises(ValueError, match="reduce"):
        copy_trunk(source, target)


def test_fashion_bg_configs_start_from_the_teacher_and_scratch_variants_do_not():
    names = [n for n in list_configs() if n.startswith("fashion_bg_")]
    methods = [n for n in names if not n.endswith("_scratch")]
    assert len(methods) == 10
    for name in methods:
        assert get_config(name).init_trunk == "teacher", name
        scratch = get_config(f"{name}_scratch")
        assert scratch.init_trunk == ""
        assert dataclasses.replace(scratch, name=name, description="", init_trunk="teacher") == \
            dataclasses.replace(get_config(name), description="")


@pytest.mark.parametrize("lws", [False, True])
def test_resume_restores_the_checkpoint_over_the_teacher_trunk(tmp_path, lws):
    """A resumed run equals an uninterrupted one (the copy happens before the restore)."""
    task, _ = _task_with_teacher(tmp_path)
    extra = dict(finetune_epochs=1, finetune_transform="lws", finetune_learning_rate=0.01,
                 finetune_sampling="class_balanced") if lws else {}
    config = toy_config(model="small_cnn", init_trunk="teacher", epochs=1, steps_per_epoch=4,
                        checkpoint_every_steps=1, learning_rate=0.05, **extra)
    straight = Trainer(config, task=task, verbose=0)
    straight.run()
    workdir = str(tmp_path / "run")
    stop = 5 if lws else 2  # inside LWS's second stage, or mid-way through the only stage
    assert Trainer(config, workdir=workdir, task=task, verbose=0).run(max_steps=stop)["stopped"]
    resumed = Trainer(config, workdir=workdir, task=task, verbose=0)
    resumed.run()
    for a, b in zip(resumed.model.weights, straight.model.weights):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-6)


def test_kernel_pooling_gamma_is_estimated_on_the_copied_trunk(tmp_path):
    """Sec. 3.3.2: gamma = 1 / the mean inner product of the training features. With
    init_trunk, those are the copied trunk's features, not the random trunk's the model was
    built with: gamma and the RBF coefficients are estimated again after the copy."""
    from keras_fgvc.layers import KernelPooling
    from keras_fgvc.layers.kernel_pooling import rbf_coefficients
    from keras_fgvc.training.builders import _adapt_sample

    task, teacher = _task_with_teacher(tmp_path)
    config = toy_config(model="classifier", adapt_examples=16, epochs=1, steps_per_epoch=2,
                        model_kwargs={"backbone": "small_cnn", "pooling": "kernel",
                                      "pooling_kwargs": {"order": 2, "dims": 64}})
    student = _built(dataclasses.replace(config, init_trunk="teacher"), task).model
    scratch = _built(config, task).model
    sample = _adapt_sample(config, task, 28, 1)
    features = np.asarray(teacher.get_layer("backbone")(sample), np.float64)
    vectors = features.reshape(-1, features.shape[-1])
    pairs = vectors @ vectors.T  # every pair of distinct positions, written out
    mean = (pairs.sum() - np.trace(pairs)) / (len(vectors) * (len(vectors) - 1))
    (layer,) = [lay for lay in student.layers if isinstance(lay, KernelPooling)]
    np.testing.assert_allclose(layer.gamma, 1 / mean, rtol=1e-4)
    np.testing.assert_allclose(np.array(layer.weights[0]), rbf_coefficients(2, 1 / mean),
                               rtol=1e-4)
    (fresh,) = [lay for lay in scratch.layers if isinstance(lay, KernelPooling)]
    assert not np.isclose(fresh.gamma, layer.gamma, rtol=0.1)  # the random trunk's differs
