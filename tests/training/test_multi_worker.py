"""multi_worker: two local worker processes from TF_CONFIG train together, end identical."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_fgvc.serving.launch import free_ports

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = ["max_train_examples=256", "max_eval_examples=64", "batch_size=32", "epochs=2",
         "steps_per_epoch=3", "eval_batch_size=64", "checkpoint_every_steps=2",
         "bn_reestimate_batches=3"]


def run_two_workers(args, tmp_path, env=None, timeout=400):
    """Run ``train/fit.py --strategy multi_worker *args`` as two local workers (TF_CONFIG).

    Returns the two workers' logs; fails the test (with the log's tail) if either exits
    non-zero, and kills both if one hangs past `timeout`.
    """
    workers = [f"localhost:{p}" for p in free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        worker_env = dict(env or os.environ, TF_CONFIG=json.dumps(tf_config),
                          TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        command = [sys.executable, os.path.join(REPO, "train", "fit.py"),
                   "--strategy", "multi_worker", *args]
        log = open(tmp_path / f"worker{index}.log", "w")
        procs.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                       env=worker_env, cwd=REPO), log))
    try:
        for proc, _ in procs:
            proc.wait(timeout=timeout)
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
            log.close()
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    for (proc, _), text in zip(procs, logs):
        assert proc.returncode == 0, text[-3000:]
    return logs


@pytest.mark.slow
def test_two_workers_train_for_real_and_end_with_identical_weights(tmp_path):
    workdir = str(tmp_path / "run")
    logs = run_two_workers(["--config", "fashion_metric_softmax", "--workdir", workdir]
                           + [a for s in SMALL for a in ("--set", s)], tmp_path)

    metrics = json.loads(open(os.path.join(workdir, "metrics.json")).read())
    assert metrics["replicas"] == 2 and metrics["steps"] == 6
    assert "Finished fashion_metric_softmax at step 6" in logs[0]
    import keras_fgvc.models  # noqa: F401  (registers the model's layers)

    chief = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    other = keras.saving.load_model(os.path.join(workdir, ".scratch", "worker_1", "model.keras"))
    initial = keras_fgvc.models.create_model("small_cnn", num_classes=10,
                                            input_shape=(28, 28, 1))
    moved = False
    for a, b, c in zip(chief.weights, other.weights, initial.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        moved |= not np.allclose(np.asarray(a), np.asarray(c))
    assert moved  # it trained
    # Only the chief writes the workdir; the other worker's checkpoints were scratch.
    assert os.listdir(os.path.join(workdir, "checkpoints"))
    assert not os.path.exists(os.path.join(workdir, ".scratch", "worker_1", "checkpoints"))
