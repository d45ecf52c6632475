"""Your own images, end to end through the three commands a new user types.

train/fit.py (folder_bg_split, a teacher made here) -> export/saved_model.py ->
serving/server.py + serving/client.py; the served scores equal the trainer's
``predictions_test.csv`` to 1e-5.
"""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_fgvc.serving.client import PredictionClient
from keras_fgvc.serving.launch import free_port, start_server
from tests.folder_images import make_folder, make_teacher

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOISE = ("cuInit", "absl::InitializeLog", "cudart_stub", "\x1b", "\r")


def _run(args, env, timeout=600):
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_folder_train_export_serve(tmp_path):
    data, workdir, models = tmp_path / "photos", tmp_path / "w", tmp_path / "models"
    made = make_folder(str(data), {"background": 30, "red_spot": 10, "blue_spot": 8})
    teacher = make_teacher(str(tmp_path / "teacher.keras"), num_classes=6, size=40)
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")}
    env["KERAS_FGVC_CACHE"] = str(tmp_path / "cache")
    train = ["train/fit.py", "--config", "folder_bg_split", "--set", f"data_dir={data}",
             "--set", f"task_kwargs.teacher_model={teacher}", "--workdir", str(workdir),
             "--set", "epochs=1", "--set", "steps_per_epoch=2", "--set",
             "bn_reestimate_batches=1", "--set", "image_size=32"]
    fit = _run(train, env)
    out = fit.stdout
    # The task summary comes first, the test table last; no CUDA noise, no bar redraws.
    assert out.index("skipped files: 1") < out.index("Epoch 1/1") < out.index("Test (")
    assert "red_spot" in out.split("Epoch 1/1")[0]
    for noise in NOISE:
        assert noise not in out and noise not in fit.stderr, noise
    assert (workdir / "skipped.txt").read_text().startswith(made["corrupt"] + "\t")
    assert (workdir / "pr_red_spot.png").stat().st_size > 1000
    rows = list(csv.DictReader(open(workdir / "predictions_test.csv")))
    assert list(rows[0]) == ["path", "label", "blue_spot", "red_spot"]
    assert {r["label"] for r in rows} == {"background", "blue_spot", "red_spot"}

    _run(["export/saved_model.py", "--workdir", str(workdir), "--model_base_path",
          str(models), "--model_name", "mine"], env)
    port = free_port()
    with start_server([f"--port={port}", "--model_name=mine",
                       f"--model_base_path={models / 'mine'}"],
                      log_path=str(tmp_path / "server.log"), env=env, cwd=REPO):
        with PredictionClient(f"127.0.0.1:{port}", timeout_s=30.0) as client:
            client.wait_until_available("mine", timeout_s=180)
            images = [open(r["path"], "rb").read() for r in rows]
            served = client.predict_image_bytes("mine", images)["scores"]
        expected = np.array([[float(r["blue_spot"]), float(r["red_spot"])] for r in rows])
        np.testing.assert_allclose(served, expected, atol=1e-5, rtol=0)
        query = _run(["serving/client.py", "--server", f"127.0.0.1:{port}", "--model", "mine",
                      *[r["path"] for r in rows[:3]]], env, timeout=120)
        assert all(r["path"] in query.stdout for r in rows[:3])

    # Run again: the pseudo-labels come from the cache, and the finished workdir resumes.
    again = _run(train, env)
    assert "read from" in again.stdout and "pseudo-labelling" not in again.stdout
