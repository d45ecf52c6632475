"""benchmarks/bn_statistics.py: BN moving statistics re-estimated from batch statistics."""

import importlib.util
import json
import math
import os

import keras
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load():
    spec = importlib.util.spec_from_file_location(
        "_bn_statistics", os.path.join(REPO, "benchmarks", "bn_statistics.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bn_statistics = _load()


def _model():
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.BatchNormalization(name="bn1")(inputs)
    x = keras.layers.Conv2D(3, 1, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    return keras.Model(inputs, x)


def test_reestimated_statistics_are_the_mean_of_the_batch_statistics():
    rng = np.random.default_rng(1)
    images = rng.normal(3.0, 0.1, size=(40, 4, 4, 2)).astype("float32")
    model = _model()
    assert bn_statistics.reestimate_batchnorm(model, images, batches=3, batch_size=8,
                                              seed=5) == 2
    # NumPy reference from the definition: the same batches, per-channel batch mean and
    # (biased) batch variance, averaged over the batches.
    pick = np.random.default_rng(5)
    batches = [images[np.sort(pick.choice(40, 8, replace=False))] for _ in range(3)]
    bn1 = model.get_layer("bn1")
    np.testing.assert_allclose(bn1.moving_mean.numpy(),
                               np.mean([b.mean(axis=(0, 1, 2)) for b in batches], 0),
                               rtol=1e-5)
    np.testing.assert_allclose(bn1.moving_variance.numpy(),
                               np.mean([b.var(axis=(0, 1, 2)) for b in batches], 0),
                               rtol=1e-4)
    assert bn1.moving_variance.numpy().max() < 0.02  # the initial 1.0 left no trace
    assert bn1.momentum == 0.99 and model.get_layer("bn2").momentum == 0.99  # restored


def test_degenerate_inputs():
    images = np.zeros((4, 4, 4, 2), "float32")
    plain = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Flatten()])
    assert bn_statistics.reestimate_batchnorm(plain, images, batches=2, batch_size=2) == 0
    with pytest.raises(ValueError, match="must be >= 1"):
        bn_statistics.reestimate_batchnorm(_model(), images, batches=0, batch_size=2)
    model = _model()  # a batch larger than the data: the whole set, once per batch
    bn_statistics.reestimate_batchnorm(model, images + 1.0, batches=2, batch_size=10)
    np.testing.assert_allclose(model.get_layer("bn1").moving_mean.numpy(), [1.0, 1.0])


def test_not_a_workdir_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bn_statistics.main([str(tmp_path), "--output", str(tmp_path / "r.json")])
    assert "not a finished trainer workdir" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_end_to_end_on_a_trained_workdir(tmp_path):
    from keras_fgvc.training import Trainer, resolve_config

    config = resolve_config("fashion_metric_softmax", [
        "max_train_examples=256", "max_eval_examples=64", "batch_size=32", "epochs=1",
        "steps_per_epoch=3", "eval_batch_size=64"])
    workdir = str(tmp_path / "run")
    Trainer(config, workdir=workdir, verbose=0).run()
    report = bn_statistics.main([workdir, "--quick", "--output", str(tmp_path / "r.json")])
    row = report["runs"][workdir]
    assert row["batchnorm_layers"] > 0 and report["batches"] == 5
    for key in ("as_trained", "reestimated"):
        assert row[key]["top1_accuracy"] >= 0 and all(math.isfinite(v)
                                                      for v in row[key].values())
    assert json.loads((tmp_path / "r.json").read_text())["runs"][workdir] == row
