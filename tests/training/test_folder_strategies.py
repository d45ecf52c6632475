"""The folder task trains unchanged under mirrored (2 CPU replicas) and two multi_worker workers,
reading its images by path or streaming them from TFRecords (task_kwargs.records)."""

import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.folder_images import make_folder, make_teacher
from tests.training.test_multi_worker import run_two_workers

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = ["epochs=1", "steps_per_epoch=3", "batch_size=8", "eval_batch_size=16", "image_size=32",
         "bn_reestimate_batches=1", "checkpoint_every_steps=2"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    make_folder(str(root), {"background": 24, "red_spot": 8, "blue_spot": 7})
    teacher = make_teacher(str(root.parent / "teacher.keras"), num_classes=4, size=24)
    return str(root), teacher


def _args(photos, tmp_path, records):
    data, teacher = photos
    sets = [*SMALL, f"data_dir={data}"]
    if records:  # background splitting, soft: the teacher's probabilities go in the records
        config = "folder_bg_split"
        sets += [f"task_kwargs.teacher_model={teacher}", "task_kwargs.teacher_mode=soft",
                 f"task_kwargs.records={tmp_path / 'records'}", "task_kwargs.records_shard_size=4"]
    else:
        config = "folder_bg_ft"
    return ["--config", config] + [a for s in sets for a in ("--set", s)]


def _env(tmp_path, **extra):
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                KERAS_FGVC_CACHE=str(tmp_path / "cache"), **extra)


def _check_outputs(workdir, tmp_path, records):
    metrics = json.loads(open(os.path.join(workdir, "metrics.json")).read())
    assert metrics["replicas"] == 2 and metrics["steps"] == 3
    rows = list(csv.DictReader(open(os.path.join(workdir, "predictions_test.csv"))))
    assert list(rows[0]) == ["path", "label", "blue_spot", "red_spot"]
    assert all(np.isfinite(float(r["red_spot"])) for r in rows)
    for r in rows:  # each row's label (read from the records when used) is its file's folder
        parts = r["path"].split(os.sep)
        assert r["label"] == ("background" if "background" in parts
                              else parts[parts.index("rare") + 1])
    if records:
        folders = sorted(os.listdir(tmp_path / "records"))
        assert [f.split("-")[0] for f in folders] == ["test", "train", "val"]
        train = [f for f in folders if f.startswith("train")][0]
        shards = os.listdir(tmp_path / "records" / train)
        assert len(shards) > 2 and all(s.endswith(".tfrecord") for s in shards)  # no .tmp left
    return rows


@pytest.mark.parametrize("records", [False, True], ids=["paths", "records"])
def test_mirrored_two_replicas(photos, tmp_path, records):
    workdir = str(tmp_path / "run")
    command = [sys.executable, os.path.join(REPO, "train", "fit.py"), "--strategy", "mirrored",
               "--workdir", workdir, *_args(photos, tmp_path, records)]
    proc = subprocess.run(command, cwd=REPO, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Strategy mirrored: 2 replica(s)." in proc.stdout
    _check_outputs(workdir, tmp_path, records)
    if records:
        assert "Records: writing" in proc.stdout


@pytest.mark.parametrize("records", [False, True], ids=["paths", "records"])
def test_multi_worker_two_local_workers(photos, tmp_path, records):
    workdir = str(tmp_path / "run")
    run_two_workers(["--workdir", workdir, *_args(photos, tmp_path, records)], tmp_path,
                    env=_env(tmp_path), timeout=600)
    _check_outputs(workdir, tmp_path, records)
    import keras_fgvc.models  # noqa: F401  (registers the model's layers)

    chief = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    other = keras.saving.load_model(os.path.join(workdir, ".scratch", "worker_1", "model.keras"))
    for a, b in zip(chief.weights, other.weights):  # the workers trained together
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
