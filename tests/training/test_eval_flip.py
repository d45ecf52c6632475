"""Config.eval_flip (Ch. 3.4): evaluation scores the mean over an image and its mirror, and the
saved model, hence the exported one, returns those same scores."""

import os

import keras
import numpy as np

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
    # ... and the saved model (what export serves) computes them too.
    saved = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    np.testing.assert_allclose(np.asarray(saved(images)["probabilities"]), want, rtol=1e-5,
                               atol=1e-6)


def test_off_by_default_and_on_for_the_kernel_pooling_cub_configs():
    assert not toy_config().eval_flip
    for name in ("cub_kernel_pooling_resnet50", "cub_kernel_pooling_vgg16",
                 "cub_compact_bilinear_vgg16"):
        assert get_config(name).eval_flip, name
    assert not get_config("fashion_pool_kp").eval_flip
