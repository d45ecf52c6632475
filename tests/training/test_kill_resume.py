"""kill -9 during training, then the same command again: it resumes and finishes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS_PER_EPOCH, EPOCHS = 12, 2


@pytest.mark.slow
def test_kill_9_then_rerun_resumes_from_the_last_checkpoint(tmp_path):
    workdir = tmp_path / "run"
    sets = ["max_train_examples=256", "max_eval_examples=32", "batch_size=16",
            f"epochs={EPOCHS}", f"steps_per_epoch={STEPS_PER_EPOCH}", "checkpoint_every_steps=4",
            "eval_batch_size=32", "bn_reestimate_batches=3"]
    command = [sys.executable, os.path.join(REPO, "train", "fit.py"), "--config",
               "fashion_metric_softmax", "--strategy", "one_device", "--workdir", str(workdir)]
    command += [a for s in sets for a in ("--set", s)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")

    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        index = workdir / "checkpoints" / "checkpoint"
        deadline = time.monotonic() + 300
        while not index.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    assert not (workdir / "metrics.json").exists()  # killed before it finished

    second = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO,
                            timeout=400)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-3000:]
    line = next(x for x in output.splitlines() if x.startswith("Resuming from step "))
    resumed = int(line.split()[3])
    assert 4 <= resumed < STEPS_PER_EPOCH * EPOCHS and resumed % 4 == 0
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == resumed
    assert metrics["steps"] == STEPS_PER_EPOCH * EPOCHS
    assert [h["epoch"] for h in metrics["history"]][-1] == EPOCHS
    assert (workdir / "model.keras").exists() and (workdir / "thresholds.json").exists()

    # The same workdir with a changed --set: a one-line error before any data is read, and
    # the finished run is left as it was.
    before = (workdir / "metrics.json").read_text()
    third = subprocess.run([*command, "--set", "learning_rate=0.5"], capture_output=True,
                           text=True, env=env, cwd=REPO, timeout=120)
    assert third.returncode != 0
    assert "holds checkpoints of a different config (learning_rate:" in third.stderr
    assert "Traceback" not in third.stderr
    assert (workdir / "metrics.json").read_text() == before
