"""`keras_fgvc.files`: the one atomic-write helper, and nobody writes files another way."""

import json
import math
import os
import re

import numpy as np
import pytest

from keras_fgvc import files

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "keras_fgvc")
# Folders moved in whole (a checkpoint, an export version, a grown data set), a multi-shard
# writer that renames its shards together, and the soak test's deliberate version swap.
DIRECTORY_RENAMES = {"training/checkpointing.py", "export/versions.py", "bootstrap/export.py",
                     "data/tfrecords.py", "serving/soak.py"}


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.json"
    files.write_json(path, {"a": np.float32(0.5), "b": np.arange(2)})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1]}
    assert os.stat(path).st_mode & 0o044 == 0o044  # readable by a server running as another user

    def crash(tmp):
        with open(tmp, "w") as f:
            f.write("{half")
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError, match="killed while writing"):
        files.atomic_write(path, crash)
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1]}
    assert sorted(os.listdir(tmp_path)) == ["out.json"]


def test_suffix_reaches_the_writer_and_json_options(tmp_path):
    seen = []
    files.atomic_write(tmp_path / "x.npz", lambda tmp: (seen.append(tmp),
                                                        np.savez(tmp, a=np.ones(2))), ".npz")
    assert seen[0].endswith(".npz") and np.load(tmp_path / "x.npz")["a"].tolist() == [1, 1]
    with pytest.raises(ValueError):
        files.write_json(tmp_path / "n.json", {"x": math.nan}, allow_nan=False)
    assert not (tmp_path / "n.json").exists()
    files.write_json(tmp_path / "o.json", {"b": 1, "a": 2}, sort_keys=False)
    assert list(json.loads((tmp_path / "o.json").read_text())) == ["b", "a"]


def test_no_module_renames_files_by_itself():
    offenders = []
    for root, _, names in os.walk(PACKAGE):
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, PACKAGE)
            if not name.endswith(".py") or rel in DIRECTORY_RENAMES or rel == "files.py":
                continue
            with open(path) as f:
                if re.search(r"os\.(replace|rename)\(", f.read()):
                    offenders.append(rel)
    assert offenders == []
