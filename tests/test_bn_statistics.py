"""benchmarks/bn_statistics.py: BN moving statistics re-estimated from batch statistics."""

import importlib.util
import json
import math
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load():
    spec = importlib.util.spec_from_file_location(
        "_bn_statistics", os.path.join(REPO, "benchmarks", "bn_statistics.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bn_statistics = _load()


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
    assert row["batchnorm_layers"] == row["batchnorm_layers_reestimated"] > 0
    assert report["batches"] == 5 and row["trainer_bn_reestimate_batches"] == 100
    for key in ("as_trained", "reestimated"):
        assert row[key]["top1_accuracy"] >= 0 and all(math.isfinite(v)
                                                      for v in row[key].values())
    assert json.loads((tmp_path / "r.json").read_text())["runs"][workdir] == row
