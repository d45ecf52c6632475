"""Workdir files are written atomically: a failed write leaves the previous file intact."""

import json
import os

import pytest

from keras_fgvc.training import artifacts


def test_atomic_writes(tmp_path):
    path = tmp_path / "thresholds.json"
    artifacts.write_json(path, {"thresholds": [0.5]})
    assert json.loads(path.read_text()) == {"thresholds": [0.5]}
    assert oct(os.stat(path).st_mode & 0o044) == oct(0o044)  # readable by serving

    def crash(tmp):
        with open(tmp, "w") as f:
            f.write("{half")
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError, match="killed while writing"):
        artifacts.atomic_write(path, crash)
    assert json.loads(path.read_text()) == {"thresholds": [0.5]}  # old content kept
    assert sorted(os.listdir(tmp_path)) == ["thresholds.json"]  # no temporary left
    artifacts.write_labels(tmp_path / "labels.txt", ["background", "Dress"])
    assert (tmp_path / "labels.txt").read_text() == "background\nDress\n"
