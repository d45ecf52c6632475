import json

import pytest

from keras_fgvc.training import resolve_config
from keras_fgvc.training.workdir import (
    RESUME_SAFE_FIELDS,
    check_resumable,
    config_differences,
    read_config,
)


@pytest.fixture
def config():
    return resolve_config("fashion_bg_ft")


def _write(workdir, config, **changes):
    values = {**json.loads(config.to_json()), **changes}
    (workdir / "config.json").write_text(json.dumps(values))


def test_read_config_fills_missing_fields_with_defaults(tmp_path, config):
    assert read_config(str(tmp_path)) is None
    values = json.loads(config.to_json())
    values.pop("bn_reestimate_data")  # a field added after this file was written
    (tmp_path / "config.json").write_text(json.dumps(values))
    read = read_config(str(tmp_path))
    assert read["bn_reestimate_data"] == "stage"
    assert read["learning_rate"] == config.learning_rate


def test_read_config_refuses_an_unreadable_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is unreadable .*new --workdir"):
        read_config(str(tmp_path))


def test_config_differences_skip_the_resume_safe_fields(tmp_path, config):
    assert config_differences(str(tmp_path), config) == []  # no config.json
    _write(tmp_path, config, learning_rate=0.5, eval_batch_size=7, seed=9)
    assert config_differences(str(tmp_path), config) == ["learning_rate", "seed"]
    assert config_differences(str(tmp_path), config, ignore=()) == [
        "eval_batch_size", "learning_rate", "seed"]
    assert "eval_batch_size" in RESUME_SAFE_FIELDS


def test_check_resumable_names_the_differing_fields(tmp_path, config):
    check_resumable(None, config)  # no workdir: nothing to check
    check_resumable(str(tmp_path), config, require_checkpoints=False)  # no config.json
    _write(tmp_path, config, eval_batch_size=7)
    check_resumable(str(tmp_path), config, require_checkpoints=False)  # resume-safe
    with pytest.raises(ValueError, match=r"holds a run of a different config "
                                         r"\(eval_batch_size: 7 -> "):
        check_resumable(str(tmp_path), config, ignore=(), require_checkpoints=False)
    seven = ("seed", "epochs", "batch_size", "learning_rate", "momentum", "label_smoothing",
             "weight_decay")
    _write(tmp_path, config, **{field: 12345 for field in seven})
    with pytest.raises(ValueError, match=r"and 1 more\); .*another --workdir"):
        check_resumable(str(tmp_path), config, require_checkpoints=False)


def test_check_resumable_looks_only_at_workdirs_with_checkpoints(tmp_path, config):
    _write(tmp_path, config, learning_rate=0.5)
    check_resumable(str(tmp_path), config)  # no checkpoint: a fresh run overwrites it
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "ckpt-3.index").write_text("")
    (checkpoints / "checkpoint").write_text('model_checkpoint_path: "ckpt-3"\n')
    with pytest.raises(ValueError, match=r"holds checkpoints of a different config "
                                         r"\(learning_rate: 0\.5 -> "):
        check_resumable(str(tmp_path), config)
