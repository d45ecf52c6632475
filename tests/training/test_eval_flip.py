"""Config.eval_flip (Ch. 3.4): evaluation scores the mean over an image and its mirror; the
workdir says so (preprocessing.json) and the exported detector serves those same scores."""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from keras_fgvc.training import evaluation
from keras_fgvc.training.experiments import get_config
from keras_fgvc.training.loop import Trainer
from tests.training.conftest import make_toy_task, toy_config


def test_eval_flip_evaluates_and_saves_the_mirror_average(tmp_path):
    task = make_toy_task()
    workdir = str(tmp_path / "run")
    trainer = Trainer(toy_config(eval_flip=True, epochs=1, steps_per_epoch=3), task=task,
                      workdir=workdir, verbose=0)
    metrics = trainer.run()
    images = task.val.images.astype("float32")
    model = trainer.model  # the trained model, unwrapped
    want = (np.asarray(model(images)["probabilities"])
            + np.asarray(model(images[:, :, ::-1, :])["probabilities"])) / 2
    got = trainer.predict(task.val)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    plain = np.asarray(model(images)["probabilities"])
    assert np.abs(plain - want).max() > 1e-3  # the mirror changes the scores
    # The reported metrics are those of the averaged scores ...
    expected = evaluation.evaluate(task, task.val.labels, want, full=True)
    compared = [key for key, value in metrics["val"].items() if isinstance(value, float)]
    assert compared
    for key in compared:
        np.testing.assert_allclose(metrics["val"][key], expected[key], rtol=1e-5, atol=1e-6)
    # ... the workdir keeps the plain model (what init_trunk, LWS and the feature tools read)
    # and says the scores are flip-averaged; the export serves them.
    from keras_fgvc.export.saved_model import export_from_workdir

    saved = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    np.testing.assert_allclose(np.asarray(saved(images)["probabilities"]), plain, rtol=1e-5,
                               atol=1e-6)
    with open(os.path.join(workdir, "preprocessing.json")) as f:
        assert json.load(f)["flip_average"] is True
    path = export_from_workdir(workdir, str(tmp_path / "models"), "toy", warmup_batch_sizes=())
    served = tf.saved_model.load(path).signatures["predict_images"](images=tf.constant(images))
    np.testing.assert_allclose(served["scores"].numpy(), want[:, 1:], rtol=0, atol=1e-5)
    with open(os.path.join(path, "assets", "preprocessing.json")) as f:
        assert json.load(f)["flip_average"] is True


def test_embeddings_are_not_flip_averaged():
    """The anchor refresh and the miners read L2-normalised embeddings: a mean of two unit
    vectors is not one, so eval_flip averages the scores only."""
    from keras_fgvc.models import create_model

    model = create_model("anchor_metric", num_classes=3, input_shape=(28, 28, 1))
    x = np.random.default_rng(0).uniform(0, 255, (4, 28, 28, 1)).astype("float32")
    functions = evaluation.PredictFunctions(flip=True)
    np.testing.assert_allclose(functions.get(model, "embedding")(tf.constant(x)).numpy(),
                               np.asarray(model(x)["embedding"]), rtol=1e-5, atol=1e-6)
    mirrored = (np.asarray(model(x)["logits"]) + np.asarray(model(x[:, :, ::-1])["logits"])) / 2
    np.testing.assert_allclose(functions.get(model, "logits")(tf.constant(x)).numpy(), mirrored,
                               rtol=1e-5, atol=1e-5)


def test_off_by_default_and_on_for_the_kernel_pooling_cub_configs():
    assert not toy_config().eval_flip
    for name in ("cub_kernel_pooling_resnet50", "cub_kernel_pooling_vgg16",
                 "cub_compact_bilinear_vgg16"):
        assert get_config(name).eval_flip, name
    assert not get_config("fashion_pool_kp").eval_flip
